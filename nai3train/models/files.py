"""Weights files nai3 reads: never a pickle, found out before any work starts.

Loading a pickle can run arbitrary code, so a file is refused when its suffix says pickle
(``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.pkl``) *or* its first bytes do (pickle protocol 2+
starts with 0x80; ``torch.save`` writes a zip, ``PK\\x03\\x04``) — a pickle renamed ``.safetensors``
is caught too — and a ``.safetensors`` file whose header is not what the format says (8-byte
length, then JSON within the file) is refused as damaged. The one exception is
``NAI3_ALLOW_PICKLE=1`` (``--allow-pickle`` on ``nai3 eval`` and ``nai3 metrics``), for a
torchvision Inception ``.pth`` say; even then it is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
ALLOW_PICKLE = "NAI3_ALLOW_PICKLE"
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


class RefusedWeights(ValueError):
    """A weights file nai3 does not read (a pickle, or a damaged safetensors)."""


def pickle_allowed() -> bool:
    return os.environ.get(ALLOW_PICKLE, "").lower() in ("1", "true", "yes")


def is_pickled(path: Path) -> bool:
    """By suffix or by the first bytes (a renamed pickle is one too)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(PICKLE_MAGIC)


def check_weights_file(path: str | Path, what: str) -> Path:
    """``path`` if nai3 may read it as weights (see the module docstring), else a clear error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    if is_pickled(p):
        if not pickle_allowed():
            raise RefusedWeights(f"{what} {p} is a pickle (loading one can run arbitrary code): convert it to "
                                 f".safetensors, or set {ALLOW_PICKLE}=1 (--allow-pickle) to read it with "
                                 "torch.load(weights_only=True)")
        return p
    if p.suffix.lower() == ".safetensors":
        check_safetensors(p, what)
    return p


def check_safetensors(p: Path, what: str) -> None:
    """The header a safetensors file must have: its length, then that much JSON, inside the file."""
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(MAX_HEADER, size - 8):
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise RefusedWeights(f"{what} {p} is not a readable safetensors file ({e}): truncated or not safetensors")


def check_weights_folder(folder: str | Path, what: str) -> None:
    """Every weights file of a model folder (a diffusers layout): a component whose only weights
    are pickled is refused; pickles beside a ``.safetensors`` are never read (nai3 asks for
    safetensors)."""
    root = Path(folder)
    for sub in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        files = [p for p in sorted(sub.iterdir()) if p.is_file()]
        safe = [p for p in files if p.suffix.lower() == ".safetensors"]
        for p in safe:
            check_weights_file(p, what)
        pickled = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES or p in safe and is_pickled(p)]
        if pickled and not safe and not pickle_allowed():
            raise RefusedWeights(f"{what} {root}: {pickled[0]} is a pickle and {sub.name}/ has no .safetensors "
                                 f"(loading a pickle can run arbitrary code): convert it to .safetensors")
