"""Console summary of an ablation: a fixed-width table of the computed metrics per point."""
from __future__ import annotations

import math

from nai3eval.results import PointResult
from nai3train.secrets import redact

COLUMNS = (("variant", "{}"), ("cfg_scale", "{:g}"), ("first_sigma", "{:g}"), ("fd_tagger", "{:.1f}"),
           ("kid_tagger", "{:.4g}"), ("tag_recall", "{:.3f}"), ("tag_precision", "{:.3f}"), ("scorer_object_acc", "{:.3f}"),
           ("mean_leak_slope", "{:.3f}"), ("brightness_black", "{:.3f}"), ("brightness_white", "{:.3f}"),
           ("nonfinite_samples", "{}"))


def _fmt(fmt: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return fmt.format(v)


def format_table(rows: list[PointResult]) -> str:
    head = [c for c, _ in COLUMNS]
    body = [[_fmt(f, getattr(r, c)) for c, f in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"open {redact(uri)} in a browser"
