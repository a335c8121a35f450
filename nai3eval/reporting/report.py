"""The claims report: every claim of the pre-registered spec (``configs/claims.yaml``, decided in
``nai3eval.claims``) with its estimand, arms, per-seed contrasts, recipe-level interval, rule,
margin and verdict; the checks; the instruments; the points table; plots and sample grids.

Markdown and HTML render one list of sections (``sections``), so they show the same things;
``report.json`` holds the decisions (the schema: docs/claims.md, "report.json").
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nai3train.ops.atomic import atomic_write

from ..claims import ClaimResult, ClaimsOutcome, ClaimsSpec, evaluate_claims, instrument_accuracy
from ..claims.decide import instrument_disturbance
from ..claims.sequential import nominal_levels
from ..claims.ledger import Ledger
from ..claims import statistics as A
from .columns import Table, inline_html, points_table
from . import frontends as fe
from .provenance import Provenance
from ..record import Record


def _g(v: float | None, fmt: str = ".4g") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, fmt)


def _rule_text(c: ClaimResult, alpha: float) -> str:
    r = c.spec.rule
    margin = c.planning.margin(c.spec) if c.planning is not None else r.margin
    if r.kind == "superiority":
        text = f"superiority ({'> 0' if r.direction == 'greater' else '< 0'}, one-sided, α {alpha:g} spent over the looks)"
        if r.sesoi:
            text += f"; equivalent inside ±{r.sesoi:g} (smallest effect of interest, TOST)"
    elif r.kind == "equivalence":
        text = f"equivalence within ±{margin:g} (TOST)"
    elif r.kind == "null_twin":
        text = (f"null twin: a fault when the twin differs (two-sided, α {alpha:g} over the looks); equivalent "
                f"within ±{margin:g} ({r.sesoi_of}'s smallest effect of interest)")
    elif r.kind == "noninferiority":
        text = f"non-inferiority: harm's upper bound < {margin:g}"
    elif r.kind in ("below", "above"):
        text = f"{'upper' if r.kind == 'below' else 'lower'} bound {'<' if r.kind == 'below' else '>'} {margin:g}"
    else:
        text = "check (passed/failed, no interval)" + (f", tolerance {r.margin:g}" if r.margin else "")
    if c.level is not None and c.level == c.level:
        text += f"; {'Holm level' if c.spec.role == 'primary' else 'level'} {c.level:.3g} at K = {c.look}"
    return text


def _power_text(c: ClaimResult) -> str:
    """The registered design's power against the smallest effect of interest at the claim's Holm
    level, with its expected K (the spread at its upper bound); a null twin's power against a
    fault as large as its margin; "futile" once declared; "—" where nothing is planned."""
    if c.decision.verdict == A.FUTILE:
        return "futile"
    twin = c.twin_power()
    if twin is not None:
        return f"{twin:.2f} against a fault of ±{c.planning.margin(c.spec):g}; P(fault | correct) ≤ {c.planning.alpha:g}"
    d = c.design()
    return f"{d[0]:.2f} (E[K] {d[1]:.1f} of {c.k_max})" if d else "—"


def _ratio_text(c: ClaimResult) -> str:
    v, lo, hi = c.variance_ratio()
    return "—" if v != v else f"{_g(v, '.2g')} [{_g(lo, '.2g')}, {_g(hi, '.2g')}]"


def _seed_value(d) -> str:
    """D_k (SE), or the bound a censored D_k is known by."""
    if not d.censored:
        return f"{_g(d.value)} ({_g(d.se, '.2g')})"
    lo, hi = d.bounds
    return f"≥ {_g(lo)} (censored)" if math.isfinite(lo) else f"≤ {_g(hi)} (censored)" if math.isfinite(hi) else \
        "unbounded (censored both ways)"


def claim_row(c: ClaimResult, alpha: float) -> dict[str, str]:
    """One claim as the strings every rendering shows."""
    e = c.effect
    lo, hi = e.interval(0.95)
    rlo, rhi = c.rci()
    per = "; ".join(f"s{d.seed}: {_seed_value(d)}" for d in e.per_seed) or "—"
    rci = f" [{_g(rlo)}, {_g(rhi)}] at level {c.level:.3g}" if c.level and rlo == rlo else ""
    eff = f"{_g(e.value)}{rci}; 95 %: [{_g(lo)}, {_g(hi)}]" if e.per_seed else "—"
    arms = ", ".join(f"{k} = {v}" for k, v in c.arms.items()) or "—"
    return {"id": c.id, "title": c.spec.title, "role": c.spec.role, "verdict": c.verdict,
            "K": (f"{c.look if c.look else e.n_seeds} of {c.k_max}" if c.k_max else str(e.n_seeds))
            if not c.parts else "—", "per_seed": per, "effect": eff, "s_w": _g(e.s_w, ".3g"),
            "tau": _g(e.tau, ".3g"), "ratio": _ratio_text(c), "power": _power_text(c),
            "rule": _rule_text(c, alpha), "estimand": c.spec.estimand,
            "unit": c.spec.unit, "arms": arms + (f"; CFG {c.cfg:g}" if c.cfg is not None else ""),
            "why": "; ".join(t for t in (c.decision.reason, c.detail, *(
                f"a look of another estimand under this id (block {o.block[:12]}, K = {o.look}: {o.verdict}) is not "
                "this claim's" for o in c.others[:3])) if t)}


def _intro(o: ClaimsOutcome, k: int) -> str:
    sp = o.spec
    levels = nominal_levels(tuple(range(sp.first_look, sp.k_max + 1)), sp.k_max, sp.alpha, sp.spending)
    plan = ", ".join(f"K = {x}: {a:.2g}" for x, a in zip(range(sp.first_look, sp.k_max + 1), levels))
    level = (f"a look at every K from {sp.first_look} to K_max ({sp.k_max} unless a claim registers its own), α "
             f"{sp.alpha:g} one-sided spent by the Lan–DeMets {sp.spending.replace('_', '–')}-type function of K/K_max "
             f"(a claim looked at every night: {plan}); every look is recorded in the ledger and a final verdict "
             "is never decided again" if k >= sp.first_look else
             f"K = {k} < {sp.first_look}: every claim shows its interval only, no verdict word")
    return (f"Decided by the pre-registered spec `{Path(sp.path).name}` (version {sp.version}, sha256 "
            f"`{sp.sha256}`). Training seeds: {k}; {level}. Per seed k the paired contrast D_k with a "
            f"delete-one-prompt jackknife SE; at recipe level D̄ ± t_(K−1)·sd(D_k)/√K, shown as the repeated "
            f"confidence interval at the level that decided (the 95 % interval beside it, labelled). The t test "
            f"assumes the D_k are normal: a supported or contradicted that does not survive dropping any one seed "
            f"stays open until K_max. Holm runs across the primaries in each direction (supported and "
            f"contradicted); other claims' contradictions are unadjusted. Power: the registered design's, against "
            f"the smallest effect of interest at the claim's Holm level, the spread at its "
            f"{sp.futility.sd_confidence:.0%} upper bound; futile: conditional power at K_max below "
            f"{sp.futility.conditional_power:g}. τ̂²/s_w² with its 90 % F interval.")


FEEDS = {"exact scorer": "C4 object counts; C6 rare-tag recall and common-tag leakage; scorer_* adherence",
         "domain tagger": "FD/KID in its feature space (C5, C6-kid); tag recall and leakage (C6 without the scorer)",
         "inception": "FD/KID in the standard FID features (the points table, 'In each front-end'); decides no claim"}


def _disturbance_text(d: dict | None) -> str:
    if d is None:
        return "—"
    word = "passed" if d["passed"] else "failed: " + "; ".join(d["failures"])
    return (f"{word} (split KID {d['split_kid']:.3g} ± {d['split_kid_std']:.2g}, pure noise KID "
            f"{d['pure_noise_kid']:.3g}; monotone: noise {'yes' if d['monotone_noise'] else 'no'}, blur "
            f"{'yes' if d['monotone_blur'] else 'no'})")


def instrument_rows(record: Record) -> list[tuple[str, str, str, str]]:
    """(instrument, its accuracy on the held-out real images, its disturbance test, what it feeds)."""
    acc, dist = instrument_accuracy(record), instrument_disturbance(record)
    return [(name, ", ".join(f"{k} {v:.3f}" for k, v in acc.get(name, {}).items()) or "—",
             _disturbance_text(dist.get(name)), FEEDS.get(name, "")) for name in dict.fromkeys([*acc, *dist])]


CLAIM_COLUMNS = (("claim", "id"), ("role", "role"), ("verdict", "verdict"), ("K", "K"),
                 ("D_k (SE) per seed", "per_seed"), ("D̄ [repeated CI at its level]; 95 %", "effect"), ("s_w", "s_w"), ("τ̂", "tau"),
                 ("τ̂²/s_w² [90 %]", "ratio"), ("design power at SESOI", "power"), ("rule", "rule"))
DETAIL = (("Estimand", "estimand"), ("Unit", "unit"), ("Arms", "arms"), ("Per seed", "per_seed"),
          ("Effect", "effect"), ("Rule", "rule"), ("Verdict", "verdict"), ("Why", "why"))


@dataclass
class Section:
    """A titled part of the report: paragraphs, a table, captioned images (Markdown and HTML alike)."""

    title: str
    text: list[str] = field(default_factory=list)
    table: Table | None = None
    images: dict[str, Path] = field(default_factory=dict)
    level: int = 2


def sections(o: ClaimsOutcome, record: Record, plots: dict[str, Path], grids: dict[str, Path],
             provenance: Provenance | None = None) -> list[Section]:
    rows = [claim_row(c, o.spec.alpha) for c in o.claims]
    claims = Table([h for h, _ in CLAIM_COLUMNS], [[f"**{r['id']}** {r['title']}" if f == "id" else r[f]
                                                    for _, f in CLAIM_COLUMNS] for r in rows])
    checks = Table(["check", "result", "detail"], [[f"**{c.id}** {c.spec.title}", c.verdict,
                                                    c.detail or c.decision.reason]
                                                   for c in o.checks])
    inst = Table(["instrument", "held-out accuracy", "disturbance test", "feeds"],
                 [list(r) for r in instrument_rows(record)])
    out = [Section("Claims", [_intro(o, len(record.seeds))], claims),
           Section("Checks", ["A property of the code or the data, reported as such: not evidence, no interval."],
                   checks),
           Section("Instruments", ["Each instrument's accuracy on the held-out real images, beside what it "
                                   "measures: an effect read through an instrument is attenuated by its errors. A "
                                   "set-level instrument (FD/KID) must pass its disturbance test on the reference "
                                   "set — a second split ≈ 0, noise and blur monotone, pure noise the most — or "
                                   "what it feeds reads \"not measured\"."], inst),
           *([Section("Seeds by training identity", [
               "Seeds trained under different training identities (the code and libraries that can change "
               "trained weights) are never pooled: only today's identity counts towards K.",
               *provenance.restarts()], provenance.table())] if provenance is not None else []),
           Section("Claims in detail")]
    out += [Section(f"{r['id']}: {r['title']} ({r['role']})", [f"*{label}:* {r[key]}" for label, key in DETAIL],
                    level=3) for r in rows]
    fronts = fe.rows(record)
    fe_grids = fe.frontend_grids(grids)
    out += [Section("In each front-end", [
                "The model as each front-end samples it: the sweep's prompts and noise on the preset's own σ "
                "schedule (its terminal clamp and spacing, σ → t through its own table; docs/frontends.md), at the "
                "swept CFG nearest 5. A set-level distance appears only where its instrument passed its "
                "disturbance test.", *fe.sentences(fronts, o.spec)], fe.table(fronts), fe_grids)] if fronts else []
    out += [Section("Evaluation points", ["Every sweep point of every training seed; the columns are the metrics' "
                                          "declared outputs (scorer: the exact scorer; FD, KID, recall: the domain "
                                          "tagger)."], points_table(record)),
            Section("Plots", images=plots),
            Section("Sample grids", images={k: v for k, v in grids.items() if k not in fe_grids})]
    return [s for s in out if s.text or s.table is not None or s.images or s.title == "Claims in detail"]


def render_markdown(secs: list[Section]) -> str:
    lines = ["# nai3 claims report", ""]
    for s in secs:
        lines += ["#" * s.level + " " + s.title, ""]
        lines += [t for p in s.text for t in (p, "")]
        if s.table is not None:
            lines += [s.table.markdown(), ""]
        lines += [f"**{k}**\n\n![{k}]({v.name})\n" for k, v in s.images.items()]
    return "\n".join(lines) + "\n"


COLOUR = {A.SUPPORTED: "#1a7f37", A.EQUIVALENT: "#1a7f37", A.CHECK_PASSED: "#1a7f37", A.CONTRADICTED: "#cf222e",
          A.CHECK_FAILED: "#cf222e", A.INCONCLUSIVE: "#9a6700", A.NOT_MEASURED: "#6e7781", A.FUTILE: "#6e7781"}


def _colour(cell: str) -> str | None:
    """A verdict's colour (with its qualifier, "(unadjusted)" or "(open: …)", alike); None for any other text."""
    return COLOUR.get(cell.split(" (")[0])


