"""The identity of a dataset's content: the one definition that every reuse decision keys on.

Training reuse, the tagger cache and evaluation reuse all ask "is this the same data?". The answer
is a hash over every file the loader could read under the folder — relative path, size and a
SHA-256 of the bytes — so adding, removing, renaming or editing an image or a tag file changes it,
and moving the folder elsewhere does not. File digests are cached by (path, size, mtime) in a JSON
file the caller chooses (outside the user's data folder), so a large unchanged folder is not
re-read on every run.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..ops.atomic import atomic_write
from .folder import IMAGE_SUFFIXES, SIDE_FILES, _walk

_CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    """The files the folder loader reads (images and tag side files inside the folder), walked
    the same way the loader walks them."""
    wanted = IMAGE_SUFFIXES | SIDE_FILES
    real = root.resolve()
    return [p for p in _walk(root) if p.suffix.lower() in wanted and p.resolve().is_relative_to(real)]


def content_identity(root: str | Path, cache_file: str | Path | None = None) -> str:
    """SHA-256 hex digest of the folder's content (see the module docstring)."""
    root = Path(root)
    cache: dict[str, list] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cache = json.loads(Path(cache_file).read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache only costs re-reading the files
    fresh: dict[str, list] = {}
    h = hashlib.sha256()
    for path in _files(root):
        st = path.stat()
        key = str(path.resolve())
        hit = cache.get(key)
        try:
            digest = hit[2] if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns else _file_digest(path)
        except OSError as e:  # the loader skips it too; its state is still part of the identity
            digest = f"unreadable:{e.errno}"
        fresh[key] = [st.st_size, st.st_mtime_ns, digest]
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{digest}\n".encode())
    if cache_file is not None:
        atomic_write(cache_file, json.dumps({**cache, **fresh}))
    return h.hexdigest()


def dataset_identity(train: str | Path, eval: str | Path, cache_file: str | Path | None = None) -> str:
    """The identity of a prepared dataset: its training folder and, when it lies elsewhere, its
    evaluation folder."""
    train_p, eval_p = Path(train).resolve(), Path(eval).resolve()
    parts = [content_identity(train_p, cache_file)]
    if not eval_p.is_relative_to(train_p):
        parts.append(content_identity(eval_p, cache_file))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
