"""Per-channel normalisation to standard Gaussians (docs/data.md, "Normalisation").

Statistics stream over a dataset (sum and sum of squares in float64), so they never need the
whole set in memory; ``apply`` maps channels to mean 0 / std 1 and ``invert`` maps model outputs
back. ``SDXL_LATENT`` is the paper's published preset for raw (unscaled) SDXL VAE latents.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class ChannelStats:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(shape)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(shape)
        return m, s

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, …) → per channel (x − mean)/std."""
        m, s = self._shape(x)
        return (x - m) / s

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        m, s = self._shape(x)
        return x * s + m

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


SDXL_LATENT = ChannelStats((4.8119, 0.1607, 1.3538, -1.7753), (9.9181, 6.2753, 7.5978, 5.9956))


class RunningChannelStats:
    """Streaming per-channel mean and std over batches (N, C, …) of any spatial size."""

    def __init__(self) -> None:
        self.n = 0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
        if self.s1 is None:
            self.s1, self.s2 = torch.zeros(x.shape[0], dtype=torch.float64), torch.zeros(x.shape[0], dtype=torch.float64)
        self.s1 += x.sum(1)
        self.s2 += (x * x).sum(1)
        self.n += x.shape[1]

    def compute(self) -> ChannelStats:
        if self.s1 is None or self.n < 2:
            raise ValueError("need at least two values per channel to compute statistics")
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean**2).clamp_min(0) * self.n / (self.n - 1)
        return ChannelStats(tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-8).tolist()))


def channel_stats(batches: Iterable[torch.Tensor]) -> ChannelStats:
    acc = RunningChannelStats()
    for b in batches:
        acc.update(b)
    return acc.compute()
