"""The one column specification of the points table, derived from the metrics' declarations:
the console summary, the report's Markdown and HTML, and the CSV all render these rows and
columns, so a new metric's column appears everywhere at once (or nowhere, when it has no header)."""
from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import dataclass
from typing import Callable

from ..metrics import Output, declared_outputs
from ..record import Record, Run
from ..setting import Setting, sigma_text


# the points table's titled blocks, when it is too wide for the terminal: by declared output name
BLOCKS = (("set-level quality", ("fd_tagger", "kid_tagger", "fd_inception", "kid_inception", "clip_score",
                                                 "scorer_tv")),
          ("adherence, exact scorer", ("scorer_count_acc", "scorer_object_acc", "scorer_recall_rare",
                                       "scorer_leakage_common")),
          ("adherence, taggers", ("tag_precision", "tag_recall", "tag_recall_rare", "tag_leakage_common",
                                  "wd14_recall")),
          ("pure-noise", ("mean_leak_slope", "brightness_black", "brightness_white", "overshoot_frac",
                          "nonfinite_samples")))


@dataclass(frozen=True)
class Table:
    """Rows of (run, sweep point); columns: the settings, then every declared column with a value.
    ``keys``: how many leading columns identify a row; ``blocks``: titled groups of the other
    columns' indices, for a text too wide to read in one piece."""

    head: list[str]
    rows: list[list[str]]
    keys: int = 0
    blocks: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def text(self, width: int | None = None) -> str:
        """Fixed-width text; wider than ``width`` characters, one titled table per block, each
        repeating the key columns."""
        whole = self._text(range(len(self.head)))
        if width is None or not self.blocks or max(map(len, whole.splitlines())) <= width:
            return whole
        return "\n\n".join(f"{title}:\n" + self._text([*range(self.keys), *cols]) for title, cols in self.blocks)

    def _text(self, cols) -> str:
        cols = list(cols)
        widths = [max(len(self.head[i]), *(len(r[i]) for r in self.rows)) if self.rows else len(self.head[i])
                  for i in cols]
        line = lambda cells: "  ".join(cells[i].rjust(w) for i, w in zip(cols, widths))  # noqa: E731
        rule = ["-" * max((len(x) for x in [self.head[i], *(r[i] for r in self.rows)]), default=0)
                for i in range(len(self.head))]
        return "\n".join([line(self.head), line(rule), *map(line, self.rows)])

    def markdown(self) -> str:
        return "\n".join(["| " + " | ".join(self.head) + " |", "|" + "---|" * len(self.head),
                          *("| " + " | ".join(r) + " |" for r in self.rows)])

    def html(self, tint: Callable[[str], str | None] = lambda cell: None) -> str:
        """The table as HTML; ``tint(cell)`` may give a cell a colour (a verdict, say)."""
        def td(c: str) -> str:
            colour = tint(c)
            text = inline_html(c)
            return f"<td><b style='color:{colour}'>{text}</b></td>" if colour else f"<td>{text}</td>"
        head = "".join(f"<th>{inline_html(h)}</th>" for h in self.head)
        body = "".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in self.rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    def csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(self.head)
        w.writerows(self.rows)
        return out.getvalue()


def inline_html(text: str) -> str:
    """Escaped text with the two Markdown marks the report uses: **bold** and *italic*."""
    e = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"(?<![\w*])\*(\S.*?)\*", r"<i>\1</i>", e)


def cell(v: float | None, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, fmt)


def header(o: Output) -> str:
    """A column's header with its declared direction: ↓ lower is better, ↑ higher is better."""
    return o.column + {"lower": " ↓", "higher": " ↑"}.get(o.better or "", "")


def columns(record: Record, points: list[tuple[Run, Setting]]) -> list[Output]:
    """The declared columns that hold a value at one of ``points`` at least."""
    return [o for o in declared_outputs() if o.column and not o.per_image and
            any(record.scalar(r, s, o.name) is not None for r, s in points)]


def sweep_points(record: Record) -> list[tuple[Run, Setting]]:
    """The sampled points of every run: the sweep's, then the front-end presets'."""
    runs = sorted(record.runs.values(), key=lambda r: (r.seed, r.name))
    return [(r, s) for r in runs for kind in ("sweep", "frontend") for s in record.settings(r, kind)]


def _first_sampled(record: Record, run: Run, s: Setting) -> str:
    v = record.scalar(run, s, "first_sigma")
    return "—" if v is None else "∞" if math.isinf(v) else f"{v:.6g}"


def points_table(record: Record) -> Table:
    """σ₀: the start the point asked for (a front-end point: its preset); first σ: the σ it sampled
    first, as recorded with the point."""
    points = sweep_points(record)
    cols = columns(record, points)
    head = ["seed", "variant", "CFG", "σ₀", "first σ", *(header(o) for o in cols)]
    rows = [[str(r.seed), r.name, f"{s.cfg_scale:g}", s.frontend or sigma_text(s.start), _first_sampled(record, r, s),
             *(cell(record.scalar(r, s, o.name), o.fmt) for o in cols)] for r, s in points]
    return Table(head, rows, 5, blocks(cols, 5))


def blocks(cols: list[Output], offset: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``BLOCKS`` as column indices (after ``offset`` key columns); an undeclared output goes last."""
    placed = {name: title for title, names in BLOCKS for name in names}
    out = []
    for title in [t for t, _ in BLOCKS] + ["other"]:
        idx = tuple(offset + i for i, o in enumerate(cols) if placed.get(o.name, "other") == title)
        if idx:
            out.append((title, idx))
    return tuple(out)
