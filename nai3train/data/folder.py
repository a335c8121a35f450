"""Image folders with danbooru tags: the same loader for the benchmark and for users' own data.

A folder holds images (png/jpg/jpeg/webp, searched recursively). Tags come from a sidecar ``.txt``
(comma-separated) or, failing that, from a ``metadata.jsonl`` in the image's folder (one JSON
object per line with ``file`` and ``tags`` — a list or a comma-separated string). Tags are
normalised: lower case, spaces and underscores both become underscores.

Decoding: EXIF orientation is applied; L, P, CMYK and 16-bit images become RGB; transparency (LA,
RGBA, P with a transparent colour) is composited on **white** (``ALPHA_BACKGROUND``), the usual
choice for anime art with transparent backgrounds. Anything that cannot be used — a zero-byte,
truncated or corrupt file, a non-image file, an image without tags — is skipped and listed with
its reason; nothing crashes on a bad file, and a folder with no usable image is a clear error.

Streaming: a scan decodes each image once to know it is usable and how large it is, and keeps only
that — path, tags, size — so a folder of any size costs its file list in memory. Pixels are decoded
again when a consumer asks (``ImageRecord.pixels``, ``FolderDataset.batches``, the bucketed
training set). With a ``cache_file`` the scan remembers each file's verdict by (path, size, mtime),
so the next scan of an unchanged folder (per variant, the report, the tagger) decodes nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from ..ops.atomic import atomic_write

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
MAX_PIXELS = 64 * 2**20  # 64 MP: far above any training image; larger is refused as a decompression bomb
MAX_TAGS = 512  # more tags than this on one image is refused (a broken or hostile tag file)
SIDE_FILES = {".txt", ".json", ".jsonl", ".md"}
ALPHA_BACKGROUND = (255, 255, 255)


class DatasetError(ValueError):
    """The dataset cannot be used (missing, empty, or nothing valid in it)."""


def normalise_tag(tag: str) -> str:
    return "_".join(tag.strip().lower().replace("_", " ").split())


def parse_tags(text: str | list[str]) -> list[str]:
    items = text if isinstance(text, list) else text.split(",")
    return [t for t in (normalise_tag(x) for x in items) if t]


IN_MEMORY_LIMIT = 2 * 2**30  # bytes: FolderDataset.images refuses to build a larger tensor
BATCH_BYTES = 256 * 2**20  # bytes: FolderDataset.batches' default batch (20 images at 1024²)


class RefusedImage(ValueError):
    """An image the loader will not decode, with the reason."""


@dataclass
class ImageRecord:
    """One usable image: where it is, its tags and its size after orientation — not its pixels."""

    path: str
    tags: list[str]
    height: int
    width: int

    def pixels(self) -> np.ndarray:
        """(H, W, 3) uint8, decoded now. The scan decoded this file once already; a failure here
        means the file changed during the run."""
        try:
            px = decode_rgb(Path(self.path))
        except Exception as e:  # noqa: BLE001 - PIL raises many types
            raise DatasetError(f"{self.path} was usable when its folder was scanned but cannot be decoded now "
                               f"({type(e).__name__}: {e}): the folder changed during the run; run again") from e
        if px.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.path} changed size since its folder was scanned "
                               f"({self.height}×{self.width} → {px.shape[0]}×{px.shape[1]}); run again")
        return px


@dataclass
class FolderScan:
    records: list[ImageRecord]
    skipped: list[dict] = field(default_factory=list)


class ScannedRecords:
    """Length, tags and paths of a set built on scanned ``records`` (computed once: a training step
    reads tags per image)."""

    records: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def tags(self) -> list[list[str]]:
        return [r.tags for r in self.records]

    @cached_property
    def paths(self) -> list[str]:
        return [r.path for r in self.records]


@dataclass
class FolderDataset(ScannedRecords):
    """A scanned folder as centre squares at ``resolution``, decoded when read: ``batches`` streams
    (N, 3, R, R) float tensors in [−1, 1], so a reference set of any size costs one batch in memory.
    ``images`` decodes everything at once, for small sets (the benchmark, tests) only."""

    records: list[ImageRecord]
    resolution: int
    skipped: list[dict] = field(default_factory=list)

    def square(self, i: int) -> np.ndarray:
        """Image i as an (R, R, 3) uint8 centre square."""
        return centre_square(self.records[i].pixels(), self.resolution)

    def batches(self, size: int | None = None) -> Iterator[torch.Tensor]:
        """The images in order, ``size`` at a time (default: what fits ``BATCH_BYTES``, at most 256),
        as float tensors in [−1, 1]."""
        size = size or max(1, min(256, BATCH_BYTES // (3 * self.resolution**2 * 4)))
        for start in range(0, len(self.records), size):
            yield torch.stack([to_tensor(self.square(i)) for i in range(start, min(start + size, len(self.records)))])

    @property
    def images(self) -> torch.Tensor:
        """Every image at once (N, 3, R, R); refused above ``IN_MEMORY_LIMIT`` (use ``batches``)."""
        need = len(self.records) * 3 * self.resolution**2 * 4
        if need > IN_MEMORY_LIMIT:
            raise DatasetError(f"{len(self.records)} images at {self.resolution}² would take {need / 2**30:.1f} GiB "
                               "in memory: read them with FolderDataset.batches()")
        return torch.cat(list(self.batches(256))) if self.records else torch.zeros(0, 3, self.resolution,
                                                                                   self.resolution)


def decode_rgb(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any supported image to (H, W, 3) uint8 RGB (see the module docstring).

    Refused before decoding: more than ``max_pixels`` pixels (decompression bombs — PIL's own limit
    only warns below twice its threshold) and animated or multi-frame files (which frame would be
    the training image is ambiguous)."""
    with Image.open(path) as im:
        w, h = im.size
        if w * h > max_pixels:
            raise RefusedImage(f"{w}×{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit (decompression bomb?)")
        if getattr(im, "n_frames", 1) > 1:
            raise RefusedImage(f"animated or multi-frame image ({im.n_frames} frames)")
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(im).astype(np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
            im = Image.alpha_composite(canvas, rgba)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _metadata_tags(folder: Path, cache: dict[Path, dict[str, list[str]]], skipped: list[dict],
                   real_root: Path) -> dict[str, list[str]]:
    if folder not in cache:
        table: dict[str, list[str]] = {}
        meta = folder / "metadata.jsonl"
        if meta.is_symlink() and not meta.resolve().is_relative_to(real_root):
            skipped.append({"path": str(meta), "reason": f"metadata file is a {LEAVES}"})
            cache[folder] = table
            return table
        try:
            lines = meta.read_text(errors="replace").splitlines() if meta.is_file() else []
        except OSError as e:
            skipped.append({"path": str(meta), "reason": f"unreadable metadata file: {type(e).__name__}: {e.strerror}"})
            lines = []
        if lines:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    name = str(row["file"])
                    tags = parse_tags(row.get("tags", []))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    skipped.append({"path": f"{meta}:{n}", "reason": f"bad metadata line: {type(e).__name__}: {e}"})
                    continue
                if Path(name).name != name:
                    skipped.append({"path": f"{meta}:{n}", "reason": f"metadata entry {name!r} is not a file name "
                                                                    "in this folder (paths are refused)"})
                elif name in table:
                    skipped.append({"path": f"{meta}:{n}", "reason": f"duplicate metadata entry for {name!r} "
                                                                    "(the first one is used)"})
                else:
                    table[name] = tags
        cache[folder] = table
    return cache[folder]


def _walk(root: Path, skipped: list[dict] | None = None) -> list[Path]:
    """Every file under ``root``, following directory symlinks that stay inside it at most once
    (a symlink loop ends there) — sorted, so a scan is deterministic. A directory symlink that
    leaves ``root`` is not walked, and a folder that cannot be listed is not passed over in
    silence: both are reported in ``skipped``."""
    out, seen = [], set()
    real_root = os.path.realpath(root)

    def unreadable(e: OSError) -> None:
        if skipped is not None:
            skipped.append({"path": str(e.filename), "reason": f"unreadable folder: {type(e).__name__}: {e.strerror}"})

    for dirpath, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        if len(Path(dirpath).relative_to(root).parts) >= MAX_DEPTH:
            if dirs and skipped is not None:
                skipped.append({"path": dirpath, "reason": f"folders nested deeper than {MAX_DEPTH} levels: not walked"})
            dirs.clear()
        for d in list(dirs):
            if not _inside(os.path.realpath(os.path.join(dirpath, d)), real_root):
                dirs.remove(d)
                if skipped is not None:
                    skipped.append({"path": os.path.join(dirpath, d), "reason": LEAVES})
        out += [Path(dirpath) / f for f in files]
    return sorted(p for p in out if p.is_file())


LEAVES = "symlink that leaves the dataset folder"
MAX_OTHER_FILES = 20_000  # a dataset holds images and their tags; a system folder does not
MAX_DEPTH = 64  # os.walk recurses: a folder 1000 levels deep would end in RecursionError


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


class ScanCache:
    """What a scan learnt by decoding each file — its (height, width), or why it was refused — keyed
    by (resolved path, size, mtime), in one JSON file outside the user's folder. A damaged cache
    only costs decoding again; writes are atomic, and two writers at worst lose each other's news."""

    def __init__(self, file: str | Path | None):
        self.file = Path(file) if file else None
        self.entries: dict[str, list] = {}
        self.fresh: dict[str, list] = {}
        if self.file is not None and self.file.is_file():
            try:
                self.entries = json.loads(self.file.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def verdict(self, path: Path) -> tuple[int, int] | str:
        """(height, width) of a usable image, else the reason it is skipped."""
        st = path.stat()
        key = str(path.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2] if isinstance(hit[2], str) else (int(hit[2]), int(hit[3]))
        try:
            verdict = _decode_verdict(path)
        except (PermissionError, FileNotFoundError) as e:  # the file's state, not its content: not remembered
            return f"unreadable image: {type(e).__name__}: {e}"
        self.fresh[key] = [st.st_size, st.st_mtime_ns, *([verdict] if isinstance(verdict, str) else verdict)]
        return verdict

    def save(self) -> None:
        """Write what was learnt, and forget files that are gone (else the cache of a work folder
        whose datasets change grows with every file it ever saw)."""
        if self.file is None:
            return
        kept = {k: v for k, v in {**self.entries, **self.fresh}.items() if Path(k).exists()}
        if self.fresh or len(kept) < len(self.entries):
            atomic_write(self.file, json.dumps(kept))


def _decode_verdict(path: Path) -> tuple[int, int] | str:
    if path.stat().st_size == 0:
        return "zero-byte file"
    try:
        h, w = decode_rgb(path).shape[:2]
    except RefusedImage as e:
        return f"refused: {e}"
    except (PermissionError, FileNotFoundError):
        raise
    except Exception as e:  # PIL raises many types for corrupt or truncated files
        return f"unreadable image: {type(e).__name__}: {e}"
    return h, w


def scan_folder(root: str | Path, cache_file: str | Path | None = None, untagged: bool = False) -> FolderScan:
    """Every usable image under ``root`` (decoded once to be sure, then let go; see the module
    docstring); every skipped file listed with its reason. ``cache_file``: remember the decodes.
    ``untagged`` keeps images without tags: a set measured by image features alone (generated
    images, a reference folder for FD/KID) has none, and needs none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    records, skipped = [], []
    decoded = ScanCache(cache_file)
    meta_cache: dict[Path, dict[str, list[str]]] = {}
    real_root = root.resolve()
    others = 0
    for path in _walk(root, skipped):
        if not path.resolve().is_relative_to(real_root):
            skipped.append({"path": str(path), "reason": LEAVES})
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            if suffix not in SIDE_FILES:
                skipped.append({"path": str(path), "reason": "not an image file"})
                others += 1
                if others > MAX_OTHER_FILES:
                    raise DatasetError(f"{root} holds more than {MAX_OTHER_FILES} files that are not images: is it "
                                       "the dataset folder? (a system folder is not scanned)")
            continue
        side = path.with_suffix(".txt")
        if side.is_symlink() and not side.resolve().is_relative_to(real_root):
            skipped.append({"path": str(side), "reason": f"tag file is a {LEAVES}"})
            continue
        try:
            tags = parse_tags(side.read_text(errors="replace")) if side.is_file() else []
        except OSError as e:
            skipped.append({"path": str(path), "reason": f"unreadable tag file {side.name}: {type(e).__name__}: "
                                                         f"{e.strerror}"})
            continue
        if not tags:
            tags = _metadata_tags(path.parent, meta_cache, skipped, real_root).get(path.name, [])
        if not tags and not untagged:
            skipped.append({"path": str(path), "reason": "no tags (no .txt sidecar and no metadata.jsonl entry)"})
            continue
        if len(tags) > MAX_TAGS:
            skipped.append({"path": str(path), "reason": f"{len(tags)} tags (more than {MAX_TAGS})"})
            continue
        verdict = decoded.verdict(path)
        if isinstance(verdict, str):
            skipped.append({"path": str(path), "reason": verdict})
            continue
        records.append(ImageRecord(str(path), tags, *verdict))
    decoded.save()
    if not records:
        raise DatasetError(f"no usable images under {root} ({len(skipped)} skipped: "
                           f"{skipped[:3]}{' …' if len(skipped) > 3 else ''})")
    return FolderScan(records, skipped)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [−1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 127.5 - 1.0


def centre_square(pixels: np.ndarray, resolution: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    im = Image.fromarray(pixels[top:top + side, left:left + side])
    if im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.array(im)


def load_folder(root: str | Path, resolution: int, square_only: bool = False,
                cache_file: str | Path | None = None, untagged: bool = False) -> FolderDataset:
    """Every usable image under ``root`` as a centre square at ``resolution`` (evaluation, tagger),
    read lazily."""
    return squares(scan_folder(root, cache_file, untagged), resolution, square_only, root)


def squares(scan: FolderScan, resolution: int, square_only: bool = False, root: str | Path = "") -> FolderDataset:
    """A scanned folder as centre squares at ``resolution`` (decoded when read).

    ``square_only`` keeps only images that are square already (no crop can cut an object off).
    """
    recs = [r for r in scan.records if not square_only or r.height == r.width]
    if not recs:
        raise DatasetError(f"no square images under {root}")
    return FolderDataset(recs, resolution, scan.skipped)
