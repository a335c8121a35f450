"""ε / v / x0 parameterisations as EDM preconditioning, and the denoiser D(x, σ, cond) → x̂0.

Written as in paper.md §1 (σ form, x_σ = x0 + σ·ε):

    D(x_σ, σ) = c_skip(σ)·x_σ + c_out(σ)·F(c_in(σ)·x_σ, c_noise(σ))

    v:   c_skip = σ_d²/(σ²+σ_d²)   c_out = −σ·σ_d/√(σ²+σ_d²)   c_in = 1/√(σ²+σ_d²)
    ε:   c_skip = 1                c_out = −σ                  c_in = 1/√(σ²+σ_d²)
    x0:  c_skip = 0                c_out = 1                   c_in = 1/√(σ²+σ_d²)
    c_noise = t(σ), the (continuous) SDXL timestep, so an SDXL UNet sees the inputs it was built for.

**σ = +∞.** x_σ itself is infinite there, so wherever σ = +∞ the state tensor carries the limit
of x_σ/σ, i.e. the unit noise ε (``noise_sample`` builds it that way, and samplers start from it).
With that convention the limits are exact: c_in·x_σ → ε, c_skip·x_σ → 0, and
D = −σ_d·F (v), D = F (x0), D = σ·(ε − F) (ε: ±∞/NaN, the failure the paper predicts; returned
as the arithmetic gives it, never raised).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .schedules import Schedule

PREDICTIONS = ("eps", "v", "x0")


class Network(Protocol):
    """F: the raw network. ``cond`` is whatever the model needs (tag ids, text embeddings…)."""

    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor: ...


def _b(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample σ of shape [B] against an image batch [B, C, H, W]."""
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noise_sample(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = x0 + σ·ε, and ε itself where σ = +∞ (the module's convention for the infinite state)."""
    s = _b(sigma, x0)
    inf = torch.isinf(s)
    return torch.where(inf, eps, x0 + torch.where(inf, torch.zeros_like(s), s) * eps)


def c_in(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """1/√(σ²+σ_d²); 1 at σ = ∞, because there the state already holds x_σ/σ."""
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), (sigma**2 + sigma_data**2).rsqrt())


def c_skip(prediction: str, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """c_skip as applied to the stored state (0 at σ = ∞ for v and x0, where c_skip·x_σ → 0)."""
    if prediction == "v":
        return torch.where(torch.isinf(sigma), torch.zeros_like(sigma), sigma_data**2 / (sigma**2 + sigma_data**2))
    if prediction == "eps":
        return torch.where(torch.isinf(sigma), sigma, torch.ones_like(sigma))  # σ·(stored ε) = x_σ
    if prediction == "x0":
        return torch.zeros_like(sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def c_out(prediction: str, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    if prediction == "v":
        finite = -sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
        return torch.where(torch.isinf(sigma), torch.full_like(sigma, -sigma_data), finite)
    if prediction == "eps":
        return -sigma
    if prediction == "x0":
        return torch.ones_like(sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def training_target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor,
                    sigma_data: float = 1.0) -> torch.Tensor:
    """What F should output: (x0 − c_skip·x_σ)/c_out, in closed form.

    v = (σ_d²·ε − σ·x0)/(σ_d·√(σ²+σ_d²)), equal to diffusers' √ᾱ·ε − √(1−ᾱ)·x0 for σ_d = 1;
    its σ = ∞ limit is −x0/σ_d. ε's target is ε; x0's is x0.
    """
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        s = _b(sigma, x0)
        inf = torch.isinf(s)
        s_fin = torch.where(inf, torch.zeros_like(s), s)
        v = (sigma_data**2 * eps - s_fin * x0) / (sigma_data * (s_fin**2 + sigma_data**2).sqrt())
        return torch.where(inf, -x0 / sigma_data, v)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


@dataclass
class Denoiser:
    """D(x, σ, cond) → x̂0, the one interface training and every sampler share.

    ``sigma`` is in model units, one value per sample (or a scalar, broadcast).
    """

    network: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]
    prediction: str
    schedule: Schedule
    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous SDXL timestep t(σ) in float64; the network casts it to its own dtype."""
        return self.schedule.sigma_to_t(sigma)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        """F(c_in·x, c_noise): the network's output, used for the training loss."""
        sigma = self._per_sample(sigma, x)
        x_in = x * _b(c_in(sigma, self.sigma_data), x)
        return self.network(x_in, self.c_noise(sigma), cond)

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """x̂0 = c_skip·x + c_out·F, with the exact σ = ∞ limits of the module docstring."""
        sigma = self._per_sample(sigma, x)
        skip = _b(c_skip(self.prediction, sigma, self.sigma_data), x)
        out = _b(c_out(self.prediction, sigma, self.sigma_data), x)
        if self.prediction == "eps":
            # x − σ·F in finite rows; σ·(ε − F) at ∞ (±∞ or NaN: the predicted failure).
            inf = torch.isinf(_b(sigma, x))
            return torch.where(inf, skip * (x - f), x + out * f)
        return skip * x + out * f

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict) -> torch.Tensor:
        sigma = self._per_sample(sigma, x)
        return self.combine(x, sigma, self.raw(x, sigma, cond))

    @staticmethod
    def _per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        return sigma


def snr(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """Signal-to-noise ratio σ_d²/σ² (0 at σ = ∞)."""
    return sigma_data**2 / sigma**2

