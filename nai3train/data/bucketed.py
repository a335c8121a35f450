"""A training dataset in aspect-ratio buckets: each image resized to cover its bucket, cropped per
sample (random offset from the trainer's generator, so resume replays it exactly).

Images are assigned to buckets from their scanned sizes and decoded when a batch asks for them, so
the set is never held whole in memory; decoded covers are kept in a bounded LRU
(``NAI3_DATA_CACHE_MB``, default 1024 MB): the benchmark fits whole after its first epoch, a
real-size folder streams.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from .bucketing import Bucket, Crop, assign_bucket, bucket_report, make_buckets, resize_cover
from .folder import FolderScan, ImageRecord, ScannedRecords


def cache_budget() -> int:
    """Bytes of decoded covers a training set keeps (an operational setting, not part of a recipe)."""
    from ..ops.settings import env_number

    return int(env_number("NAI3_DATA_CACHE_MB", 1024, 0, 1 << 20) * 2**20)


def default_buckets(resolution: int) -> list[Bucket]:
    """SDXL-like buckets around ``resolution``² area: step 64 and sides ½×–2× for real data
    (resolution ≥ 256); for the tiny benchmark step resolution/4 and sides ½×–1.5×."""
    if resolution >= 256:
        return make_buckets(resolution * resolution, 64, resolution // 2, resolution * 2)
    step = max(4, resolution // 4)
    return make_buckets(resolution * resolution, step, max(step, resolution // 2), resolution * 3 // 2)


@dataclass
class BucketedDataset(ScannedRecords):
    buckets: list[Bucket]
    bucket_of: np.ndarray
    records: list[ImageRecord]
    skipped: list[dict]
    cache_bytes: int = field(default_factory=cache_budget)

    def __post_init__(self) -> None:
        self._covers: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0

    @cached_property
    def original_sizes(self) -> list[tuple[int, int]]:
        """(h, w) of each source image."""
        return [(r.height, r.width) for r in self.records]

    @classmethod
    def from_scan(cls, scan: FolderScan, buckets: list[Bucket]) -> "BucketedDataset":
        bucket_of = [assign_bucket(r.width, r.height, buckets) for r in scan.records]
        return cls(buckets, np.array(bucket_of, dtype=np.int64), list(scan.records), scan.skipped)

    def cover(self, i: int) -> np.ndarray:
        """Image i resized to cover its bucket, (H', W', 3) uint8: from the LRU, else decoded now."""
        hit = self._covers.get(i)
        if hit is not None:
            self._covers.move_to_end(i)
            return hit
        arr = np.asarray(resize_cover(Image.fromarray(self.records[i].pixels()), self.buckets[int(self.bucket_of[i])]))
        if arr.nbytes <= self.cache_bytes:
            self._covers[i] = arr
            self._cached += arr.nbytes
            while self._cached > self.cache_bytes:
                _, old = self._covers.popitem(last=False)
                self._cached -= old.nbytes
        return arr

    @property
    def max_area(self) -> int:
        return max(b.area for b in self.buckets)

    def report(self) -> dict:
        return bucket_report([(w, h) for h, w in self.original_sizes], self.buckets, self.bucket_of.tolist())

    def crop(self, i: int, generator: torch.Generator | None) -> tuple[np.ndarray, Crop]:
        """Image i cropped to its bucket: random offset from ``generator``, centred if None."""
        bk = self.buckets[int(self.bucket_of[i])]
        cover = self.cover(i)
        dy, dx = cover.shape[0] - bk.height, cover.shape[1] - bk.width
        if generator is None:
            top, left = dy // 2, dx // 2
        else:
            top = int(torch.randint(0, dy + 1, (1,), generator=generator))
            left = int(torch.randint(0, dx + 1, (1,), generator=generator))
        crop = Crop((self.records[i].height, self.records[i].width), (top, left), (bk.height, bk.width))
        return cover[top:top + bk.height, left:left + bk.width], crop

    def batch(self, indices: list[int], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, h, w) in [−1, 1], SDXL time_ids (B, 6)) for one bucket's indices."""
        arrays, ids = [], []
        for i in indices:
            arr, crop = self.crop(i, generator)
            arrays.append(arr)
            ids.append(crop.time_ids())
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x, torch.tensor(ids, dtype=torch.float32)
