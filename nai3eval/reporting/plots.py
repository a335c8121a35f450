"""The report's figures, read from the measurement record (the first training seed): metrics
against CFG, the FD–adherence trade-off, the mean-leak scatter, the brightness histogram, and
sample-grid matrices (variant × CFG, variant × start)."""
from __future__ import annotations

from pathlib import Path

from nai3train.ops.atomic import atomic_write, rendered
from typing import Callable

from ..metrics import declared_outputs
from ..record import Record, Run
from ..setting import Setting, sigma_text
from .sinks import grid_name


def _num(v: float | None) -> float:
    return float("nan") if v is None else v


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:  # a figure with nothing measured has no legend to draw
        ax.legend(fontsize=size)


def _save(fig, path: Path, paths: dict[str, Path]) -> None:
    fig.tight_layout()
    atomic_write(path, rendered(lambda f: fig.savefig(f, dpi=110, format="png")))
    paths[path.stem] = path


def _label(metric: str) -> str:
    """An axis label from the metric's declaration: its unit and which direction is better."""
    o = next((o for o in declared_outputs() if o.name == metric), None)
    if o is None:
        return metric
    return f"{o.column or metric} ({o.unit}; {o.better} is better)" if o.better else f"{o.column or metric} ({o.unit})"


def _log_if_decades(ax, values: list[float], axis: str = "y") -> None:
    """A log axis where positive values span more than two decades (KID, FD), else linear."""
    pos = [v for v in values if v == v and v > 0]
    if pos and len(pos) == len([v for v in values if v == v]) and max(pos) / min(pos) > 100:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _vs_cfg(plt, record: Record, runs: list[Run], metric: str, out: Path, paths: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    seen: list[float] = []
    for r in runs:
        pts = record.settings(r, "sweep")
        for first in sorted({s.start for s in pts}):
            row = sorted((s for s in pts if s.start == first), key=lambda s: s.cfg_scale)
            ys = [_num(record.scalar(r, s, metric)) for s in row]
            seen += ys
            ax.plot([s.cfg_scale for s in row], ys, marker="o", label=f"{r.name} σ₀={sigma_text(first)}")
    _log_if_decades(ax, seen)
    ax.set_xlabel("CFG scale")
    ax.set_ylabel(_label(metric))
    _legend(ax, 7)
    _save(fig, out / f"{metric}_vs_cfg.png", paths)
    plt.close(fig)


def _pareto(plt, record: Record, runs: list[Run], out: Path, paths: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        pts = record.settings(r, "sweep")
        xs = [_num(record.scalar(r, s, "tag_recall")) for s in pts]
        ys = [_num(record.scalar(r, s, "fd_tagger")) for s in pts]
        ax.scatter(xs, ys, label=r.name)
        for s, x, y in zip(pts, xs, ys):
            ax.annotate(f"{s.cfg_scale:g}/{sigma_text(s.start)}", (x, y), fontsize=6)
    _log_if_decades(ax, [_num(record.scalar(r, s, "fd_tagger")) for r in runs for s in record.settings(r, "sweep")])
    ax.set_xlabel(_label("tag_recall"))
    ax.set_ylabel(_label("fd_tagger"))
    ax.set_title("FD–adherence trade-off (labels: CFG/σ₀)")
    _legend(ax, 7)
    _save(fig, out / "pareto_fd_recall.png", paths)
    plt.close(fig)


def _leak_and_brightness(plt, record: Record, runs: list[Run], cfg: float, out: Path, paths: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        for s in (s for s in record.settings(r, "sweep") if s.cfg_scale == cfg):
            x, y = record.per_image(r, s, "start_mean"), record.per_image(r, s, "out_mean")
            if x is not None and y is not None:
                ax.scatter(x[0], y[0], s=6, label=f"{r.name} σ₀={sigma_text(s.start)} slope "
                                                  f"{_num(record.scalar(r, s, 'mean_leak_slope')):.2f}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_ylim(-1.5, 1.5)  # model space is [−1, 1]; ε blow-ups leave the frame
    ax.set_xlabel("starting-noise mean (model units)")
    ax.set_ylabel("output image mean")
    _legend(ax, 6)
    _save(fig, out / "mean_leak_scatter.png", paths)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        s = record.sweep_at(r, cfg, "max")
        got = record.per_image(r, s, "brightness") if s is not None else None
        if got is not None:
            ax.hist(got[0], bins=20, range=(0, 1), alpha=0.5, label=f"{r.name} {s.name}")
    ax.set_xlabel("output mean brightness (0 black, 1 white)")
    ax.set_ylabel("images")
    _legend(ax, 7)
    _save(fig, out / "brightness_histogram.png", paths)
    plt.close(fig)


def _grid_matrix(plt, runs: list[Run], grids: dict[str, Path], cols: list, pick: Callable[[Run, float], Setting | None],
                 col_label: Callable[[float], str], title: str, path: Path) -> bool:
    """A figure of sample grids: one row per run, one column per value of ``cols``."""
    cells = [[grids.get(grid_name(r, s)) if (s := pick(r, c)) else None for c in cols] for r in runs]
    if not any(c is not None for row in cells for c in row):
        return False
    fig, axes = plt.subplots(len(runs), len(cols), figsize=(2.6 * len(cols), 2.0 * len(runs)), squeeze=False)
    for i, r in enumerate(runs):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            if cells[i][j] is not None:
                ax.imshow(plt.imread(cells[i][j]), interpolation="nearest")
            if i == 0:
                ax.set_title(col_label(c), fontsize=8)
            if j == 0:
                ax.text(-0.05, 0.5, r.name, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, rendered(lambda f: fig.savefig(f, dpi=110, format="png")))
    plt.close(fig)
    return True


def _grids(plt, record: Record, runs: list[Run], cfg: float, grids: dict[str, Path], out: Path, paths: dict) -> None:
    scales = record.cfg_scales()
    firsts = sorted({s.start for r in runs for s in record.settings(r, "sweep")})
    at = lambda r, f: next((s for s in record.settings(r, "sweep") if s.cfg_scale == cfg and s.start == f),  # noqa: E731
                           None)
    for name, cols, pick, label, title in (
            ("samples_variant_x_cfg", scales, lambda r, c: record.sweep_at(r, c, "max"), lambda c: f"CFG {c:g}",
             "variant × CFG (highest start σ)"),
            ("samples_variant_x_sigma", firsts, at, lambda f: f"σ₀ {sigma_text(f)}",
             f"variant × starting σ (CFG {cfg:g})")):
        if _grid_matrix(plt, runs, grids, cols, pick, label, title, out / f"{name}.png"):
            paths[name] = out / f"{name}.png"


def make_plots(record: Record, out: Path, grids: dict[str, Path] | None = None) -> dict[str, Path]:
    """Every figure for the first training seed's runs, by name."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    runs = record.runs_at(record.seeds[0]) if record.seeds else []
    paths: dict[str, Path] = {}
    cfg = record.nearest_cfg(5.0)
    if not runs or cfg is None:
        return paths
    for metric in ("fd_tagger", "kid_tagger", "tag_recall"):
        _vs_cfg(plt, record, runs, metric, out, paths)
    _pareto(plt, record, runs, out, paths)
    _leak_and_brightness(plt, record, runs, cfg, out, paths)
    if grids:
        _grids(plt, record, runs, cfg, grids, out, paths)
    return paths
