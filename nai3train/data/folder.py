"""Image folders with danbooru tags: the same loader for the benchmark and for users' own data.

A folder holds images (png/jpg/jpeg/webp, searched recursively) with a sidecar ``.txt`` of
comma-separated tags. Tags are normalised (lower case, spaces → underscores). Anything that
cannot be used — an unreadable or truncated image, an image without tags — is skipped and
reported with its reason; nothing crashes on a bad file, and a folder with no usable image is a
clear error before training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class DatasetError(ValueError):
    """The dataset cannot be used (missing, empty, or nothing valid in it)."""


def normalise_tag(tag: str) -> str:
    return "_".join(tag.strip().lower().split())


@dataclass
class FolderDataset:
    """Images in memory as float tensors in [−1, 1], (N, 3, R, R), with their tag lists."""

    images: torch.Tensor
    tags: list[list[str]]
    paths: list[str]
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def _load_rgb(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # documented: white
            im = Image.alpha_composite(canvas, rgba)
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.float32) / 127.5 - 1.0


def load_folder(root: str | Path, resolution: int) -> FolderDataset:
    """Load every usable image under ``root`` (centre square crop, resized to ``resolution``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    arrays, tags, paths, skipped = [], [], [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.suffix.lower() not in (".txt", ".json", ".jsonl"):
                skipped.append({"path": str(path), "reason": "not an image file"})
            continue
        side = path.with_suffix(".txt")
        t = [normalise_tag(x) for x in side.read_text().split(",")] if side.is_file() else []
        t = [x for x in t if x]
        if not t:
            skipped.append({"path": str(path), "reason": "no tags (missing or empty .txt)"})
            continue
        try:
            arrays.append(_load_rgb(path, resolution))
        except Exception as e:  # PIL raises many types for corrupt/truncated/zero-byte files
            skipped.append({"path": str(path), "reason": f"unreadable image: {type(e).__name__}: {e}"})
            continue
        tags.append(t)
        paths.append(str(path))
    if not paths:
        raise DatasetError(f"no usable images under {root} ({len(skipped)} skipped: "
                           f"{skipped[:3]}{' …' if len(skipped) > 3 else ''})")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return FolderDataset(images=images, tags=tags, paths=paths, skipped=skipped)
