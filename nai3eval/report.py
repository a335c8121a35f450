"""The claims report: every claim of the pre-registered spec (``configs/claims.yaml``, decided in
``nai3eval/claims.py``) with its estimand, arms, per-seed contrasts, recipe-level interval, rule,
margin and verdict; the checks; the full points table; plots and sample grids. Markdown, HTML and
``report.json`` (the schema is in the README).
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from . import analysis as A
from .claims import ClaimResult, ClaimsOutcome, ClaimsSpec, evaluate_claims, instrument_accuracy
from .results import VariantResult


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _cfg_star(results: list[VariantResult]) -> float:
    scales = sorted({p.cfg_scale for r in results for p in r.points})
    return min(scales, key=lambda c: abs(c - 5.0))


def _g(v: float | None, fmt: str = ".4g") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, fmt)


def _rule_text(c: ClaimResult, alpha: float) -> str:
    r = c.spec.rule
    if r.kind == "superiority":
        text = f"superiority ({'> 0' if r.direction == 'greater' else '< 0'}, one-sided α {alpha:g})"
    elif r.kind == "equivalence":
        text = f"equivalence within ±{r.margin:g} (TOST, 90 % interval)"
    elif r.kind == "noninferiority":
        text = f"non-inferiority: harm's upper bound < {r.margin:g}"
    elif r.kind in ("below", "above"):
        text = f"{'upper' if r.kind == 'below' else 'lower'} bound {'<' if r.kind == 'below' else '>'} {r.margin:g}"
    else:
        text = "check (passed/failed, no interval)" + (f", tolerance {r.margin:g}" if r.margin else "")
    if c.holm_alpha is not None and c.holm_alpha == c.holm_alpha:
        text += f"; Holm level {c.holm_alpha:.4g}"
    return text


def claim_row(c: ClaimResult, alpha: float) -> dict[str, str]:
    """One claim as the strings both renderings show."""
    e = c.effect
    lo, hi = e.interval(0.95)
    per = "; ".join(f"s{d.seed}: {_g(d.value)} ({_g(d.se, '.2g')})" for d in e.per_seed) or "—"
    eff = f"{_g(e.value)} [{_g(lo)}, {_g(hi)}]" if e.per_seed else "—"
    arms = ", ".join(f"{k} = {v}" for k, v in c.arms.items()) or "—"
    return {"id": c.id, "title": c.spec.title, "role": c.spec.role, "verdict": c.verdict,
            "K": str(e.n_seeds) if not c.parts else "—", "per_seed": per, "effect": eff, "s_w": _g(e.s_w, ".3g"),
            "tau": _g(e.tau, ".3g"), "rule": _rule_text(c, alpha), "estimand": c.spec.estimand,
            "unit": c.spec.unit, "arms": arms + (f"; CFG {c.cfg:g}" if c.cfg is not None else ""),
            "why": c.decision.reason or c.detail}


def _intro(o: ClaimsOutcome, k: int) -> str:
    first = o.spec.looks[0]
    level = (f"recipe-level verdicts at the looks K = {', '.join(map(str, o.spec.looks))}" if k >= first else
             f"every verdict is checkpoint-level (K = {k} < {first}): no recipe-level word is used")
    return (f"Decided by the pre-registered spec `{Path(o.spec.path).name}` (version {o.spec.version}, sha256 "
            f"`{o.spec.sha256}`). Training seeds: {k}; {level}. Per seed k the paired contrast D_k with a "
            f"delete-one-prompt jackknife SE; at recipe level D̄ ± t_(K−1)·sd(D_k)/√K; Holm across the primary "
            f"claims at one-sided α = {o.spec.alpha:g}.")


FEEDS = {"exact scorer": "C4 object counts; C6 rare-tag recall and common-tag leakage; scorer_* adherence",
         "domain tagger": "FD/KID in its feature space (C5, C6-kid); tag recall and leakage (C6 without the scorer)"}


def instrument_rows(results: list[VariantResult]) -> list[tuple[str, str, str]]:
    """(instrument, its accuracy on the held-out real images, the metrics it feeds)."""
    return [(name, ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), FEEDS.get(name, ""))
            for name, figures in instrument_accuracy(results).items()]


COLUMNS = (("claim", "id"), ("role", "role"), ("verdict", "verdict"), ("K", "K"), ("D_k (SE) per seed", "per_seed"),
           ("D̄ [95 % CI]", "effect"), ("s_w", "s_w"), ("τ̂", "tau"), ("rule", "rule"))


def render_markdown(o: ClaimsOutcome, results: list[VariantResult], plots: dict[str, Path],
                    grids: dict[str, Path], k: int) -> str:
    rows = [claim_row(c, o.spec.alpha) for c in o.claims]
    lines = ["# nai3 claims report", "", _intro(o, k), "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"**{r[f]}** {r['title']}" if f == "id" else r[f] for _, f in COLUMNS) + " |"
              for r in rows]
    lines += ["", "## Checks", "", "A property of the code or the data, reported as such: not evidence, no interval.",
              "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| **{c.id}** {c.spec.title} | {c.verdict} | {c.detail or c.decision.reason} |" for c in o.checks]
    lines += ["", "## Instruments", "", "Each instrument's accuracy on the held-out real images, beside what it "
              "measures: an effect read through an instrument is attenuated by its errors.", "",
              "| instrument | held-out accuracy | feeds |", "|---|---|---|"]
    lines += [f"| {n} | {a} | {f} |" for n, a, f in instrument_rows(results)]
    lines += ["", "## Claims in detail", ""]
    for r in rows:
        lines += [f"### {r['id']}: {r['title']} ({r['role']})", "", f"*Estimand:* {r['estimand']} (unit: {r['unit']})",
                  "", f"*Arms:* {r['arms']}", "", f"*Per seed:* {r['per_seed']}", "",
                  f"*Effect:* {r['effect']}, s_w {r['s_w']}, τ̂ {r['tau']}", "", f"*Rule:* {r['rule']}", "",
                  f"*Verdict:* **{r['verdict']}**" + (f" — {r['why']}" if r["why"] else ""), ""]
    lines += ["## Evaluation points", "", "Tagger columns: the domain tagger; scorer columns: the exact scorer (the "
              "benchmark's primary adherence instrument; empty on other data).", "",
              "| seed | variant | point | FD | KID | recall | rare recall | leakage | scorer object | scorer count | "
              "scorer rare recall | scorer leakage | leak slope | non-finite |", "|" + "---|" * 14]
    for res in results:
        for p in res.points:
            lines.append(f"| {res.seed} | {res.variant} | {p.name} | {_num(p.fd_tagger):.4g} | {_num(p.kid_tagger):.3g} | "
                         f"{_num(p.tag_recall):.3f} | {_num(p.tag_recall_rare):.3f} | "
                         f"{_num(p.tag_leakage_common):.3f} | {_num(p.scorer_object_acc):.3f} | "
                         f"{_num(p.scorer_count_acc):.3f} | {_num(p.scorer_recall_rare):.3f} | "
                         f"{_num(p.scorer_leakage_common):.3f} | {_num(p.mean_leak_slope):.3f} | {p.nonfinite_samples} |")
    lines += ["", "## Plots", ""] + [f"![{k_}]({v.name})" for k_, v in plots.items()]
    if grids:
        lines += ["", "## Sample grids", ""] + [f"**{k_}**\n\n![{k_}]({v.name})\n" for k_, v in grids.items()]
    return "\n".join(lines) + "\n"


COLOUR = {A.SUPPORTED: "#1a7f37", A.EQUIVALENT: "#1a7f37", A.CHECK_PASSED: "#1a7f37", A.CONTRADICTED: "#cf222e",
          A.CHECK_FAILED: "#cf222e", A.INCONCLUSIVE: "#9a6700", A.NOT_MEASURED: "#6e7781"}


def _colour(verdict: str) -> str:
    return COLOUR.get(verdict.removeprefix("checkpoint-level: "), "#6e7781")


def render_html(o: ClaimsOutcome, results: list[VariantResult], plots: dict[str, Path], grids: dict[str, Path],
                k: int) -> str:
    e = html.escape
    rows = [claim_row(c, o.spec.alpha) for c in o.claims]
    head = "".join(f"<th>{e(h)}</th>" for h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(
        f"<td><b>{e(r['id'])}</b> {e(r['title'])}</td>" if f == "id" else
        f"<td style='color:{_colour(r['verdict'])}'><b>{e(r['verdict'])}</b></td>" if f == "verdict" else
        f"<td>{e(r[f])}</td>" for _, f in COLUMNS) + "</tr>" for r in rows)
    checks = "".join(f"<tr><td><b>{e(c.id)}</b> {e(c.spec.title)}</td><td style='color:{_colour(c.verdict)}'>"
                     f"{e(c.verdict)}</td><td>{e(c.detail or c.decision.reason)}</td></tr>" for c in o.checks)
    instruments = "".join(f"<tr><td>{e(n)}</td><td>{e(a)}</td><td>{e(f)}</td></tr>" for n, a, f in
                          instrument_rows(results))
    sections = "".join(
        f"<h3>{e(r['id'])}: {e(r['title'])} ({e(r['role'])})</h3><p><i>Estimand:</i> {e(r['estimand'])} (unit: "
        f"{e(r['unit'])})<br><i>Arms:</i> {e(r['arms'])}<br><i>Per seed:</i> {e(r['per_seed'])}<br><i>Effect:</i> "
        f"{e(r['effect'])}, s_w {e(r['s_w'])}, τ̂ {e(r['tau'])}<br><i>Rule:</i> {e(r['rule'])}<br><i>Verdict:</i> "
        f"<b style='color:{_colour(r['verdict'])}'>{e(r['verdict'])}</b> {e(r['why'])}</p>" for r in rows)
    points = "".join(f"<tr><td>{res.seed}</td><td>{e(res.variant)}</td><td>{e(p.name)}</td><td>{_num(p.fd_tagger):.4g}"
                     f"</td><td>{_num(p.kid_tagger):.3g}</td><td>{_num(p.tag_recall):.3f}</td><td>"
                     f"{_num(p.mean_leak_slope):.3f}</td><td>{p.nonfinite_samples}</td></tr>"
                     for res in results for p in res.points)
    imgs = "".join(f"<figure><img src='{v.name}' alt='{e(k_)}'><figcaption>{e(k_)}</figcaption></figure>"
                   for k_, v in {**plots, **grids}.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>nai3 claims report</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}figure{display:inline-block;margin:8px}"
            "img{max-width:520px;image-rendering:pixelated}</style></head><body><h1>nai3 claims report</h1>"
            f"<p>{e(_intro(o, k))}</p><table><tr>{head}</tr>{body}</table><h2>Checks</h2><table><tr><th>check</th>"
            f"<th>result</th><th>detail</th></tr>{checks}</table><h2>Instruments</h2><table><tr><th>instrument</th>"
            f"<th>held-out accuracy</th><th>feeds</th></tr>{instruments}</table><h2>Claims in detail</h2>{sections}"
            "<h2>Evaluation points</h2><table><tr><th>seed</th><th>variant</th><th>point</th><th>FD</th><th>KID</th>"
            f"<th>recall</th><th>leak slope</th><th>non-finite</th></tr>{points}</table><h2>Plots and samples</h2>"
            f"{imgs}</body></html>")


def write_report(results: list[VariantResult], out: str | Path, data: dict | None = None,
                 grids: dict[str, Path] | None = None, spec: ClaimsSpec | None = None
                 ) -> tuple[ClaimsOutcome, Path]:
    """Decide every claim over every training seed in ``results`` and write report.md, report.html,
    report.json and the plots under ``out``. ``data``: the training set's measurements (bucketing,
    normalisation) for the checks. Plots show the first training seed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcome = evaluate_claims(results, spec, data)
    k = len({r.seed for r in results})
    first = min((r.seed for r in results), default=0)
    shown = [r for r in results if r.seed == first]
    grids = grids or {}
    plots = make_plots(shown, out, grids) if shown else {}
    (out / "report.md").write_text(render_markdown(outcome, results, plots, grids, k))
    (out / "report.html").write_text(render_html(outcome, results, plots, grids, k))
    (out / "report.json").write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
    return outcome, out


