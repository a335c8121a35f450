"""Side-by-side timing for the bench scripts: two callables that each return their own wall time,
warmed up once, then alternated with the order swapped every repeat so drift (thermal, other
load on a shared box) hits both alike; medians are compared."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def side_by_side(first: Callable[[], float], second: Callable[[], float], repeats: int) -> tuple[float, float]:
    """(median seconds of ``first``, median seconds of ``second``)."""
    first(), second()  # warm-up
    a, b = [], []
    for i in range(repeats):
        if i % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
    return statistics.median(a), statistics.median(b)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measured_peak(device: torch.device | str, dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of an n×n×n matmul in ``dtype`` on ``device``: the denominator of an MFU measured in
    the same run as its numerator, not a datasheet figure."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def warm_training_set(folder: str | Path, size: int, resolution: int):
    """(dataset, vocabulary) of ``size`` synthesised benchmark images under ``folder``, every image
    decoded into the LRU as the trainer's first epoch leaves it (``data_throughput.py``); the folder
    must outlive the dataset (images are decoded when a batch asks)."""
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize

    synthesize(str(folder), size, 8, resolution, seed=0)
    data = BucketedDataset.from_scan(scan_folder(Path(folder) / "train"), default_buckets(resolution))
    for i in range(len(data)):
        data.cover(i)
    return data, Vocabulary.build(data.tags)


def square_batch(data, vocab, resolution: int, max_tags: int):
    """(x0, time_ids, tag ids) of every square image: the bare loops' in-memory batch source."""
    square = [i for i in range(len(data)) if data.buckets[int(data.bucket_of[i])].width == resolution
              and data.buckets[int(data.bucket_of[i])].height == resolution]
    x0, time_ids = data.batch(square, None)
    return x0, time_ids, vocab.ids([data.tags[i] for i in square], max_tags)
