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


@dataclass(frozen=True)
class Table:
    """Rows of (run, sweep point); columns: the settings, then every declared column with a value."""

    head: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.head)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        return "\n".join([line(self.head), line(["-" * w for w in widths]), *map(line, self.rows)])

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
    runs = sorted(record.runs.values(), key=lambda r: (r.seed, r.name))
    return [(r, s) for r in runs for s in record.settings(r, "sweep")]


def points_table(record: Record) -> Table:
    points = sweep_points(record)
    cols = columns(record, points)
    head = ["seed", "variant", "CFG", "σ₀", *(header(o) for o in cols)]
    rows = [[str(r.seed), r.name, f"{s.cfg_scale:g}", sigma_text(s.start),
             *(cell(record.scalar(r, s, o.name), o.fmt) for o in cols)] for r, s in points]
    return Table(head, rows)
