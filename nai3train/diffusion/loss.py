"""The training loss next to the preconditioning (k-diffusion's ``Denoiser.loss`` is the model).

One call draws σ and ε, noises x0, runs F through the shared denoiser and returns the per-sample
MSE of F against the parameterisation's target together with the per-sample loss weight
(Min-SNR-γ or none). The training loop only multiplies its own extra weights (tag weights) in
and averages; the σ sampler and the weighting are injected, so a schedule or weighting study
swaps one argument instead of editing the loop.

Bit-identity with the historical trainer matters (a resumed run must continue the same
stream): the random draws happen in the same order, from the same generator — σ indices
(``randint`` over the table), then ε (``randn`` of x0's shape, on CPU) — and the arithmetic
(noise on the device, MSE over the non-batch dims, moved to CPU) is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .parameterization import Denoiser, noise_sample

SigmaSampler = Callable[[int, torch.Generator], torch.Tensor]
Weighting = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class TableSigmaSampler:
    """σ drawn uniformly over the schedule's table indices (1000 entries; may end in +∞).

    Uniform over *indices*, not over σ: that is how SDXL was trained and what the paper changes
    only at the top end (ZTSNR puts +∞ in the last slot).
    """

    sigmas: torch.Tensor  # float64, model units

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, len(self.sigmas), (n,), generator=generator)
        return self.sigmas[t]


@dataclass(frozen=True)
class LossOutput:
    """One micro-batch's loss terms, per sample, on CPU.

    ``per_sample_mse`` keeps the autograd graph (backpropagate through ``loss()``);
    ``weight`` has its dtype; ``sigma`` is float64 in model units (for per-σ logging).
    """

    per_sample_mse: torch.Tensor
    weight: torch.Tensor
    sigma: torch.Tensor

    def loss(self, extra_weight: torch.Tensor | None = None) -> torch.Tensor:
        """mean(weight · extra_weight · MSE): the scalar to backpropagate (extra: tag weights)."""
        weight = self.weight if extra_weight is None else self.weight * extra_weight
        return (weight * self.per_sample_mse).mean()


class DiffusionLoss:
    """``loss(x0, cond, generator) -> LossOutput``: σ ~ sampler, ε ~ N(0, I), MSE(F, target)·weight.

    ``weighting`` maps per-sample σ (CPU, float64) to weights, e.g.
    ``MinSNRWeighting(gamma).bind(denoiser.param)``; ``None`` weights every sample 1.
    ``sigma_sampler(n, generator)`` defaults to uniform over ``denoiser.schedule.sigmas``.
    ``device`` is where the network runs (default: x0's device); noise is drawn on CPU either way,
    so the stream does not depend on the device.
    """

    def __init__(self, denoiser: Denoiser, weighting: Weighting | None = None,
                 sigma_sampler: SigmaSampler | None = None, device: torch.device | str | None = None):
        self.denoiser = denoiser
        self.weighting = weighting
        self.sigma_sampler = sigma_sampler if sigma_sampler is not None else TableSigmaSampler(denoiser.schedule.sigmas)
        self.device = torch.device(device) if device is not None else None

    def __call__(self, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> LossOutput:
        n = x0.shape[0]
        sigma = self.sigma_sampler(n, generator)
        eps = torch.randn(x0.shape, generator=generator)
        device = self.device if self.device is not None else x0.device
        x0, eps = x0.to(device), eps.to(device)  # fp32: σ up to 20000 overflows fp16
        sigma_dev = sigma.to(device)
        x = noise_sample(x0, eps, sigma_dev)
        cond = {k: v.to(device) if torch.is_tensor(v) else v for k, v in cond.items()}
        f = self.denoiser.raw(x, sigma_dev, cond)
        target = self.denoiser.param.target(x0, eps, sigma_dev)
        per_sample = (f - target).pow(2).flatten(1).mean(1).cpu()
        weight = self.weighting(sigma) if self.weighting is not None else torch.ones(n, dtype=torch.float64)
        return LossOutput(per_sample_mse=per_sample, weight=weight.to(per_sample.dtype), sigma=sigma)
