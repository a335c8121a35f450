"""The training loss next to the preconditioning (k-diffusion's ``Denoiser.loss`` is the model).

One call draws σ and ε, noises x0, runs F through the shared denoiser and returns the per-sample
MSE of F against the parameterisation's target together with the per-sample loss weight
(Min-SNR-γ or none). The training loop only multiplies its own extra weights (tag weights) in
and averages; the σ sampler and the weighting are injected, so a schedule or weighting study
swaps one argument instead of editing the loop.

Bit-identity with the historical trainer matters (a resumed run must continue the same
stream): the random draws happen in the same order, from the same generator — σ indices
(``randint`` over the table), then ε (``randn`` of x0's shape) — and the arithmetic (noise on the
device, MSE over the non-batch dims) is unchanged. ``draw`` and ``compute`` split the call so the
trainer's data feed (``nai3train/training/feed.py``) can make the draws ahead of the step, and the
step itself never reads a device value back: the per-sample terms stay where the model runs.
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
    """One micro-batch's loss terms, per sample, on the model's device.

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
    ``device`` is where the network runs (default: x0's device). ``__call__`` draws σ and ε from the
    (CPU) generator, as the trainer always did; the trainer draws ε on the GPU itself when it has
    one (``compute``'s ``eps=None`` with a device generator).
    """

    def __init__(self, denoiser: Denoiser, weighting: Weighting | None = None,
                 sigma_sampler: SigmaSampler | None = None, device: torch.device | str | None = None):
        self.denoiser = denoiser
        self.weighting = weighting
        self.sigma_sampler = sigma_sampler if sigma_sampler is not None else TableSigmaSampler(denoiser.schedule.sigmas)
        self.device = torch.device(device) if device is not None else None

    def __call__(self, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> LossOutput:
        sigma, eps = self.draw(x0.shape, generator)
        return self.compute(x0, cond, sigma, eps)

    def draw(self, shape: torch.Size, generator: torch.Generator, noise: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """σ (float64, model units) then ε of ``shape`` from ``generator``, in that order (ε skipped
        with ``noise=False``: drawn on the device by ``compute``)."""
        sigma = self.sigma_sampler(shape[0], generator)
        return sigma, torch.randn(shape, generator=generator) if noise else None

    def compute(self, x0: torch.Tensor, cond: dict, sigma: torch.Tensor, eps: torch.Tensor | None,
                noise_generator: torch.Generator | None = None) -> LossOutput:
        """The loss terms for drawn σ and ε (``eps=None``: drawn here, on the device, from
        ``noise_generator``); nothing is read back to the host."""
        device = self.device if self.device is not None else x0.device
        x0 = x0.to(device, non_blocking=True)  # fp32: σ up to 20000 overflows fp16
        if eps is None:
            eps = torch.randn(x0.shape, generator=noise_generator, device=device)
        eps = eps.to(device, non_blocking=True)
        sigma = sigma.to(device, non_blocking=True)
        x = noise_sample(x0, eps, sigma)
        cond = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in cond.items()}
        f = self.denoiser.raw(x, sigma, cond)
        target = self.denoiser.param.target(x0, eps, sigma)
        per_sample = (f - target).pow(2).flatten(1).mean(1)
        weight = self.weighting(sigma) if self.weighting is not None else torch.ones_like(sigma)
        return LossOutput(per_sample_mse=per_sample, weight=weight.to(per_sample.dtype), sigma=sigma)
