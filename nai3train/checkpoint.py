"""Checkpoints as safetensors (never pickle), written atomically.

A checkpoint is a folder with ``model.safetensors`` (raw weights), ``ema.safetensors`` (EMA
weights, what evaluation uses by default) and ``meta.json`` (model config, tag vocabulary,
variant, schedule scale, step) — everything needed to rebuild the denoiser without the config.
Training checkpoints add ``state.safetensors``: optimiser moments, RNG states, the step.

Atomicity: a folder is written under a temporary name and renamed into place, so a run killed
mid-write leaves either the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the folder."""


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(folder: str | Path, model: torch.nn.Module | dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    meta: dict,
                    train_state: dict[str, torch.Tensor] | None = None,
                    write_extra: Callable[[Path], object] | None = None) -> Path:
    """Write the checkpoint folder atomically (temp folder + rename) and return its path.

    ``write_extra(tmp_folder)`` adds files before the folder becomes visible (the model bundle's
    ``config.json``, which makes the folder loadable with ``load_bundle``). ``model`` is the module
    or its weights already taken (a snapshot written off the training thread)."""
    weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(_tensors(weights), str(tmp / "model.safetensors"))
        save_file(_tensors(ema), str(tmp / "ema.safetensors"))
        if train_state is not None:
            save_file(_tensors(train_state), str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if write_extra is not None:
            write_extra(tmp)
    except OSError as e:  # disk full, quota, permissions: the previous checkpoint stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"could not write checkpoint {folder}: {e} (the previous checkpoint is "
                                   "untouched)") from e
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


def save_step_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module | dict[str, torch.Tensor],
                         ema: dict[str, torch.Tensor],
                         meta: dict, train_state: dict[str, torch.Tensor], keep: int = 2,
                         write_extra: Callable[[Path], object] | None = None) -> Path:
    """``run_dir/checkpoints/step-00000123``; keeps the newest ``keep`` of them."""
    base = Path(run_dir) / "checkpoints"
    path = save_checkpoint(base / f"step-{step:08d}", model, ema, {**meta, "step": step}, train_state, write_extra)
    for old in step_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary folders are ignored)."""
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_step_checkpoint(run_dir: str | Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1] if found else None


def load_meta(folder: str | Path) -> dict:
    """A checkpoint's metadata: a JSON object (else a ValueError naming the file)."""
    from .models.bundle import read_json_object

    f = Path(folder) / "meta.json"
    if not f.is_file():
        raise FileNotFoundError(f"{folder} is not a nai3 checkpoint: {f} is missing")
    return read_json_object(f, "nai3 checkpoint metadata")


def load_model_meta(folder: str | Path) -> dict:
    """A final checkpoint's metadata, checked for what evaluation reads: a variant (an object with a
    name) — anything else is a ValueError naming the file."""
    meta = load_meta(folder)
    variant = meta.get("variant")
    if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
        raise ValueError(f"nai3 checkpoint metadata {Path(folder) / 'meta.json'} lacks a 'variant' object with a "
                         "'name': not written by nai3, or damaged")
    return meta


def load_weights(folder: str | Path, ema: bool = True) -> dict[str, torch.Tensor]:
    f = Path(folder) / ("ema.safetensors" if ema else "model.safetensors")
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint weights {f} are missing")
    return load_file(str(f))


def load_train_state(folder: str | Path) -> dict[str, torch.Tensor]:
    f = Path(folder) / "state.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{folder} holds no training state ({f.name} missing): it cannot be resumed")
    return load_file(str(f))


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten an optimiser's per-parameter state into named tensors (no pickle)."""
    out: dict[str, torch.Tensor] = {}
    for i, (_, st) in enumerate(sorted(opt.state_dict()["state"].items())):
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
