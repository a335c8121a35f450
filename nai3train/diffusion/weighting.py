"""Min-SNR-γ loss weights (Hang et al. 2023), computed from the σ actually trained on (after ZTSNR).

With SNR = σ_d²/σ², the standard weights for an MSE on each target are
    x0: min(SNR, γ)        ε: min(SNR, γ)/SNR        v: min(SNR, γ)/(SNR + 1)
Written so they stay finite on [0, ∞]:
    ε: min(1, γ/SNR) = min(1, γ·σ²/σ_d²)  → 1 at σ = ∞ (the limit, not 0/0 = NaN);
    v: the formula gives exactly 0 at SNR = 0, so the pure-noise step would learn nothing.
       **Our choice:** at σ = ∞ the v target is −x0/σ_d, so the v loss *is* an x0 regression
       onto the prompt's mean image. We give that step ``v_weight_at_infinity`` (default 1.0: an
       unweighted x0 regression, the same weight ε gets at SNR = 0). Finite σ keep the formula.
    x0: min(SNR, γ) → 0 at σ = ∞ (x0 models are not a product variant; documented only).

Each formula lives in its parameterisation class (``Parameterization.min_snr_weight`` in
``parameterization.py``); this module keeps the name-based entry points.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .parameterization import Parameterization, parameterization


@dataclass(frozen=True)
class MinSNRWeighting:
    """Min-SNR-γ settings; called with a prediction (name or object) and σ, returns per-sample weights."""

    gamma: float | None = 5.0  # None: no Min-SNR, all weights 1
    v_weight_at_infinity: float = 1.0
    sigma_data: float = 1.0

    def __call__(self, prediction: str | Parameterization, sigma: torch.Tensor) -> torch.Tensor:
        param = parameterization(prediction, self.sigma_data)
        return param.min_snr_weight(sigma, self.gamma, self.v_weight_at_infinity)

    def bind(self, prediction: str | Parameterization) -> Callable[[torch.Tensor], torch.Tensor]:
        """σ ↦ weights for one parameterisation: the ``weighting`` a ``DiffusionLoss`` takes.

        A ``Parameterization`` object keeps its own σ_d (pass ``denoiser.param`` so loss and weight agree).
        """
        return partial(self, parameterization(prediction, self.sigma_data))


def min_snr_weight(prediction: str | Parameterization, sigma: torch.Tensor, gamma: float | None,
                   v_weight_at_infinity: float = 1.0, sigma_data: float = 1.0) -> torch.Tensor:
    """Per-sample loss weight; ``gamma=None`` means no Min-SNR (all ones)."""
    return parameterization(prediction, sigma_data).min_snr_weight(sigma, gamma, v_weight_at_infinity)
