"""A training dataset in aspect-ratio buckets: images resized to cover their bucket once, cropped
per sample (random offset from the trainer's generator, so resume replays it exactly)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .bucketing import Bucket, Crop, assign_bucket, bucket_report, make_buckets, resize_cover
from .folder import FolderScan


def default_buckets(resolution: int) -> list[Bucket]:
    """SDXL-like buckets around ``resolution``² area: step 64 and sides ½×–2× for real data
    (resolution ≥ 256); for the tiny benchmark step resolution/4 and sides ½×–1.5×."""
    if resolution >= 256:
        return make_buckets(resolution * resolution, 64, resolution // 2, resolution * 2)
    step = max(4, resolution // 4)
    return make_buckets(resolution * resolution, step, max(step, resolution // 2), resolution * 3 // 2)


@dataclass
class BucketedDataset:
    buckets: list[Bucket]
    bucket_of: np.ndarray
    covers: list[np.ndarray]  # per image, (H', W', 3) uint8 covering its bucket
    original_sizes: list[tuple[int, int]]  # (h, w)
    tags: list[list[str]]
    paths: list[str]
    skipped: list[dict]

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_scan(cls, scan: FolderScan, buckets: list[Bucket]) -> "BucketedDataset":
        bucket_of, covers, sizes = [], [], []
        for r in scan.records:
            h, w = r.pixels.shape[:2]
            b = assign_bucket(w, h, buckets)
            covers.append(np.asarray(resize_cover(Image.fromarray(r.pixels), buckets[b])))
            bucket_of.append(b)
            sizes.append((h, w))
        return cls(buckets, np.array(bucket_of), covers, sizes, [r.tags for r in scan.records],
                   [r.path for r in scan.records], scan.skipped)

    @property
    def max_area(self) -> int:
        return max(b.area for b in self.buckets)

    def report(self) -> dict:
        return bucket_report([(w, h) for h, w in self.original_sizes], self.buckets, self.bucket_of.tolist())

    def crop(self, i: int, generator: torch.Generator | None) -> tuple[np.ndarray, Crop]:
        """Image i cropped to its bucket: random offset from ``generator``, centred if None."""
        bk = self.buckets[int(self.bucket_of[i])]
        cover = self.covers[i]
        dy, dx = cover.shape[0] - bk.height, cover.shape[1] - bk.width
        if generator is None:
            top, left = dy // 2, dx // 2
        else:
            top = int(torch.randint(0, dy + 1, (1,), generator=generator))
            left = int(torch.randint(0, dx + 1, (1,), generator=generator))
        crop = Crop(self.original_sizes[i], (top, left), (bk.height, bk.width))
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
