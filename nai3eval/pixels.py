"""Pixels as every instrument reads them: the one map from model pixels in [−1, 1] to [0, 1],
and reference sets read a batch at a time (never held whole in memory)."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Union

import torch


def to_unit_unclamped(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] pixels → (x + 1)/2, not clipped (CFG overshoot lies outside [0, 1]); non-finite
    pixels become 0.5 (they are counted separately)."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=1.0, neginf=-1.0)
    return (x + 1) / 2


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] pixels → [0, 1], clipped as an image is shown."""
    return to_unit_unclamped(images).clamp(0, 1)


RealImages = Union[torch.Tensor, Callable[[], Iterable[torch.Tensor]]]
"""A reference set: all at once (a small tensor), or a callable that streams it in batches
(``FolderDataset.batches``), so a real-size reference folder is never held in memory."""


def real_batches(real: RealImages, size: int = 256) -> Iterator[torch.Tensor]:
    """The reference images in order, a batch at a time, in [−1, 1]."""
    yield from (real.split(size) if torch.is_tensor(real) else real())


def first_images(real: RealImages, n: int) -> torch.Tensor:
    """The first ``n`` reference images (or all, if fewer), reading no further than needed."""
    parts, have = [], 0
    for b in real_batches(real):
        parts.append(b[: n - have])
        have += len(parts[-1])
        if have >= n:
            break
    return torch.cat(parts) if parts else torch.zeros(0)


def image_brightness(real: RealImages) -> torch.Tensor:
    """Per image, the mean of its pixels in [0, 1] (clipped as shown)."""
    parts = [to_unit(b).flatten(1).mean(1) for b in real_batches(real)]
    return torch.cat(parts) if parts else torch.zeros(0)


def finite_images(images: torch.Tensor) -> torch.Tensor:
    """Per image, whether every pixel is finite (ε-prediction from σ = ∞ gives ∞·(ε − F))."""
    return torch.isfinite(images.flatten(1)).all(1)
