"""How many torch threads a process uses.

torch takes every core by default. Where several nai3 processes share a machine (a Prefect worker
running several flow runs, test workers, a run beside another heavy job), each must take its share:
oversubscribed threads slowed the demo's training on a 2-core box from 5.3 to 0.1–1 step/s.
``train.threads`` sets it for one run; ``NAI3_THREADS`` for every process started from a shell or
a worker (``NAI3_THREADS=$((cores / limit)) prefect worker start --limit N …``).
"""
from __future__ import annotations

import os

import torch

ENV = "NAI3_THREADS"


def torch_threads(configured: int = 0) -> int:
    """``configured`` (``train.threads``) if set, else ``$NAI3_THREADS``, else 0 (torch's default)."""
    if configured:
        return configured
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV}={raw!r} must be a positive whole number of threads")
    return int(raw)


def apply_threads(configured: int = 0) -> int:
    """Set torch's intra-op threads as ``torch_threads`` says; the number in use."""
    n = torch_threads(configured)
    if n and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


def torch_threads_in_use() -> int:
    """The intra-op threads torch runs with now (what a run's CPU time is its wall time times)."""
    return torch.get_num_threads()
