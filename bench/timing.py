"""Side-by-side timing for the bench scripts: two callables that each return their own wall time,
warmed up once, then alternated with the order swapped every repeat so drift (thermal, other
load on a shared box) hits both alike; medians are compared."""
from __future__ import annotations

import statistics
from typing import Callable


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
