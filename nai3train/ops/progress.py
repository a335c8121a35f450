"""Progress bars that suit where the output goes.

On a terminal: tqdm's bar, redrawn in place. Anywhere else (a log file, a CI log, a Prefect
worker's captured output): one plain line every ``LINE_EVERY_S`` seconds, never the ``\\r``
redraws that turned a 9-minute evaluation's log into 124 KB of one line. ``TQDM_DISABLE=1`` (what
``--no-progress`` sets) turns every bar off. Several units at once on one terminal (``flows/local_units.py``)
set ``NAI3_PROGRESS=lines`` and ``NAI3_UNIT``: each bar becomes plain lines led by its unit's label,
so two units' bars never overwrite each other.
"""
from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LINE_EVERY_S = 10.0


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
        return tqdm(iterable, desc=desc, total=total, disable=off, leave=False, file=stream, **kw)
    return tqdm(iterable, desc=desc, total=total, file=_Lines(stream), mininterval=LINE_EVERY_S, ascii=True,
                dynamic_ncols=False, ncols=100, **kw)
