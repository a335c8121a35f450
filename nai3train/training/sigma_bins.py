"""Training loss per σ bin: where in the noise range a variant learns (ZTSNR's σ = ∞ step alone)."""
from __future__ import annotations

import math

import torch

# Loss-per-σ bins in SDXL units (upper edges); σ = +∞ gets its own label, "inf".
SIGMA_BINS = ((0.1, "lt0.1"), (1.0, "0.1-1"), (10.0, "1-10"), (100.0, "10-100"), (1000.0, "100-1000"),
              (math.inf, "gt1000"))
EDGES = torch.tensor([edge for edge, _ in SIGMA_BINS[:-1]], dtype=torch.float64)
LABELS = tuple(label for _, label in SIGMA_BINS) + ("inf",)  # bin_index → label; ∞ last


def bin_index(sigma_sdxl: torch.Tensor, edges: torch.Tensor = EDGES) -> torch.Tensor:
    """Each σ's bin as an index into ``LABELS`` (``edges`` on σ's device), computed where σ is."""
    sigma = sigma_sdxl.to(torch.float64)
    return torch.where(torch.isinf(sigma), len(LABELS) - 1, torch.bucketize(sigma, edges, right=True))


def sigma_bin_labels(sigma_sdxl: torch.Tensor) -> list[str]:
    """The bin label of each σ (SDXL units, so bins mean the same at every image size)."""
    return [LABELS[i] for i in bin_index(sigma_sdxl.cpu()).tolist()]


class SigmaBinLoss:
    """Streaming mean of per-sample losses per σ bin (torchmetrics-style add/means/reset).

    The sums and counts stay where the losses are (float64 on the model's device): ``add`` never
    reads a value back, so the training step does not wait on the device; ``means`` reads them once
    per logging step. Only bins that received samples appear in ``means()``.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._count: torch.Tensor | None = None
        self._edges = EDGES

    def add(self, sigma_sdxl: torch.Tensor, per_sample: torch.Tensor) -> None:
        dev = per_sample.device
        if self._sum is None:
            self._sum = torch.zeros(len(LABELS), dtype=torch.float64, device=dev)
            self._count = torch.zeros(len(LABELS), dtype=torch.float64, device=dev)
            self._edges = EDGES.to(dev)
        index = bin_index(sigma_sdxl.to(dev), self._edges)
        self._sum.index_add_(0, index, per_sample.detach().to(torch.float64))
        self._count.index_add_(0, index, torch.ones(index.shape, dtype=torch.float64, device=dev))

    def means(self) -> dict[str, float]:
        if self._sum is None:
            return {}
        sums, counts = self._sum.tolist(), self._count.tolist()
        return {label: s / c for label, s, c in zip(LABELS, sums, counts) if c > 0}

    def reset(self) -> None:
        if self._sum is not None:
            self._sum.zero_()
            self._count.zero_()
