"""Step checkpoints written off the training thread, from a snapshot taken at the step.

An SDXL training checkpoint (weights, EMA, AdamW moments) is ~41 GB: written synchronously every
``checkpoint_every`` steps it stalls the GPU for minutes, and keeping two fills a disk. Here a
background thread serialises a snapshot with the same atomic folder rename as before
(``nai3train/checkpoint.py``), so a run killed mid-write still leaves the previous checkpoint whole,
and resume is unchanged. One write is in flight at a time: the next ``save`` (or ``wait``) first
waits for it and raises what it raised.

The snapshot is what the step must not wait for. On CUDA it is an asynchronous copy into pinned
host buffers (allocated once, reused), ordered after the step's kernels by the stream. On the CPU
the background thread copies the live tensors itself while the next step's forward and backward
run — they only read the weights — and the trainer calls ``hold_updates()`` before its next
optimiser step and ``hold_ema()`` before its EMA update, which wait only if that part of the copy is
not done yet (weights and optimiser state are copied first, the EMA last, overlapping the optimiser
step). Only the optimiser step and the EMA change what is saved.

Before a write starts, the disk must hold the new checkpoint beside the ones kept: otherwise a
``CheckpointWriteError`` names the size needed, the space free and the folder.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import CheckpointWriteError, save_step_checkpoint

log = logging.getLogger(__name__)
MARGIN = 64 << 20  # meta.json, config.json and the file system's own blocks


def _copy_to(buffers: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], pinned: bool) -> dict[str, torch.Tensor]:
    """Copy ``tensors`` into ``buffers`` (allocated on first use, reused after); asynchronous from CUDA."""
    for k, v in tensors.items():
        v = v.detach()
        buf = buffers.get(k)
        if buf is None or buf.shape != v.shape or buf.dtype != v.dtype:
            buf = buffers[k] = torch.empty(v.shape, dtype=v.dtype, pin_memory=pinned)
        if pinned:
            buf.copy_(v, non_blocking=True)
        elif v.numel():  # one thread, no OpenMP team beside the step's (numpy's copy releases the GIL)
            np.copyto(_bytes(buf), _bytes(v.contiguous()))
    return {k: buffers[k] for k in tensors}


def _bytes(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).view(torch.uint8).numpy()


def nbytes(*parts: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for part in parts for v in part.values())


def check_free_space(folder: Path, need: int) -> None:
    """Raise unless ``folder``'s file system has ``need`` bytes (plus a margin) free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need + MARGIN:
        raise CheckpointWriteError(
            f"a checkpoint needs {need / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free: free space "
            "there, point --work-dir at a larger disk, or checkpoint less often (train.checkpoint_every)")


class CheckpointWriter:
    """``save`` returns at once; the folder is written by a background thread (module docstring).
    ``wait()`` returns the last folder written (None before any) and raises a failed write's error."""

    def __init__(self, run_dir: str | Path, keep: int = 1, on_written: Callable[[Path], None] | None = None):
        self.run_dir, self.keep, self.on_written = Path(run_dir), keep, on_written
        self._thread: threading.Thread | None = None
        # set once the snapshot no longer reads the weights and optimiser state / the EMA
        self._copied = {"weights": threading.Event(), "ema": threading.Event()}
        for e in self._copied.values():
            e.set()
        self._error: BaseException | None = None
        self._buffers: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "state": {}}
        self.last: Path | None = None

    def save(self, step: int, weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor], meta: dict,
             train_state: dict[str, torch.Tensor], write_extra: Callable[[Path], object] | None = None) -> None:
        self.wait()
        parts = {"model": weights, "ema": ema, "state": train_state}
        check_free_space(self.run_dir / "checkpoints", nbytes(*parts.values()))
        cuda = any(v.is_cuda for part in parts.values() for v in part.values())
        event = None
        if cuda:  # enqueued behind the step's kernels: consistent without waiting
            parts = {name: _copy_to(self._buffers[name], part, pinned=True) for name, part in parts.items()}
            event = torch.cuda.Event()
            event.record()
        for e in self._copied.values():
            e.clear()
        self._thread = threading.Thread(target=self._write, name=f"nai3-checkpoint-{step}",
                                        args=(step, parts, meta, write_extra, event, not cuda))
        self._thread.start()

    @property
    def writing(self) -> bool:
        """A checkpoint is being copied or written now."""
        return self._thread is not None and self._thread.is_alive()

    def hold_updates(self) -> None:
        """Before the optimiser step: wait until the snapshot no longer reads the weights and its state."""
        self._copied["weights"].wait()

    def hold_ema(self) -> None:
        """Before the EMA update: wait until the snapshot no longer reads the averages (copied last,
        so this copy overlaps the optimiser step)."""
        self._copied["ema"].wait()

    def _write(self, step: int, parts: dict, meta: dict, write_extra, event, copy: bool) -> None:
        try:
            if copy:  # what the optimiser step changes first, the EMA (changed after it) last
                for name in ("model", "state", "ema"):
                    parts[name] = _copy_to(self._buffers[name], parts[name], pinned=False)
                    if name == "state":
                        self._copied["weights"].set()
            for e in self._copied.values():
                e.set()
            if event is not None:
                event.synchronize()
            self.last = save_step_checkpoint(self.run_dir, step, parts["model"], parts["ema"], meta, parts["state"],
                                             keep=self.keep, write_extra=write_extra)
            if self.on_written is not None:
                self.on_written(self.last)
        except BaseException as err:  # raised on the training thread by the next save or wait
            self._error = err
        finally:
            for e in self._copied.values():
                e.set()

    def settle(self) -> None:
        """Let a write in flight finish without raising its error (training is failing already)."""
        try:
            self.wait()
        except BaseException as err:  # logged: the training's own error is the one to raise
            log.warning("checkpoint write failed while training stopped: %s", err)

    def wait(self) -> Path | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.last
