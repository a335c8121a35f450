"""Estimands: what one training seed's evaluation says about a claim, as D_k with a
delete-one-prompt jackknife SE (NaN for set-level statistics such as KID or a CFG optimum, which
only the spread over seeds can judge).

A handful of generic forms read the measurement record — a paired contrast between arms, a
contrast between two starts of one arm, a level on prompts of one kind, a designed-probe slope
and a ratio of slopes, a ratio to a scale, a set-level contrast, a CFG optimum — and ``ESTIMANDS``
names them, each parameterised by the metric and setting it reads. The spec picks them by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from ..metrics.mean_leak import within_group_slope
from ..record import Record, Run
from ..setting import Setting
from . import statistics as A

Which = Literal["baseline", "treatment"]
Estimate = tuple[float, float, int]  # (D_k, within-run SE or NaN, prompts)


class NotMeasured(Exception):
    """This estimand cannot be computed from this record; the message says why."""


@dataclass
class Arms:
    """One seed's arms for one claim in the record — at the claim's CFG, each from its start (a σ,
    or "max": the arm's highest) — and the data measurements (C7, C8)."""

    cfg: float
    record: Record
    base: Run | None
    treat: Run | None
    data: dict
    baseline_start: float | Literal["max"] = "max"
    treatment_start: float | Literal["max"] = "max"
    notes: list[str] = field(default_factory=list)  # what an estimate wants said beside it (a censored optimum)
    weight: float | None = None  # the claim's registered m, for a linear contrast s_t − m·s_b
    bounds: tuple[float, float] | None = None  # set by an estimate known only as an interval (censored)

    def run(self, which: Which) -> Run:
        return self.base if which == "baseline" else self.treat

    def start(self, which: Which) -> float | Literal["max"]:
        return self.baseline_start if which == "baseline" else self.treatment_start

    def _near(self, run: Run, got: float, kind: str) -> None:
        want = self.start("baseline" if run is self.base else "treatment")
        if want != "max" and not math.isclose(got, float(want), rel_tol=0.05):
            raise NotMeasured(f"{run.name} was not evaluated from σ {want} (nearest {got:g})" if kind == "sweep" else
                              f"{run.name}'s mean-leak probe ran from {got:g}, not {want}")

    def point(self, which: Which) -> Setting:
        """The arm's sweep point at the claim's CFG, from its start (nearest; "max": the highest)."""
        r = self.run(which)
        s = self.record.sweep_at(r, self.cfg, self.start(which))
        if s is None:
            raise NotMeasured(f"{r.name} has no point at CFG {self.cfg:g}")
        self._near(r, s.start, "sweep")
        return s

    def leak(self, which: Which) -> Setting:
        """The arm's designed mean-leak probe nearest the claim's start (or at its highest start)."""
        r = self.run(which)
        found = self.record.settings(r, "mean_leak")
        if not found:
            raise NotMeasured(f"{r.name} has no designed mean-leak probe (evaluated before it existed?)")
        want = self.start(which)
        s = max(found, key=lambda s: s.start) if want == "max" else min(found, key=lambda s: abs(s.start - float(want)))
        self._near(r, s.start, "mean_leak")
        return s

    def values(self, which: Which, setting: Setting, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        return self.record.per_image(self.run(which), setting, metric)

    def prompts_with(self, tags: tuple[str, ...]) -> np.ndarray:
        """Per image of the treatment's prompt set: does its prompt carry one of ``tags``?"""
        r = self.treat
        return np.array([any(t in r.prompts[i] for t in tags) for i in r.prompt_index])


def _level(values: np.ndarray, pid: np.ndarray) -> Estimate:
    """Mean over prompts of the prompt's mean of ``values`` (non-finite images left out), jackknifed."""
    ok = np.isfinite(values)
    if not ok.any():
        raise NotMeasured("no image has this value (no prompt of that kind?)")
    return A.paired_mean_contrast(values[ok], np.zeros(int(ok.sum())), pid[ok])


def _contrast(a: np.ndarray, b: np.ndarray, pid: Any) -> Estimate:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.isfinite(d).any():
        raise NotMeasured("no image has a finite value on both arms")
    return A.paired_mean_contrast(a, b, pid)


@dataclass(frozen=True)
class PairedContrast:
    """Per image, ``first`` arm minus the other, on the same prompt set (paired), mean over prompts.
    ``metrics``: the first one both arms measured (the exact scorer where it read, else the tagger).
    ``x0_sigma``: read the x̂0 probe at that σ instead of the claim's sweep point."""

    metrics: tuple[str, ...]
    first: Which = "baseline"
    x0_sigma: float | None = None
    missing: str = "no image has a finite value on both arms"
    nonfinite_value: float | None = None  # a non-finite sample counts as this (a failure), never as grey

    def _setting(self, x: Arms, which: Which) -> Setting:
        return Setting("x0", self.x0_sigma) if self.x0_sigma is not None else x.point(which)

    def _values(self, x: Arms, which: Which, setting: Setting, metric: str) -> np.ndarray | None:
        got = x.values(which, setting, metric)
        if got is None or self.nonfinite_value is None:
            return None if got is None else got[0]
        finite = x.values(which, setting, "finite")
        if finite is None:
            raise NotMeasured(f"{x.run(which).name} did not record which samples were finite")
        return np.where(np.asarray(finite[0], dtype=bool), got[0], self.nonfinite_value)

    def __call__(self, x: Arms) -> Estimate:
        sb, st = self._setting(x, "baseline"), self._setting(x, "treatment")
        for m in self.metrics:
            b, t = self._values(x, "baseline", sb, m), self._values(x, "treatment", st, m)
            if b is not None and t is not None:
                a, c = (b, t) if self.first == "baseline" else (t, b)
                return _contrast(a, c, x.base.prompt_index)
        raise NotMeasured(self.missing)


@dataclass(frozen=True)
class X0Level:
    """A level of the treatment's x̂0 probe at ``sigma`` over every image, mean over prompts: "v's
    x̂0 at σ 20000 is within a margin of the truth" stated on its own, not only against ε."""

    sigma: float
    metric: str = "brightness_err"

    def __call__(self, x: Arms) -> Estimate:
        got = x.values("treatment", Setting("x0", self.sigma), self.metric)
        if got is None:
            raise NotMeasured("the x̂0 probes did not run")
        return _level(np.asarray(got[0], dtype=float), np.asarray(got[1]))


@dataclass(frozen=True)
class StartContrast:
    """One arm (the treatment), per image, a probe from the baseline start minus from the treatment
    start. ``naive_baseline``: the baseline start on the native σ table (no dimension rescale for
    the larger canvas), the treatment start on the canvas's own table."""

    kind: str
    metric: str
    canvas: float = 1.0
    naive_baseline: bool = False

    def __call__(self, x: Arms) -> Estimate:
        found = [s for s in x.record.settings(x.treat, self.kind) if s.canvas == self.canvas]
        lo, hi = float(x.start("baseline")), float(x.start("treatment"))

        def at(start: float, rescaled: bool) -> Setting | None:
            return next((s for s in found if math.isclose(s.start, start, rel_tol=1e-6) and s.rescaled == rescaled),
                        None)
        if not found:
            raise NotMeasured("no 2×-canvas count probe (it needs an exact counter: the embedded benchmark)")
        pick = {"baseline": at(lo, not self.naive_baseline), "treatment": at(hi, True)}
        if None in pick.values():
            raise NotMeasured(f"the count probe ran from {sorted(s.name for s in found)}, not "
                              f"{lo:g}{' (naive)' if self.naive_baseline else ''} and {hi:g}")
        (a, pid), (b, _) = (x.values("treatment", pick["baseline"], self.metric),
                            x.values("treatment", pick["treatment"], self.metric))
        return _contrast(a, b, pid)


@dataclass(frozen=True)
class Level:
    """A level of the treatment at its sweep point, on prompts carrying one of ``tags``, mean over
    prompts; ``around``: read |value − around| instead of the value."""

    metric: str
    tags: tuple[str, ...]
    around: float | None = None
    missing: str = ""

    def __call__(self, x: Arms) -> Estimate:
        got = x.values("treatment", x.point("treatment"), self.metric)
        if got is None:
            raise NotMeasured(self.missing.format(variant=x.treat.name) or f"{self.metric} was not measured")
        v = got[0] if self.around is None else np.abs(got[0] - self.around)
        return _level(np.where(x.prompts_with(self.tags), v, np.nan), np.asarray(x.treat.prompt_index))


def _slope(record: Record, run: Run, s: Setting, kept: np.ndarray) -> float:
    (x, pid), (y, _) = record.per_image(run, s, "noise_mean"), record.per_image(run, s, "out_mean")
    idx = np.flatnonzero(np.isin(pid, kept))
    return within_group_slope(x[idx], y[idx], pid[idx])[0]


@dataclass(frozen=True)
class LeakSlope:
    """The designed mean-leak probe's within-prompt slope (treatment); its ratio to the baseline's;
    or the linear contrast s_t − m·s_b (m: the claim's registered ``weight``).

    "The leak is removed to below m of the baseline's" is s_t < m·s_b, i.e. s_t − m·s_b < 0. The
    ratio s_t / s_b states it by dividing by a small, noisy slope (per-seed ratios 0.47–1.53, a t
    interval reaching below 0, Fieller's unbounded at K = 3); the contrast tests the same
    hypothesis without dividing."""

    form: Literal["slope", "ratio", "contrast"] = "slope"

    def __call__(self, x: Arms) -> Estimate:
        sb = x.leak("baseline") if self.form != "slope" else None
        st = x.leak("treatment")
        pid = x.record.per_image(x.treat, st, "out_mean")[1]
        if sb is None:
            return A.jackknife(pid.tolist(), lambda kept: _slope(x.record, x.treat, st, kept))
        if x.record.per_image(x.base, sb, "out_mean")[1].tolist() != pid.tolist():
            raise NotMeasured("the two arms' probes used different prompts")
        if self.form == "ratio":
            return A.jackknife(pid.tolist(), lambda kept: _slope(x.record, x.treat, st, kept) /
                               _slope(x.record, x.base, sb, kept))
        if x.weight is None:
            raise NotMeasured("the spec registers no weight m for the contrast s_t − m·s_b")
        return A.jackknife(pid.tolist(), lambda kept: _slope(x.record, x.treat, st, kept) -
                           x.weight * _slope(x.record, x.base, sb, kept))


@dataclass(frozen=True)
class RatioToScale:
    """Practical infinity: the mean distance of the sample from ``start`` to the reference start's,
    over the mean distance between same-prompt samples, jackknifed over prompts."""

    start: float

    def __call__(self, x: Arms) -> Estimate:
        found = x.record.settings(x.treat, "practical_infinity")
        at = next((s for s in found if math.isclose(s.start, self.start, rel_tol=1e-6)), None)
        if at is None:
            raise NotMeasured("the practical-infinity probe did not run (ZTSNR variants only)")
        ref_start = x.record.scalar(x.treat, at, "reference_start")
        ref = next((x.record.per_image(x.treat, s, "same_prompt_distance") for s in found if s.start == ref_start),
                   None)
        if ref is None:
            raise NotMeasured("no scale: the probe had one sample per prompt (eval.seeds_per_prompt ≥ 2 needed)")
        d, pid = x.record.per_image(x.treat, at, "distance")

        def ratio(kept: np.ndarray) -> float:
            m = np.isin(pid, kept)
            return float(d[m].mean() / ref[0][m].mean())
        return A.jackknife(pid, ratio)


@dataclass(frozen=True)
class SetContrast:
    """A set-level metric, treatment minus baseline at their sweep points (no within-run SE); with
    ``weighted``, treatment − m·baseline (m the claim's ``weight``): "not worse than the baseline by
    more than a fraction of its own level" (m = 1.25: 25 %) as a contrast, without dividing."""

    metric: str
    missing: str
    weighted: bool = False

    def __call__(self, x: Arms) -> Estimate:
        kb = x.record.scalar(x.base, x.point("baseline"), self.metric)
        kt = x.record.scalar(x.treat, x.point("treatment"), self.metric)
        if kb is None or kt is None:
            raise NotMeasured(self.missing)
        if self.weighted and x.weight is None:
            raise NotMeasured("the spec registers no weight m for the contrast treatment − m·baseline")
        return kt - (x.weight if self.weighted else 1.0) * kb, math.nan, len(set(x.base.prompt_index))


Side = Literal["", "below", "above"]


def cfg_optimum(record: Record, run: Run, metric: str, start: float | Literal["max"]) -> tuple[float, Side]:
    """(log CFG*, side): the vertex of the parabola in log CFG through the grid minimum of ``metric``
    and its two neighbours. KID spans orders of magnitude over a CFG grid, so one quadratic over the
    whole grid is pulled by its far tail; the local parabola is exact for a quadratic and ignores the
    tail. A minimum at a grid edge is censored: the optimum lies at that edge or ``side`` of it."""
    pts = {}
    for c in sorted({s.cfg_scale for s in record.settings(run, "sweep")}):
        v = record.scalar(run, record.sweep_at(run, c, start), metric)
        if v is not None and math.isfinite(v):
            pts[c] = v
    if len(pts) < 5:
        raise NotMeasured(f"a CFG optimum needs KID at ≥ 5 CFG scales; {run.name} has {len(pts)} "
                          "(a weekly config with eval.cfg_scales: [1, 1.25, 1.5, 2.5, 3.5, 5, 7, 10])")
    x = np.log(np.array(sorted(pts)))
    y = np.array([pts[c] for c in sorted(pts)])
    i = int(np.argmin(y))
    if i in (0, len(x) - 1):
        return float(x[i]), "below" if i == 0 else "above"
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    return (float(np.clip(-b / (2 * a), x[i - 1], x[i + 1])) if a > 0 else float(x[i])), ""


@dataclass(frozen=True)
class CfgOptimumShift:
    """log CFG* of the baseline minus the treatment's (set-level: no within-run SE). A censored
    optimum makes D_k a bound (``Arms.bounds``), analysed as interval-censored, never as the edge value."""

    metric: str = "kid_tagger"

    def __call__(self, x: Arms) -> Estimate:
        (ob, sb) = cfg_optimum(x.record, x.base, self.metric, x.start("baseline"))
        (ot, st) = cfg_optimum(x.record, x.treat, self.metric, x.start("treatment"))
        x.notes += [f"{r.name}'s KID minimum is at the grid edge CFG {math.exp(o):g} (censored: its optimum lies "
                    f"{side} it)" for r, o, side in ((x.base, ob, sb), (x.treat, ot, st)) if side]
        d = ob - ot
        # D = ob − ot grows when ob lies above its edge or ot below its edge
        up = (sb == "above") or (st == "below")
        down = (sb == "below") or (st == "above")
        if up and down:
            x.bounds = (-math.inf, math.inf)
        elif up:
            x.bounds = (d, math.inf)
        elif down:
            x.bounds = (-math.inf, d)
        return d, math.nan, len(set(x.base.prompt_index))


ESTIMANDS: dict[str, Callable[[Arms], Estimate]] = {
    "x0_error_20000": PairedContrast(("brightness_err",), x0_sigma=20000.0, missing="the x̂0 probes did not run"),
    "x0_level_20000": X0Level(20000.0),
    "brightness_error": PairedContrast(("brightness_err",)),
    # a non-finite sample (ε from ∞) is the worst error on [0, 1], never the grey it would display as
    "brightness_error_failing_nonfinite": PairedContrast(("brightness_err",), nonfinite_value=1.0),
    # obedience: the error of what is shown (clipped to the displayable range) …
    "shown_error_black": Level("brightness_err", ("black_background",)),
    "shown_error_white": Level("brightness_err", ("white_background",)),
    # … and overshoot: the share of pixel values beyond it — two measurements, reported side by side
    "overshoot_black": Level("image_overshoot_frac", ("black_background",), missing=(
        "{variant} was evaluated before overshoot was recorded")),
    "overshoot_white": Level("image_overshoot_frac", ("white_background",), missing=(
        "{variant} was evaluated before overshoot was recorded")),
    "distance_to_grey": Level("brightness", ("black_background", "white_background"), around=0.5),
    "leak_slope": LeakSlope(),
    "leak_slope_ratio": LeakSlope("ratio"),
    "leak_slope_contrast": LeakSlope("contrast"),
    "count_error_2x": StartContrast("count", "wrong_count", canvas=2.0),
    # C4's baseline without the paper's fix: SDXL's 14.6 on the native table, as a user would start
    "count_error_2x_naive": StartContrast("count", "wrong_count", canvas=2.0, naive_baseline=True),
    "log_cfg_optimum": CfgOptimumShift("kid_tagger"),
    "recall_rare_gain": PairedContrast(("scorer_image_recall_rare", "recall_rare"), first="treatment"),
    "leakage_common_drop": PairedContrast(("scorer_image_leakage_common", "leakage_common")),
    "kid_harm": SetContrast("kid_tagger", "KID was not computed (no tagger features)"),
    "kid_relative_contrast": SetContrast("kid_tagger", "KID was not computed (no tagger features)", weighted=True),
    "distance_ratio_317": RatioToScale(317.0),
    "distance_ratio_136": RatioToScale(136.0),
    "distance_ratio_56": RatioToScale(56.0),
    "distance_ratio_inf": RatioToScale(math.inf),
}
"""Every estimand a spec may name, each a generic form with the metric and setting it reads."""

# which instrument measured the metrics an estimand reads (the report names it beside the verdict)
SCORER_METRICS = {"count_error_2x", "count_error_2x_naive", "recall_rare_gain", "leakage_common_drop"}  # the exact scorer where present
TAGGER_METRICS = {"log_cfg_optimum", "kid_harm", "kid_relative_contrast"}  # KID in the domain tagger's feature space
