"""Checkpoints as safetensors (never pickle), written atomically: temp file, then rename.

A checkpoint is a folder with ``model.safetensors`` (raw weights), ``ema.safetensors`` (EMA
weights, what evaluation uses by default) and ``meta.json`` (model config, tag vocabulary,
variant, schedule scale, step) — everything needed to rebuild the denoiser without the config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(folder: str | Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic(folder / "model.safetensors", lambda p: save_file(state, str(p)))
    _atomic(folder / "ema.safetensors", lambda p: save_file({k: v.contiguous().cpu() for k, v in ema.items()}, str(p)))
    _atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))
    return folder


def load_meta(folder: str | Path) -> dict:
    f = Path(folder) / "meta.json"
    if not f.is_file():
        raise FileNotFoundError(f"{folder} is not a nai3 checkpoint: {f} is missing")
    return json.loads(f.read_text())


def load_weights(folder: str | Path, ema: bool = True) -> dict[str, torch.Tensor]:
    f = Path(folder) / ("ema.safetensors" if ema else "model.safetensors")
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint weights {f} are missing")
    return load_file(str(f))
