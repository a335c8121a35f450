"""Checks: a property of the code or the data, reported as passed or failed, never as evidence
with an interval. One small class per check; ``CHECKS`` names them for the spec."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ..setting import Setting
from . import heldout
from .estimands import Arms, NotMeasured


class Check:
    """``run(margin, arms)`` → (passed, detail); ``NotMeasured`` where there is nothing to check —
    a check never passes on nothing. ``margin``: the spec's tolerance, where the check has one."""

    needs_arms: ClassVar[bool] = True  # False: a property of the training data, not of a variant

    def run(self, margin: float | None, arms: list[Arms]) -> tuple[bool, str]:
        if self.needs_arms and not arms:
            raise NotMeasured("no training seed has the arms this check reads")
        passed, detail = self.check(margin, arms)
        return bool(passed), detail

    def check(self, margin: float | None, arms: list[Arms]) -> tuple[bool, str]:
        raise NotImplementedError


class X0NonfiniteInf(Check):
    """ε's x̂0 is non-finite at σ = ∞ (> half the images), v's is finite (none)."""

    def check(self, margin: float | None, arms: list[Arms]) -> tuple[bool, str]:
        lines, ok = [], True
        at = Setting("x0", math.inf)
        for x in arms:
            fb = x.record.scalar(x.base, at, "nonfinite_frac") if x.base else None
            ft = x.record.scalar(x.treat, at, "nonfinite_frac") if x.treat else None
            if fb is None or ft is None:
                raise NotMeasured("needs both arms with the x̂0 probes")
            ok &= fb > 0.5 and ft == 0
            lines.append(f"seed {x.base.seed}: {x.base.name} non-finite {fb:.0%}, {x.treat.name} {ft:.0%}")
        return ok, "; ".join(lines)


class BucketingKept(Check):
    """Every training image keeps at least its centre square's pixel fraction, more on average."""

    needs_arms = False

    def check(self, margin: float | None, arms: list[Arms]) -> tuple[bool, str]:
        b = (arms[0].data if arms else {}).get("bucketing")
        if not b:
            raise NotMeasured("no training-set bucketing data")
        kept, square = np.asarray(b["kept"]), np.asarray(b["kept_square"])
        worse = int((kept < square - 1e-12).sum())
        return worse == 0 and kept.mean() >= square.mean(), (
            f"{len(kept)} images: bucketing keeps {kept.mean():.1%}, a centre square {square.mean():.1%}; "
            f"{worse} image(s) keep less (true by construction of nearest-aspect buckets: a check, not evidence)")


class HeldoutNormalised(Check):
    """The training statistics applied to the held-out split give N(0, 1) channels: with a
    ``margin`` (spec ≤ 7), |mean| and |std − 1| below it; without one, within the sampling error of
    both splits' statistics at the check's α (``heldout.py``: a fixed 0.05 was below the standard
    error of a 64-image held-out mean, ≈ 0.11, and failed correct code)."""

    needs_arms = False

    def check(self, margin: float | None, arms: list[Arms]) -> tuple[bool, str]:
        n = (arms[0].data if arms else {}).get("normalisation") or {}
        if "heldout_mean_after" not in n:
            raise NotMeasured("no held-out split statistics")
        m, s = np.asarray(n["heldout_mean_after"]), np.asarray(n["heldout_std_after"])
        where = (f"training statistics applied to {n.get('heldout_images', '?')} held-out images: mean "
                 f"{np.round(m, 3).tolist()}, std {np.round(s, 3).tolist()}")
        if margin is not None:
            return bool(np.all(np.abs(m) < margin) and np.all(np.abs(s - 1) < margin)), f"{where} (tolerance {margin})"
        if "heldout_moments" not in n or "train_moments" not in n:
            raise NotMeasured("no per-image held-out moments to take the sampling error from")
        held, train = heldout.Moments(**n["heldout_moments"]), heldout.Moments(**n["train_moments"])
        if held.images < heldout.MIN_IMAGES:
            raise NotMeasured(f"{held.images} held-out images: a sampling-error check needs ≥ {heldout.MIN_IMAGES}")
        zm, zs = heldout.z_scores(held, train)
        crit = heldout.critical(len(zm), held.images)
        dm, ds = heldout.detectable(held, train)
        return bool(np.all(np.abs(zm) < crit) and np.all(np.abs(zs) < crit)), (
            f"{where}; in standard errors over images: mean {np.round(zm, 2).tolist()}, log std "
            f"{np.round(zs, 2).tolist()}, each within ±{crit:.2f} (family-wise α {heldout.CHECK_ALPHA:g}); it "
            f"catches a mean off by {dm:.2g} or a std off by {ds:.2g} (95 % power)")


CHECKS: dict[str, Check] = {"x0_nonfinite_inf": X0NonfiniteInf(), "bucketing_kept": BucketingKept(),
                            "heldout_normalised": HeldoutNormalised()}
