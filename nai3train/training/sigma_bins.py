"""Training loss per σ bin: where in the noise range a variant learns (ZTSNR's σ = ∞ step alone)."""
from __future__ import annotations

import math

import torch

# Loss-per-σ bins in SDXL units (upper edges); σ = +∞ gets its own label, "inf".
SIGMA_BINS = ((0.1, "lt0.1"), (1.0, "0.1-1"), (10.0, "1-10"), (100.0, "10-100"), (1000.0, "100-1000"),
              (math.inf, "gt1000"))


def sigma_bin_labels(sigma_sdxl: torch.Tensor) -> list[str]:
    """The bin label of each σ (SDXL units, so bins mean the same at every image size)."""
    out = []
    for s in sigma_sdxl.tolist():
        if math.isinf(s):
            out.append("inf")
            continue
        out.append(next(label for edge, label in SIGMA_BINS if s < edge))
    return out


class SigmaBinLoss:
    """Streaming mean of per-sample losses per σ bin (torchmetrics-style add/means/reset).

    Sums are accumulated as Python floats in arrival order, so the logged means are the same
    numbers the trainer always logged. Only bins that received samples appear in ``means()``.
    """

    def __init__(self) -> None:
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def add(self, sigma_sdxl: torch.Tensor, per_sample: torch.Tensor) -> None:
        for label, loss in zip(sigma_bin_labels(sigma_sdxl), per_sample.detach().tolist()):
            self._sum[label] = self._sum.get(label, 0.0) + loss
            self._count[label] = self._count.get(label, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self._sum[k] / self._count[k] for k in self._sum}

    def reset(self) -> None:
        self._sum.clear()
        self._count.clear()
