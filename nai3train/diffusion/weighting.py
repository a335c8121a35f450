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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MinSNRWeighting:
    gamma: float = 5.0
    v_weight_at_infinity: float = 1.0
    sigma_data: float = 1.0

    def __call__(self, prediction: str, sigma: torch.Tensor) -> torch.Tensor:
        return min_snr_weight(prediction, sigma, self.gamma, self.v_weight_at_infinity, self.sigma_data)


def min_snr_weight(prediction: str, sigma: torch.Tensor, gamma: float | None,
                   v_weight_at_infinity: float = 1.0, sigma_data: float = 1.0) -> torch.Tensor:
    """Per-sample loss weight; ``gamma=None`` means no Min-SNR (all ones)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if gamma is None:
        return torch.ones_like(sigma)
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")
    inf = torch.isinf(sigma)
    s_fin = torch.where(inf, torch.ones_like(sigma), sigma)
    snr = torch.where(inf, torch.zeros_like(sigma), sigma_data**2 / s_fin**2)  # σ = 0 gives +∞ SNR
    if prediction == "eps":
        return torch.clamp(gamma * sigma**2 / sigma_data**2, max=1.0)
    if prediction == "v":
        w = torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)
        w = torch.where(torch.isinf(snr), torch.zeros_like(w), w)  # σ = 0: min(∞,γ)/∞ → 0
        return torch.where(inf, torch.full_like(w, v_weight_at_infinity), w)
    if prediction == "x0":
        return torch.minimum(snr, torch.full_like(snr, gamma))
    raise ValueError(f"unknown prediction {prediction!r}")
