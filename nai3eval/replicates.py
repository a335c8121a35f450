"""The pure-noise claims over training-seed replicates: per seed the paired contrast D_k with its
delete-one-prompt jackknife SE, then the recipe-level effect D̄ ± t_{K−1}·sd(D_k)/√K
(``analysis.two_stage``). With K < 3 every result is labelled checkpoint-level.

Estimands (each seed compares its own baseline and v + ZTSNR checkpoints on the same prompts and
noise; CFG nearest 5 in the sweep):
* C1: x̂0 brightness error at σ = 20000, ε baseline − v + ZTSNR;
* C2: sampled brightness error on black/white prompts, baseline from 14.6 − ZTSNR from its top start;
* C3: within-prompt mean-leak slope, baseline from 14.6 − ZTSNR from its top start;
* C9: distance to the 20000 start from 56 − from 136 (v + ZTSNR only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import analysis as A
from .metrics import within_group_slope
from .results import PointResult, VariantResult, baseline_and_nai, point_at


@dataclass(frozen=True)
class ReplicatedClaim:
    id: str
    estimand: str
    effect: A.Effect
    decision: A.Decision

    @property
    def verdict(self) -> str:
        """The rule's verdict; below K = 3 seeds it is marked checkpoint-level (no recipe-level word)."""
        v = self.decision.verdict
        return v if self.effect.level == A.RECIPE or v == A.NOT_MEASURED else f"checkpoint-level: {v}"

    def to_dict(self) -> dict:
        lo, hi = self.effect.interval(0.95)
        return {"id": self.id, "estimand": self.estimand, "verdict": self.verdict, "level": self.effect.level,
                "n_seeds": self.effect.n_seeds,
                "effect": {"value": self.effect.value, "ci95": [lo, hi]},
                "per_seed": [{"seed": c.seed, "value": c.value, "se": c.se, "n_prompts": c.n_prompts}
                             for c in self.effect.per_seed],
                "s_w": self.effect.s_w, "tau": self.effect.tau, "rule": "superiority (one-sided α = 0.025)",
                "margin": None, "reason": self.decision.reason}


def _slope(p: PointResult, pid: np.ndarray, kept: np.ndarray) -> float:
    idx = np.concatenate([np.flatnonzero(pid == g) for g in kept])
    return within_group_slope(p.arr("start_mean")[idx], p.arr("out_mean")[idx], pid[idx])[0]


Contrast = Callable[[VariantResult, VariantResult, float], tuple[float, float, int] | None]


def _c1(base, nai, cfg):
    if base.probes is None or nai.probes is None:
        return None
    return A.paired_mean_contrast(base.probes.x0_20000.per_image_err, nai.probes.x0_20000.per_image_err,
                                  base.prompt_index)


def _c2(base, nai, cfg):
    pb, pn = point_at(base, cfg, "14.6"), point_at(nai, cfg, "max")
    if not (pb and pn):
        return None
    return A.paired_mean_contrast(pb.arr("brightness_err"), pn.arr("brightness_err"), base.prompt_index)


def _c3(base, nai, cfg):
    pb, pn = point_at(base, cfg, "14.6"), point_at(nai, cfg, "max")
    if not (pb and pn):
        return None
    pid = np.asarray(base.prompt_index)
    return A.jackknife(pid, lambda kept: _slope(pb, pid, kept) - _slope(pn, pid, kept))


def _c9(base, nai, cfg):
    pi = nai.probes.practical_infinity if nai.probes else None
    if pi is None or "56" not in pi.per_image_distance:
        return None
    return A.paired_mean_contrast(pi.per_image_distance["56"], pi.per_image_distance["136"], nai.prompt_index)


CLAIMS: tuple[tuple[str, str, Contrast], ...] = (
    ("C1", "x̂0 brightness error at σ = 20000: ε baseline − v + ZTSNR", _c1),
    ("C2", "brightness error on black/white prompts: baseline from 14.6 − v + ZTSNR from its top start", _c2),
    ("C3", "mean-leak slope within prompt: baseline from 14.6 − v + ZTSNR from its top start", _c3),
    ("C9", "RMS distance to the 20000 start: from 56 − from 136 (v + ZTSNR)", _c9),
)


def replicate_claims(results: list[VariantResult]) -> list[ReplicatedClaim]:
    """C1, C2, C3, C9 over every training seed present in ``results``."""
    seeds = sorted({r.seed for r in results})
    scales = sorted({p.cfg_scale for r in results for p in r.points})
    cfg = min(scales, key=lambda c: abs(c - 5.0)) if scales else 5.0
    out = []
    for cid, estimand, contrast in CLAIMS:
        per_seed = []
        for k in seeds:
            base, nai = baseline_and_nai([r for r in results if r.seed == k])
            got = contrast(base, nai, cfg) if base and nai else None
            if got is not None and math.isfinite(got[0]):
                per_seed.append(A.SeedContrast(k, *got))
        effect = A.two_stage(per_seed)
        decision = A.Superiority().decide(effect) if per_seed else A.Decision(
            A.NOT_MEASURED, math.nan, "needs an ε baseline and a v + ZTSNR variant evaluated at the same points")
        out.append(ReplicatedClaim(cid, estimand, effect, decision))
    return out