def _html_text(p: str) -> str:
    label, sep, verdict = p.partition("*Verdict:* ")
    if not label and sep and _colour(verdict):
        return f"<i>Verdict:</i> <b style='color:{_colour(verdict)}'>{html.escape(verdict)}</b>"
    return inline_html(p)


def render_html(secs: list[Section]) -> str:
    e = html.escape
    body = []
    for s in secs:
        body.append(f"<h{s.level}>{e(s.title)}</h{s.level}>")
        body += [f"<p>{_html_text(p)}</p>" for p in s.text]
        if s.table is not None:
            body.append(s.table.html(_colour))
        body += [f"<figure><img src='{v.name}' alt='{e(k)}'><figcaption>{e(k)}</figcaption></figure>"
                 for k, v in s.images.items()]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>nai3 claims report</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}figure{display:inline-block;margin:8px}"
            "img{max-width:520px;image-rendering:pixelated}</style></head><body><h1>nai3 claims report</h1>"
            + "".join(body) + "</body></html>")


def write_report(record: Record, out: str | Path, data: dict | None = None, grids: dict[str, Path] | None = None,
                 spec: ClaimsSpec | None = None, ledger: Ledger | None = None,
                 run_id: str = "", config: str | None = None, provenance: Provenance | None = None,
                 config_hash: str = "", recipes: dict[str, str] | None = None) -> tuple[ClaimsOutcome, Path]:
    """Decide every claim over every training seed in ``record`` and write report.md, report.html,
    report.json, points.csv and the plots under ``out``. ``data``: the training set's measurements
    (bucketing, normalisation) for the checks. Plots show the first training seed. ``provenance``:
    the seeds of each arm under each training identity (the section "Seeds by training identity")."""
    from .plots import make_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcome = evaluate_claims(record, spec, data, ledger, config, config_hash, recipes)
    grids = grids or {}
    plots = make_plots(record, out, grids) if record.runs else {}
    secs = sections(outcome, record, plots, grids, provenance)
    atomic_write(out / "report.md", render_markdown(secs))
    atomic_write(out / "report.html", render_html(secs))
    atomic_write(out / "points.csv", points_table(record).csv())
    mine = {c.ident for c in outcome.claims if c.ident[0]}
    taken = [e for e in (ledger or {}).values() if (e.block, e.config, e.recipe) in mine]
    taken += outcome.new_ledger_entries(run_id)
    doc = {**outcome.to_dict(), "instruments": {"accuracy": instrument_accuracy(record),
                                                "disturbance": instrument_disturbance(record)},
           "ledger": [asdict(e) for e in sorted(taken, key=lambda e: (e.claim, e.look))],
           "provenance": provenance.to_dict() if provenance is not None else None,
           "points": point_rows(record)}
    atomic_write(out / "report.json", json.dumps(doc, indent=2))
    return outcome, out


def point_rows(record: Record) -> list[dict]:
    """Every sampled point with the first σ it sampled (SDXL units; "inf" for the exact ∞)."""
    from nai3train.config import to_dict

    from .columns import sweep_points

    return [{"variant": r.name, "seed": r.seed, "point": s.name, **to_dict(s),
             "first_sigma": to_dict(record.scalar(r, s, "first_sigma"))} for r, s in sweep_points(record)]


def summary_lines(o: ClaimsOutcome) -> list[str]:
    lines = [f"claims spec {Path(o.spec.path).name} v{o.spec.version} sha256 {o.spec.sha256[:16]}…"]
    for c in [*o.claims, *o.checks]:
        r = claim_row(c, o.spec.alpha)
        lines.append(f"{c.id:<11} {c.verdict:>30}  {r['effect'] if c.effect.per_seed else '—':>32}  {c.spec.title}")
    return lines
