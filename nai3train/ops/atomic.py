"""Files that are either whole or absent: written under a private temporary name in the same
folder, then renamed over the target (a rename is atomic on one file system). The temporary name
carries the process id and a random part, so two processes writing one target never share it."""
from __future__ import annotations

import errno
import io
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DiskFull(OSError):
    """No space left for a file nai3 writes: names the file and the bytes it needed, so the fix
    (free that much, or point the work folder elsewhere) is in the message. An ``OSError`` with
    ``errno.ENOSPC``, so code that handles the plain error still does."""

    def __init__(self, path: str | Path, needed: int):
        self.path, self.needed = Path(path), needed
        free = _free_bytes(self.path)
        super().__init__(errno.ENOSPC, f"no space left on the device writing {self.path}: it needs {_size(needed)}, "
                                       f"{_size(free)} free there. Free space (or move the work folder) and run "
                                       "again; what was finished is kept and not redone")

    def __str__(self) -> str:
        return self.strerror


def _free_bytes(path: Path) -> int:
    for folder in [path, *path.parents]:
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; a full disk raises ``DiskFull`` and
    leaves the previous file (if any) in place."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        with atomic_target(path) as tmp:
            tmp.write_bytes(raw)
    except OSError as e:
        if e.errno == errno.ENOSPC and not isinstance(e, DiskFull):
            raise DiskFull(path, len(raw)) from None
        raise
    return Path(path)


def rendered(save) -> bytes:
    """What ``save(file_object)`` writes (a PNG from PIL or matplotlib), in memory: its size is
    known before it meets the disk, and ``atomic_write`` then writes it whole or not at all."""
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()
