"""Resolve a config's data section to folders on disk (synthesising the benchmark if needed)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig, stable_hash, to_dict
from .folder import DatasetError
from .identity import dataset_identity
from .synth import synthesize


@dataclass(frozen=True)
class PreparedData:
    """Where the training and evaluation images are, and the identity of their content
    (``data.identity.dataset_identity``: every file's path, size and bytes — never the folder's path)."""

    train: str
    eval: str
    content_hash: str
    card: str | None = None
    scan_cache: str | None = None  # where scans remember their decodes (``folder.ScanCache``)
    benchmark: bool = False  # the embedded benchmark, both splits: its exact scorer can read the pixels


def prepare_dataset(dc: DataConfig, work_dir: str | Path) -> PreparedData:
    """The benchmark is written once per data config under ``work_dir`` (or ``data.path``) and reused
    when its card is already there. A folder dataset uses ``path`` for training and ``path/eval``
    for evaluation when that exists (else the same folder). The content identity is recomputed on
    every call (file digests cached by size and mtime under ``work_dir/cache``), so an edited,
    added or removed image is never answered with results of the old data.
    """
    cache = Path(work_dir) / "cache" / "file-digests.json"
    scans = str(Path(work_dir).resolve() / "cache" / "image-scan.json")
    if dc.kind == "folder":
        root = Path(dc.path)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist (data.path)")
        ev = root / "eval" if (root / "eval").is_dir() else root
        return PreparedData(str(root), str(ev), dataset_identity(root, ev, cache), scan_cache=scans)
    out = Path(dc.path) if dc.path else Path(work_dir) / f"benchmark-{stable_hash(to_dict(dc))[:10]}"
    card_f = out / "card.json"
    if not card_f.is_file():
        synthesize(out, dc.train_size, dc.eval_size, dc.resolution, dc.seed)
    return PreparedData(str(out / "train"), str(out / "eval"), dataset_identity(out / "train", out / "eval", cache),
                        str(card_f), scans, benchmark=True)