def summary_lines(o: ClaimsOutcome) -> list[str]:
    lines = [f"claims spec {Path(o.spec.path).name} v{o.spec.version} sha256 {o.spec.sha256[:16]}…"]
    for c in [*o.claims, *o.checks]:
        r = claim_row(c, o.spec.alpha)
        lines.append(f"{c.id:<11} {c.verdict:>30}  {r['effect'] if c.effect.per_seed else '—':>32}  {c.spec.title}")
    return lines


def _grid_matrix(results: list[VariantResult], grids: dict[str, Path], cols: list, pick, col_label, title: str, path: Path,
                 plt) -> bool:
    """A figure of sample grids: one row per variant, one column per value of ``cols``."""
    cells = [[grids.get(f"{r.variant}__{p.name}") if (p := pick(r, c)) else None for c in cols]
             for r in results]
    if not any(c is not None for row in cells for c in row):
        return False
    fig, axes = plt.subplots(len(results), len(cols), figsize=(2.6 * len(cols), 2.0 * len(results)), squeeze=False)
    for i, r in enumerate(results):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            if cells[i][j] is not None:
                ax.imshow(plt.imread(cells[i][j]), interpolation="nearest")
            if i == 0:
                ax.set_title(col_label(c), fontsize=8)
            if j == 0:
                ax.text(-0.05, 0.5, r.variant, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def make_plots(results: list[VariantResult], out: Path, grids: dict[str, Path] | None = None) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def save(fig, name):
        paths[name] = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)

    for metric, label in (("fd_tagger", "domain FD (lower is better)"), ("tag_recall", "tag recall")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in results:
            for first in sorted({p.first_sigma for p in r.points}):
                pts = sorted((p for p in r.points if p.first_sigma == first), key=lambda p: p.cfg_scale)
                ax.plot([p.cfg_scale for p in pts], [_num(getattr(p, metric)) for p in pts], marker="o",
                        label=f"{r.variant} σ₀={first:g}")
        ax.set_xlabel("CFG scale")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        save(fig, f"{metric}_vs_cfg")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.scatter([_num(p.tag_recall) for p in r.points], [_num(p.fd_tagger) for p in r.points], label=r.variant)
        for p in r.points:
            ax.annotate(f"{p.cfg_scale:g}/{p.first_sigma:g}", (_num(p.tag_recall), _num(p.fd_tagger)), fontsize=6)
    ax.set_xlabel("tag recall (higher is better)")
    ax.set_ylabel("domain FD (lower is better)")
    ax.set_title("FD–adherence trade-off (labels: CFG/σ₀)")
    ax.legend(fontsize=7)
    save(fig, "pareto_fd_recall")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        for p in r.points:
            if p.cfg_scale == _cfg_star(results):
                ax.scatter(p.per_image.start_mean, p.per_image.out_mean, s=6,
                           label=f"{r.variant} σ₀={p.first_sigma:g} slope {_num(p.mean_leak_slope):.2f}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_ylim(-1.5, 1.5)  # model space is [−1, 1]; ε blow-ups leave the frame
    ax.set_xlabel("starting-noise mean (model units)")
    ax.set_ylabel("output image mean")
    ax.legend(fontsize=6)
    save(fig, "mean_leak_scatter")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        p = max((p for p in r.points if p.cfg_scale == _cfg_star(results)), key=lambda p: p.first_sigma)
        ax.hist(p.per_image.brightness, bins=20, range=(0, 1), alpha=0.5, label=f"{r.variant} {p.name}")
    ax.set_xlabel("output mean brightness (0 black, 1 white)")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    save(fig, "brightness_histogram")
    if grids:
        cfg = _cfg_star(results)
        scales = sorted({p.cfg_scale for r in results for p in r.points})
        firsts = sorted({p.first_sigma for r in results for p in r.points})
        top = lambda r, c: max((p for p in r.points if p.cfg_scale == c), key=lambda p: p.first_sigma,  # noqa: E731
                               default=None)
        at = lambda r, f: next((p for p in r.points if p.cfg_scale == cfg and p.first_sigma == f), None)  # noqa: E731
        for name, cols, pick, label, title in (
                ("samples_variant_x_cfg", scales, top, lambda c: f"CFG {c:g}", "variant × CFG (highest start σ)"),
                ("samples_variant_x_sigma", firsts, at, lambda f: f"σ₀ {f:g}", f"variant × starting σ (CFG {cfg:g})")):
            if _grid_matrix(results, grids, cols, pick, label, title, out / f"{name}.png", plt):
                paths[name] = out / f"{name}.png"
    return paths



