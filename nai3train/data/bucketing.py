"""Aspect-ratio bucketing, following NovelAI's published algorithm (docs/data.md, "Aspect-ratio bucketing").

Buckets have roughly equal pixel count: widths in steps of ``step`` between ``min_side`` and
``max_side``; for each width the largest height (a multiple of ``step``, at most ``max_side``)
whose area stays within ``max_area``; then the swapped pairs, plus the largest square. Each image
goes to the bucket nearest in log aspect ratio, is resized to *cover* the bucket and cropped
(random offset for training, centred for evaluation); the crop is recorded as SDXL's size
conditioning (original size, crop top-left, target size).

Batches hold one bucket each. Within an epoch, buckets are drawn in proportion to the images they
have left; a bucket's remainder smaller than a batch is carried into the next epoch (nothing is
dropped), and so are batches that would leave ranks unequal when sharded across ``world_size``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def area(self) -> int:
        return self.width * self.height


def make_buckets(max_area: int, step: int = 64, min_side: int = 256, max_side: int = 1024) -> list[Bucket]:
    """The bucket set for (max area, step, min side, max side), sorted by aspect ratio."""
    if step <= 0 or min_side <= 0 or max_side < min_side or max_area < min_side * min_side:
        raise ValueError(f"bad bucket parameters: max_area={max_area}, step={step}, min_side={min_side}, "
                         f"max_side={max_side} (need step > 0, min_side ≤ max_side, max_area ≥ min_side²)")
    found: set[tuple[int, int]] = set()
    w = min_side
    while w <= max_side:
        h = min(max_side, (max_area // w) // step * step)
        if h >= min_side:
            found.add((w, h))
            found.add((h, w))
        w += step
    side = min(max_side, int(math.isqrt(max_area)) // step * step)
    if side >= min_side:
        found.add((side, side))
    return sorted((Bucket(w, h) for w, h in found), key=lambda b: (b.aspect, b.area))


def assign_bucket(width: int, height: int, buckets: list[Bucket]) -> int:
    """Index of the bucket nearest in log aspect ratio (ties: the larger area)."""
    la = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: (abs(math.log(buckets[i].aspect) - la), -buckets[i].area))


@dataclass(frozen=True)
class Crop:
    """SDXL size conditioning for one sample: everything in pixels."""

    original_size: tuple[int, int]  # (h, w) of the source image
    crop_top_left: tuple[int, int]  # (top, left) in the resized (cover) image
    target_size: tuple[int, int]  # (h, w) of the bucket

    def time_ids(self) -> list[int]:
        return [*self.original_size, *self.crop_top_left, *self.target_size]


def cover_size(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """(w, h) after resizing so the image covers the bucket (keeps the aspect ratio)."""
    scale = max(bucket.width / width, bucket.height / height)
    return max(bucket.width, round(width * scale)), max(bucket.height, round(height * scale))


def resize_cover(img: Image.Image, bucket: Bucket) -> Image.Image:
    w, h = cover_size(img.width, img.height, bucket)
    return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BICUBIC)


def kept_fraction(width: int, height: int, bucket: Bucket) -> float:
    """Fraction of the source image's pixels that survive resize-to-cover + crop."""
    cw, ch = cover_size(width, height, bucket)
    return (bucket.width * bucket.height) / (cw * ch)


def square_kept_fraction(width: int, height: int) -> float:
    """The same for the usual alternative: a centre square crop."""
    return min(width, height) ** 2 / (width * height)


class BucketBatches:
    """Deterministic, shardable stream of single-bucket batches of image indices.

    ``bucket_of[i]`` is image i's bucket. ``batches(rank, world_size)`` yields (bucket index,
    [image indices]) forever, epoch after epoch; all ranks see the same plan and take every
    ``world_size``-th batch, so they stay in step. ``skip`` replays a position (for resume).
    """

    def __init__(self, bucket_of: list[int] | np.ndarray, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        self.bucket_of = np.asarray(bucket_of)
        self.batch_size = batch_size
        self.seed = seed

    def epoch_plan(self, epoch: int, carried: dict[int, list[int]], world_size: int = 1
                   ) -> tuple[list[tuple[int, list[int]]], dict[int, list[int]]]:
        """One epoch's batches (all ranks) and the images carried into the next epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        pools: dict[int, list[int]] = {}
        for b in np.unique(self.bucket_of):
            idx = np.flatnonzero(self.bucket_of == b)
            pools[int(b)] = list(carried.get(int(b), [])) + [int(i) for i in rng.permutation(idx)]
        batches: list[tuple[int, list[int]]] = []
        left = {b: len(p) // self.batch_size for b, p in pools.items()}  # full batches per bucket
        pos = {b: 0 for b in pools}
        while sum(left.values()) > 0:
            names = [b for b in left if left[b] > 0]
            weights = np.array([len(pools[b]) - pos[b] for b in names], dtype=float)
            b = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            batches.append((b, pools[b][pos[b]:pos[b] + self.batch_size]))
            pos[b] += self.batch_size
            left[b] -= 1
        next_carry = {b: pools[b][pos[b]:] for b in pools if pos[b] < len(pools[b])}
        extra = len(batches) % world_size
        if extra:  # keep ranks in step: the last few batches wait for the next epoch
            for b, idx in batches[-extra:]:
                next_carry[b] = idx + next_carry.get(b, [])
            batches = batches[:-extra]
        return batches, next_carry

    def batches(self, rank: int = 0, world_size: int = 1, skip: int = 0) -> Iterator[tuple[int, list[int]]]:
        """Batches for ``rank``, forever; the first ``skip`` of this rank's batches are skipped."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        carried: dict[int, list[int]] = {}
        epoch, seen = 0, 0
        while True:
            plan, carried = self.epoch_plan(epoch, carried, world_size)
            if not plan:
                raise ValueError(f"no full batch of {self.batch_size} fits any bucket × {world_size} ranks: "
                                 "lower train.batch_size")
            for b, idx in plan[rank::world_size]:
                if seen >= skip:
                    yield b, idx
                seen += 1
            epoch += 1


def bucket_report(sizes: list[tuple[int, int]], buckets: list[Bucket], bucket_of: list[int]) -> dict:
    """Claim C7: per-bucket counts and mean aspect error; pixels kept vs a centre square crop."""
    per: dict[str, dict] = {}
    kept, square = [], []
    for (w, h), b in zip(sizes, bucket_of):
        bk = buckets[b]
        key = f"{bk.width}x{bk.height}"
        entry = per.setdefault(key, {"count": 0, "aspect_error_sum": 0.0})
        entry["count"] += 1
        entry["aspect_error_sum"] += abs(math.log((w / h) / bk.aspect))
        kept.append(kept_fraction(w, h, bk))
        square.append(square_kept_fraction(w, h))
    buckets_out = {k: {"count": v["count"], "mean_abs_log_aspect_error": v["aspect_error_sum"] / v["count"]}
                   for k, v in sorted(per.items())}
    return {"buckets": buckets_out, "n_buckets_defined": len(buckets),
            "mean_pixels_kept": float(np.mean(kept)) if kept else float("nan"),
            "mean_pixels_kept_centre_square": float(np.mean(square)) if square else float("nan"),
            "min_pixels_kept": float(np.min(kept)) if kept else float("nan")}
