"""The report's "In each front-end": one row per (model, preset), and one sentence per model.

Rows read the ``frontend`` points of the record: the first σ the preset samples, black and white
obedience (|shown brightness − reference| on black/white-background prompts), overshoot on those
prompts, the set-level distances of instruments that passed their disturbance test, the mean leak,
and C9's r against the ``nai`` preset. The sentence judges by the registered thresholds of the
claims spec (C2's obedience and overshoot margins, C9's r margin), never by eye.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nai3train.diffusion.frontends import FRONTENDS

from ..claims.decide import instrument_disturbance
from ..record import Record, Run
from ..setting import Setting, sigma_text
from .columns import Table, cell

# the registered thresholds the sentence uses, by claim id, and what breaking each one means
THRESHOLDS = {"C2-black-shown": "washes out black", "C2-white-shown": "washes out white",
              "C2-black-overshoot": "burns black", "C2-white-overshoot": "burns white", "C9-317": "moves the picture"}
FALLBACK_MARGIN = 0.10  # where the spec in use registers no such claim (a researcher's own spec)
SET_LEVEL = (("kid_tagger", "domain tagger", "KID (tagger)"), ("fd_inception", "inception", "FD (Inception)"))


@dataclass(frozen=True)
class FrontendRow:
    """One preset of one model, as measured."""

    run: Run
    point: Setting
    black: float | None
    white: float | None
    overshoot_black: float | None
    overshoot_white: float | None
    leak: float | None
    r: float | None
    set_level: dict[str, float | None]


def _on_prompts(record: Record, run: Run, s: Setting, metric: str, tag: str) -> float | None:
    got = record.per_image(run, s, metric)
    if got is None:
        return None
    values, pid = got
    sel = np.array([tag in run.prompts[p] for p in pid])
    return float(np.nanmean(values[sel])) if sel.any() and np.isfinite(values[sel]).any() else None


def rows(record: Record) -> list[FrontendRow]:
    passed = {name for name, d in instrument_disturbance(record).items() if d.get("passed")}
    out = []
    for run in sorted(record.runs.values(), key=lambda r: (r.seed, r.name)):
        for s in record.settings(run, "frontend"):  # in preset order (Setting.sort_key)
            level = {label: record.scalar(run, s, metric) if inst in passed else None
                     for metric, inst, label in SET_LEVEL}
            out.append(FrontendRow(
                run, s, _on_prompts(record, run, s, "brightness_err", "black_background"),
                _on_prompts(record, run, s, "brightness_err", "white_background"),
                _on_prompts(record, run, s, "image_overshoot_frac", "black_background"),
                _on_prompts(record, run, s, "image_overshoot_frac", "white_background"),
                record.scalar(run, s, "mean_leak_slope"), record.scalar(run, s, "frontend_r"), level))
    return out


def margins(spec) -> dict[str, float]:
    """Each threshold's registered margin (``FALLBACK_MARGIN`` where the spec has no such claim)."""
    have = {c.id: c.rule.margin for c in (spec.claims if spec is not None else ())}
    return {cid: have.get(cid) if have.get(cid) is not None else FALLBACK_MARGIN for cid in THRESHOLDS}


def table(found: list[FrontendRow]) -> Table:
    levels = [label for _, _, label in SET_LEVEL if any(r.set_level.get(label) is not None for r in found)]
    head = ["model", "front-end", "first σ", "black err ↓", "white err ↓", "overshoot black ↓", "overshoot white ↓",
            *(f"{label} ↓" for label in levels), "leak slope ↓", "r to nai ↓"]
    body = [[f"{r.run.name}" + (f" @seed{r.run.seed}" if r.run.seed else ""), r.point.frontend,
             sigma_text(round(r.point.start, 2)) if math.isfinite(r.point.start) else "∞",
             cell(r.black, ".3f"), cell(r.white, ".3f"), cell(r.overshoot_black, ".3f"), cell(r.overshoot_white, ".3f"),
             *(cell(r.set_level.get(label), ".4g") for label in levels), cell(r.leak, ".3g"), cell(r.r, ".3f")]
            for r in found]
    return Table(head, body, 2)


def _broken(r: FrontendRow, m: dict[str, float]) -> list[str]:
    values = {"C2-black-shown": r.black, "C2-white-shown": r.white, "C2-black-overshoot": r.overshoot_black,
              "C2-white-overshoot": r.overshoot_white, "C9-317": r.r}
    return [cid for cid, v in values.items() if v is not None and v >= m[cid]]


def sentences(found: list[FrontendRow], spec) -> list[str]:
    """Per model: which registered thresholds it breaks as NovelAI samples it (``nai``: the model's
    own), and which further ones each other front-end breaks ("washes out black" where black
    prompts' shown brightness misses its reference by the C2 margin or more, and so on)."""
    m = margins(spec)
    out = []
    for run in dict.fromkeys(r.run.key for r in found):
        mine = [r for r in found if r.run.key == run]
        name = mine[0].run.name + (f" (seed {mine[0].run.seed})" if mine[0].run.seed else "")
        bad = {r.point.frontend: _broken(r, m) for r in mine}
        own = bad.get("nai", [])
        said = lambda cids: " and ".join(THRESHOLDS[c] for c in cids)  # noqa: E731
        text = f"**{name}**: as NovelAI samples it, " + (f"it {said(own)}" if own else "within every threshold")
        extra = {fe: [c for c in cids if c not in own] for fe, cids in bad.items() if fe != "nai"}
        worse = [f"{fe} {said(cids)}" for fe, cids in extra.items() if cids]
        same = [fe for fe, cids in extra.items() if not cids]
        text += ("; beyond that, " + "; ".join(worse) if worse else "; no other front-end breaks a further threshold")
        text += f" ({', '.join(same)}: nothing further)." if worse and same else "."
        out.append(text)
    rule = ", ".join(f"{THRESHOLDS[c]}: {c}'s margin {m[c]:g}" for c in THRESHOLDS)
    return out + [f"Thresholds, registered in the claims spec: {rule} (obedience: |shown brightness − the real "
                  "images' with that background|; overshoot: the share of pixel values beyond [−1, 1]; r: RMS distance "
                  "to the nai preset's image on the same noise ÷ the distance between same-prompt samples)."]


def frontend_grids(grids: dict[str, Path]) -> dict[str, Path]:
    """The sample grids of front-end points (same prompts and noise), preset by preset."""
    order = {f"frontend-{name}-": i for i, name in enumerate(FRONTENDS)}

    def rank(key: str) -> tuple:
        label, _, point = key.partition("__")
        return label, next((i for p, i in order.items() if point.startswith(p)), 99)
    return {k: grids[k] for k in sorted((k for k in grids if "__frontend-" in k), key=rank)}
