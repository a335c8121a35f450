"""Resolve a config's data section to folders on disk (synthesising the benchmark if needed)."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import DataConfig, stable_hash, to_dict
from .synth import synthesize


def prepare_dataset(dc: DataConfig, work_dir: str | Path) -> dict:
    """Returns {'train': dir, 'eval': dir, 'content_hash': str}.

    The benchmark is written once per data config under ``work_dir`` (or ``data.path``) and reused
    when its card is already there. A folder dataset uses ``path`` for training and ``path/eval``
    for evaluation when that exists (else the same folder).
    """
    if dc.kind == "folder":
        root = Path(dc.path)
        ev = root / "eval"
        return {"train": str(root), "eval": str(ev if ev.is_dir() else root),
                "content_hash": stable_hash(str(root.resolve()))[:16]}
    out = Path(dc.path) if dc.path else Path(work_dir) / f"benchmark-{stable_hash(to_dict(dc))[:10]}"
    card_f = out / "card.json"
    card = json.loads(card_f.read_text()) if card_f.is_file() else synthesize(
        out, dc.train_size, dc.eval_size, dc.resolution, dc.seed)
    return {"train": str(out / "train"), "eval": str(out / "eval"), "content_hash": card["content_hash"],
            "card": str(card_f)}
