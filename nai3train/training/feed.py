"""The training step's inputs, made ahead of it: batches, tag dropout, σ and ε drawn off the step.

The step (forward, loss, backward, optimiser, EMA) should never wait on the host: on a GPU, reading
latents from disk one file per sample, drawing noise on the host and copying it pageable all stall
the device between kernels. ``Feed`` makes each micro-batch's host work — the source's batch (its
random crops or cached latents), the normalisation, the tag-dropout mask and conditioning, the σ
draw and, on the CPU, ε — in a background thread, ``prefetch`` micro-batches ahead, pinned for an
asynchronous copy when the model is on CUDA.

Every random draw is made from the one data generator in the trainer's historical order (crops,
dropout, σ, ε), so a CPU run is bit-identical to the loop that drew them inline. Because the thread
runs ahead, the generator's state to checkpoint is the one *after the last consumed* micro-batch:
each ``Batch`` carries it (``rng_after``), and the trainer saves that, so a resumed run continues
the same stream.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass(frozen=True)
class Batch:
    """One micro-batch as the step consumes it (host tensors; pinned on CUDA)."""

    idx: list[int]
    x0: torch.Tensor
    cond: dict
    sigma: torch.Tensor  # float64, model units
    eps: torch.Tensor | None  # None: drawn on the device by the step
    tag_weight: torch.Tensor | None  # per-sample extra loss weight, None when tag weighting is off
    rng_after: torch.Tensor  # the data generator's state after this micro-batch's draws


@dataclass(frozen=True)
class FeedSpec:
    """What a micro-batch is made of: the trainer's parts, named once."""

    source: object  # .batch(idx, generator) -> (x0, time_ids); .cond(idx, dropped, time_ids) -> dict
    normalize: Callable[[torch.Tensor], torch.Tensor] | None
    tag_dropout: float
    draw: Callable[[torch.Size, torch.Generator, bool], tuple[torch.Tensor, torch.Tensor | None]]
    tag_weights: torch.Tensor | None  # per image of the dataset
    noise_on_host: bool  # ε from the data generator (CPU) or on the device (GPU)
    pin: bool


def make_batch(spec: FeedSpec, idx: list[int], gen: torch.Generator) -> Batch:
    """One micro-batch, its draws in the historical order: crops, dropout, σ, ε."""
    x0, time_ids = spec.source.batch(idx, gen)
    if spec.normalize is not None:
        x0 = spec.normalize(x0)
    cond = spec.source.cond(idx, torch.rand(len(idx), generator=gen) < spec.tag_dropout, time_ids)
    sigma, eps = spec.draw(x0.shape, gen, spec.noise_on_host)
    w = spec.tag_weights[idx] if spec.tag_weights is not None else None
    if spec.pin:
        x0, sigma = x0.pin_memory(), sigma.pin_memory()
        cond = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in cond.items()}
        w = w.pin_memory() if w is not None else None
    return Batch(idx, x0, cond, sigma, eps, w, gen.get_state())


class Feed:
    """``next(feed)`` is the next micro-batch of ``indices`` (an iterator of (bucket, idx)), made by
    a daemon thread ``prefetch`` micro-batches ahead (0: made in the caller's thread, on demand).
    An error in the thread is raised by the ``next`` that would have received its batch."""

    _END = object()

    def __init__(self, spec: FeedSpec, indices: Iterator[tuple[object, list[int]]], gen: torch.Generator,
                 prefetch: int = 2):
        self.spec, self.indices, self.gen = spec, indices, gen
        self.prefetch = prefetch
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __iter__(self) -> "Feed":
        return self

    def __next__(self) -> Batch:
        if self.prefetch <= 0:
            _bucket, idx = next(self.indices)
            return make_batch(self.spec, idx, self.gen)
        if self._queue is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._fill, name="nai3-feed", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if item is Feed._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def _fill(self) -> None:
        try:
            for _bucket, idx in self.indices:
                if self._stop.is_set():
                    return
                self._put(make_batch(self.spec, idx, self.gen))
            self._put(Feed._END)
        except BaseException as e:  # handed to the consumer, which raises it in the training loop
            self._put(e)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop the thread and wait for it (it exits after the batch it is making); the generator
        is then the thread's, not the step's: use the last consumed batch's ``rng_after``.

        Waiting matters at exit: a daemon thread still inside torch when the interpreter finalises
        is ended by ``pthread_exit`` in a ``noexcept`` C++ frame, and the process aborts
        ("terminate called without an active exception") after training has succeeded."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
