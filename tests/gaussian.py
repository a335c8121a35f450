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

from nai3train.diffusion import Schedule
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

    def ideal_x0(self, x_sigma: torch.Tensor, sigma) -> torch.Tensor:
        """E[x0 | x_σ] for a batch (N, D); σ a float or per-sample (N,), +∞ allowed."""
        flat = x_sigma.flatten(1).double()
        s2 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1) ** 2
        mean_c = flat.mean(1, keepdim=True)
        along = (mean_c - self.mu) * (self.v_a / (self.v_a + s2)) + self.mu
        perp = (flat - mean_c) * (self.s_r**2 / (self.s_r**2 + s2))
        out = torch.where(torch.isinf(s2), torch.full_like(flat, self.mu), along + perp)
        return out.reshape(x_sigma.shape)

    def ideal_network(self, prediction: str, schedule: Schedule):
        """F(c_in·x, c_noise) that makes D equal the ideal denoiser exactly (σ read back from t)."""

        def net(x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
            sigma = schedule.t_to_sigma(c_noise.double()).reshape(-1)
            col = sigma.reshape(-1, 1)
            x = x_in.double() / c_in(col)  # the stored state: x_σ, or ε where σ = ∞
            ex0 = self.ideal_x0(x, sigma)
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
