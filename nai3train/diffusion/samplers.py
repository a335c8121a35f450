"""Samplers as short loops that only call the denoiser D(x, σ, cond) → x̂0 (k-diffusion style).

σ lists come from :mod:`nai3train.diffusion.schedules` (model units, ending in 0). A first σ of
+∞ follows the state convention of :mod:`nai3train.diffusion.parameterization`: the state then
holds the unit noise ε, and the first step is its exact limit, x_next = D(ε, ∞) + σ_next·ε
(Euler and DPM++ 2M), or D + σ_next·fresh noise (Euler ancestral, η = 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

DenoiseFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class GuidedDenoiser:
    """Classifier-free guidance: D_u + s·(D_c − D_u), cond and uncond in ONE batched forward.

    ``rescale`` (φ, Lin et al. 2023 §3.4) pulls the guided x̂0's per-sample std back towards the
    conditional one: x = φ·x·std(D_c)/std(x) + (1 − φ)·x.
    """

    denoiser: Callable[[torch.Tensor, torch.Tensor | float, dict], torch.Tensor]
    cond: dict
    uncond: dict
    scale: float = 5.0
    rescale: float = 0.0

    def __post_init__(self) -> None:
        self._both = {k: torch.cat([self.cond[k], self.uncond[k]]) for k in self.cond}

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.scale == 1.0 and self.rescale == 0.0:
            return self.denoiser(x, sigma, self.cond)
        d_c, d_u = self.denoiser(torch.cat([x, x]), sigma, self._both).chunk(2)
        guided = d_u + self.scale * (d_c - d_u)
        if self.rescale > 0:
            dims = tuple(range(1, x.ndim))
            ratio = d_c.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
            guided = self.rescale * guided * ratio + (1 - self.rescale) * guided
        return guided


def _first_step_from_infinity(denoised: torch.Tensor, eps: torch.Tensor, sigma_next: float) -> torch.Tensor:
    return denoised + sigma_next * eps if sigma_next > 0 else denoised


@torch.no_grad()
def sample_euler(model: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, generator=None,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Euler on the probability-flow ODE dx/dσ = (x − D)/σ."""
    sig = [float(s) for s in sigmas]
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = model(x, s)
        if math.isinf(s):
            x = _first_step_from_infinity(denoised, x, s_next)
        else:
            x = x + (x - denoised) / s * (s_next - s)
        if callback:
            callback(i)
    return x


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step; at σ = ∞ the limit is (σ_next·√(1−η²), σ_next·η)."""
    if sigma_next == 0:
        return 0.0, 0.0
    if math.isinf(sigma):
        up = sigma_next * eta
    else:
        up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


@torch.no_grad()
def sample_euler_ancestral(model: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, generator=None,
                           callback: Callable[[int], None] | None = None, eta: float = 1.0) -> torch.Tensor:
    """Euler ancestral (η = 1): deterministic step to σ_down, then fresh noise of std σ_up."""
    sig = [float(s) for s in sigmas]
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = model(x, s)
        down, up = ancestral_step(s, s_next, eta)
        if math.isinf(s):
            x = denoised + down * x
        else:
            x = x + (x - denoised) / s * (down - s)
        if up > 0:
            x = x + up * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if callback:
            callback(i)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, generator=None,
                    callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) in σ form, as in k-diffusion; first-order after a step
    from ∞ (the previous step length is infinite, so the multistep correction vanishes)."""
    sig = [float(s) for s in sigmas]
    old_denoised, h_last = None, None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = model(x, s)
        if math.isinf(s):
            x = _first_step_from_infinity(denoised, x, s_next)
            old_denoised, h_last = denoised, math.inf
        elif s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            if old_denoised is None or math.isinf(h_last):
                d = denoised
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s) * x - math.expm1(-h) * d
            old_denoised, h_last = denoised, h
        if callback:
            callback(i)
    return x


SAMPLERS = {"euler": sample_euler, "euler_a": sample_euler_ancestral, "dpmpp_2m": sample_dpmpp_2m}


def get_sampler(name: str):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None


def initial_state(noise: torch.Tensor, first_sigma_model: float) -> torch.Tensor:
    """x_T from unit noise ε: σ·ε, or ε itself at σ = ∞ (the infinite-state convention)."""
    return noise.clone() if math.isinf(first_sigma_model) else noise * first_sigma_model
