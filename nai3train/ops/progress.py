"""Progress bars that suit where the output goes.

On a terminal: tqdm's bar, redrawn in place. Anywhere else (a log file, a CI log, a Prefect
worker's captured output): one plain line every ``LINE_EVERY_S`` seconds, never the ``\\r``
redraws that turned a 9-minute evaluation's log into 124 KB of one line. ``TQDM_DISABLE=1`` (what
``--no-progress`` sets) turns every bar off. Several units at once on one terminal (``flows/local_units.py``)
set ``NAI3_PROGRESS=lines`` and ``NAI3_UNIT``: each bar becomes plain lines led by its unit's label,
so two units' bars never overwrite each other. A bar whose rate collapses while the cores are
overcommitted says so once (``_Watched``).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable, TextIO

from tqdm.auto import tqdm

from .threads import torch_threads_in_use

LINE_EVERY_S = 10.0
WINDOW_S = 5.0  # the step rate is measured over windows this long
SLOW = 0.25  # a window below this fraction of the median window, with the cores overcommitted, is said


def _load() -> float:
    return os.getloadavg()[0]


class _Watched(tqdm):
    """A bar that says once when its rate collapses while other processes compete for the cores.

    On a 2-core box one busy process beside a two-thread training made it 10–40× slower, silently:
    OpenMP threads wait for each other at every barrier while one of them has no core. The bar
    compares each ``WINDOW_S`` window's rate with the median of the earlier ones; two windows in a
    row below ``SLOW`` of it, with the 1-minute load average above the core count, print one line
    naming the cause."""

    load: Callable[[], float] = staticmethod(_load)

    def __init__(self, *args: Any, say: TextIO | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self._say, self._win = say, (time.perf_counter(), self.n)
        self._rates: list[float] = []
        self._warned = False

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        now, (t0, n0) = time.perf_counter(), self._win
        if now - t0 >= WINDOW_S:
            self._window((self.n - n0) / (now - t0))
            self._win = (now, self.n)
        return shown

    def _window(self, rate: float) -> None:
        if self._warned or len(self._rates) < 3:
            self._rates.append(rate)
            return
        typical = statistics.median(self._rates)
        last = self._rates[-1]
        self._rates.append(rate)
        cores, load = os.cpu_count() or 1, self.load()
        # two slow windows in a row: one is a checkpoint save or a garbage collection
        if rate < SLOW * typical and last < SLOW * typical and load > cores:
            self._warned = True
            tqdm.write(f"{self.desc}: slowed to {rate:.3g} it/s from a median of {typical:.3g} it/s while the load "
                       f"average is {load:.1f} on {cores} cores: other processes compete for them, and this run's "
                       f"{torch_threads_in_use()} thread(s) wait for each other at every step. Give it the cores, fewer threads "
                       "(NAI3_THREADS=1, nai3 ablation --units), or OMP_WAIT_POLICY=PASSIVE for the next run.",
                       file=self._say or sys.stderr)


class _Lines:
    """A stream for tqdm that writes each refresh as its own line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, s: str) -> None:
        s = s.replace("\r", "").strip()
        if s:
            self.stream.write(s + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Any = None, *, desc: str, total: int | None = None, enabled: bool = True,
             stream: TextIO | None = None, **kw: Any) -> tqdm:
    """A bar over ``iterable`` (or ``total`` manual updates) that suits the output (module docstring)."""
    stream = stream or sys.stderr
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    unit = os.environ.get("NAI3_UNIT", "")
    desc = f"[{unit}] {desc}" if unit else desc
    if off or (stream.isatty() and os.environ.get("NAI3_PROGRESS") != "lines"):
        return _Watched(iterable, desc=desc, total=total, disable=off, leave=False, file=stream, say=stream, **kw)
    return _Watched(iterable, desc=desc, total=total, file=_Lines(stream), mininterval=LINE_EVERY_S, ascii=True,
                    dynamic_ncols=False, ncols=100, say=_Lines(stream), **kw)
