"""The forest plot of every claim at one look: the estimate, its interval, the threshold it is
decided against and the verdict's colour, one row per claim (each on its own axis: claims are in
different units). Read from report.json's claims, so a night's figure and the report agree."""
from __future__ import annotations

import io
import math

COLOURS = {"supported": "#1a7f37", "contradicted": "#cf222e", "equivalent": "#0969da", "futile": "#8250df",
           "inconclusive": "#9a6700"}
GREY = "#6e7781"


def bounds(c: dict) -> tuple[float, float, float, float] | None:
    """(lower, estimate, upper, one-sided level) of a report.json claim: the repeated interval at
    the deciding level where its look gave one, else the 95 % interval (level 0.025); None without
    an estimate, or for a claim an earlier look already ended (its interval belongs to that K)."""
    e = c.get("effect") or {}
    value = e.get("value")
    if value is None or not math.isfinite(value):
        return None
    decided = c.get("decided") or {}
    if decided.get("look") is not None and decided["look"] != c.get("n_seeds"):
        return None
    rci, level = e.get("rci") or [None, None], e.get("rci_level")
    if rci[0] is not None and rci[1] is not None and level:
        return rci[0], value, rci[1], level
    lo, hi = e.get("ci95") or [None, None]
    return (math.nan if lo is None else lo), value, (math.nan if hi is None else hi), 0.025


def threshold(c: dict) -> float:
    """What the claim's rule compares the effect with: its margin for the bounded rules, else 0."""
    rule = c.get("rule") or {}
    if rule.get("kind") in ("below", "above", "noninferiority", "equivalence") and c.get("margin") is not None:
        return float(c["margin"])
    return 0.0


def colour(verdict: str) -> str:
    return next((v for k, v in COLOURS.items() if verdict.startswith(k)), GREY)


def forest_png(claims: list[dict], title: str) -> bytes | None:
    """The figure as PNG bytes; None when no claim has an estimate. Each row: the interval at the
    level it was decided at (thin), the 95 % interval (thick), the estimate (dot), the threshold
    (dashed), on the claim's own axis and unit, labelled with its id, K and verdict."""
    rows = [(c, b) for c in claims if not c.get("parts") and (b := bounds(c)) is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.62 * len(rows) + 0.9), squeeze=False,
                             layout="constrained")
    for ax, (c, (lo, est, hi, level)) in zip(axes[:, 0], rows):
        col = colour(c.get("verdict", ""))
        c95 = (c.get("effect") or {}).get("ci95") or [None, None]
        xs = [v for v in (lo, hi, est, threshold(c), *c95) if v is not None and math.isfinite(v)]
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [0, 0], color=col, lw=1.2)
        if None not in c95:
            ax.plot(c95, [0, 0], color=col, lw=4, alpha=0.55, solid_capstyle="butt")
        ax.plot([est], [0], "o", color=col, ms=6)
        ax.axvline(threshold(c), color="black", lw=0.8, ls="--")
        pad = 0.08 * ((max(xs) - min(xs)) or 1.0)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        ax.set_yticks([0], [f"{c['id']}  K={c.get('n_seeds', '?')}  {c.get('verdict', '')[:40]}"], fontsize=7,
                      color=col)
        ax.tick_params(axis="x", labelsize=6, pad=1)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.suptitle(f"{title} — thin: the interval at the deciding level, thick: 95 %, dashed: the threshold",
                 fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return buf.getvalue()
