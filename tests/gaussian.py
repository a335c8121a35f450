"""Closed-form Gaussian "images" for testing the diffusion math without training.

x0 = m·1 + r with m ~ N(μ, s_m²) shared by all D pixels and r ~ N(0, s_r² I). Along the
mean direction u = 1/√D the coordinate a = u·x0 ~ N(√D·μ, v_a), v_a = D·s_m² + s_r²; orthogonal
to it every coordinate is N(0, s_r²). The ideal denoiser E[x0 | x_σ] is therefore linear:
    E = μ·1 + v_a/(v_a+σ²)·P_u(x_σ − μ·1) + s_r²/(s_r²+σ²)·P_⊥(x_σ)
and E → μ·1 as σ → ∞.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nai3train.diffusion import Schedule
from nai3train.models.bundle import ModelBundle
from nai3train.diffusion.parameterization import c_in, c_out, c_skip


@dataclass
class GaussianImages:
    dim: int
    mu: float
    s_m: float
    s_r: float

    @property
    def v_a(self) -> float:
        return self.dim * self.s_m**2 + self.s_r**2

    def ideal_x0(self, x_sigma: torch.Tensor, sigma, mu: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_σ] for a batch (N, D); σ a float or per-sample (N,), +∞ allowed; ``mu`` per
        sample (N,) replaces the class mean μ (a prompt-conditional model)."""
        flat = x_sigma.flatten(1).double()
        mu = torch.tensor(self.mu, dtype=torch.float64) if mu is None else mu.double().reshape(-1, 1)
        s2 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1) ** 2
        mean_c = flat.mean(1, keepdim=True)
        along = (mean_c - mu) * (self.v_a / (self.v_a + s2)) + mu
        perp = (flat - mean_c) * (self.s_r**2 / (self.s_r**2 + s2))
        out = torch.where(torch.isinf(s2), torch.zeros_like(flat) + mu, along + perp)
        return out.reshape(x_sigma.shape)

    def ideal_network(self, prediction: str, schedule: Schedule):
        """F(c_in·x, c_noise) that makes D equal the ideal denoiser exactly (σ read back from t)."""

        def net(x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
            sigma = schedule.t_to_sigma(c_noise.double()).reshape(-1)
            col = sigma.reshape(-1, 1)
            x = x_in.double() / c_in(col)  # the stored state: x_σ, or ε where σ = ∞
            ex0 = self.ideal_x0(x, sigma, cond.get("mu"))
            inf = torch.isinf(col)
            if prediction == "eps":
                f = torch.where(inf, x, (x - ex0) / torch.where(inf, torch.ones_like(col), col))
            else:
                skip = torch.where(inf, torch.zeros_like(col), c_skip(prediction, col))
                f = (ex0 - skip * torch.where(inf, torch.zeros_like(x), x)) / c_out(prediction, col)
            return f.to(x_in.dtype)

        return net

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        m = self.mu + self.s_m * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        return m + self.s_r * torch.randn(n, self.dim, generator=gen, dtype=torch.float64)


class GaussianNetwork(nn.Module):
    """``ideal_network`` as a module over image-shaped samples (it works on flattened rows)."""

    def __init__(self, images: GaussianImages, prediction: str, schedule: Schedule):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the bundle a device
        self.net = images.ideal_network(prediction, schedule)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.net(x_in.flatten(1), c_noise, cond).reshape(x_in.shape)


class GaussianBundle(ModelBundle):
    """A model bundle whose network is the exact posterior mean of prompt-conditional Gaussian
    "images": a prompt with ``black_background`` has mean ``-mu``, ``white_background`` ``+mu``,
    anything else (and the empty prompt) 0. Every sweep value then has a closed form."""

    kind = "gaussian"

    def __init__(self, mu: float, s_m: float, s_r: float, side: int, prediction: str, schedule: Schedule):
        super().__init__(None)
        self.mu, self.side = mu, side
        self.images = GaussianImages(dim=3 * side * side, mu=0.0, s_m=s_m, s_r=s_r)
        self.network = GaussianNetwork(self.images, prediction, schedule)
        self._args = {"mu": mu, "s_m": s_m, "s_r": s_r, "side": side}

    @property
    def config(self) -> dict:
        return dict(self._args)

    @property
    def native_size(self) -> tuple[int, int]:
        return self.side, self.side

    def sample_shape(self, height: int, width: int) -> tuple[int, ...]:
        return 3, height, width

    def prompt_mean(self, prompt: str) -> float:
        return -self.mu if "black_background" in prompt else self.mu if "white_background" in prompt else 0.0

    def encode(self, prompts, sizes) -> dict:
        return {"mu": torch.tensor([self.prompt_mean(p) for p in prompts], dtype=torch.float64)}

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x
