"""Resolve a config's data section to folders on disk (synthesising the benchmark if needed)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig, stable_hash, to_dict
from .synth import synthesize


@dataclass(frozen=True)
class PreparedData:
    """Where the training and evaluation images are, and the identity of their content."""

    train: str
    eval: str
    content_hash: str
    card: str | None = None


def prepare_dataset(dc: DataConfig, work_dir: str | Path) -> PreparedData:
    """The benchmark is written once per data config under ``work_dir`` (or ``data.path``) and reused
    when its card is already there. A folder dataset uses ``path`` for training and ``path/eval``
    for evaluation when that exists (else the same folder).
    """
    if dc.kind == "folder":
        root = Path(dc.path)
        ev = root / "eval"
        return PreparedData(str(root), str(ev if ev.is_dir() else root), stable_hash(str(root.resolve()))[:16])
    out = Path(dc.path) if dc.path else Path(work_dir) / f"benchmark-{stable_hash(to_dict(dc))[:10]}"
    card_f = out / "card.json"
    card = json.loads(card_f.read_text()) if card_f.is_file() else synthesize(
        out, dc.train_size, dc.eval_size, dc.resolution, dc.seed)
    return PreparedData(str(out / "train"), str(out / "eval"), card["content_hash"], str(card_f))
