"""Console summary of an ablation: the points table as fixed-width text, and where to look next."""
from __future__ import annotations

import shutil

from nai3eval.reporting.columns import points_table
from nai3eval.record import Record
from nai3train.ops.secrets import redact


def format_table(record: Record, width: int | None = None) -> str:
    """The points table of ``record`` (columns: the metrics' declared outputs) as fixed-width text,
    in titled blocks (set-level quality, adherence, pure-noise) when wider than the terminal
    (``$COLUMNS``, else 120 without one); ``points.csv`` keeps every column in one table."""
    return points_table(record).text(width or shutil.get_terminal_size((120, 24)).columns)


def frontends_text(record: Record, spec) -> str:
    """The report's "In each front-end" table and its sentences, for the console ("" without front-end points)."""
    from nai3eval.reporting import frontends as fe

    rows = fe.rows(record)
    if not rows:
        return ""
    sentences = [line.replace("**", "") for line in fe.sentences(rows, spec)]
    return "\n\nIn each front-end (CFG nearest 5):\n" + fe.table(rows).text() + "\n" + "\n".join(sentences)


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"open {redact(uri)} in a browser"
