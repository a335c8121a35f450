"""The claims, decided by the pre-registered spec (``configs/claims.yaml``) over training seeds.

The spec names, per claim, the arms (by variant fields), the evaluation point, the estimand (a
function in ``ESTIMANDS``), the decision rule with its margin, and whether the claim is primary.
Nothing here chooses a threshold: the spec does, and its sha256 travels with every report.

Per claim and training seed k, the estimand gives D_k with a delete-one-prompt jackknife SE (or
no SE for set-level statistics such as KID or a CFG optimum, which only the spread over seeds can
judge); ``analysis.two_stage`` combines the seeds. Recipe-level verdicts are taken only at the
spec's looks (K = 3, 5): with 4 seeds available the decision is the one taken at K = 3 on the
first three. Below the first look every verdict is checkpoint-level. Holm's step-down runs over
the primary claims; compound claims (``parts``) follow the intersection-union rule.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from nai3train.config import VariantConfig
from nai3train.config.errors import ConfigError, config_error, reason

from . import analysis as A
from .metrics import within_group_slope
from .results import VariantResult, point_at

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "configs" / "claims.yaml"
Role = Literal["primary", "secondary", "exploratory", "check"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Spec):
    kind: Literal["superiority", "equivalence", "noninferiority", "below", "above", "check"]
    direction: Literal["greater", "less"] = "greater"
    margin: float | None = None

    @model_validator(mode="after")
    def _margin_where_needed(self) -> "RuleSpec":
        if self.kind in ("equivalence", "noninferiority", "below", "above") and self.margin is None:
            raise reason(f"a {self.kind} rule needs a margin")
        return self


class PointSpec(_Spec):
    cfg: float = 5.0
    baseline_start: float | Literal["max"] = "max"
    treatment_start: float | Literal["max"] = "max"


class ClaimSpec(_Spec):
    id: str
    title: str
    role: Role
    estimand: str
    arms: dict[Literal["baseline", "treatment"], dict[str, Any]] = {}
    point: PointSpec = PointSpec()
    metric: str | None = None
    unit: str = ""
    rule: RuleSpec
    parts: tuple[str, ...] = ()

    @field_validator("arms")
    @classmethod
    def _fields_exist(cls, arms: dict) -> dict:
        known = set(VariantConfig.model_fields) - {"name"}
        for arm, sel in arms.items():
            bad = set(sel) - known
            if bad:
                raise reason(f"arm {arm!r} selects by unknown variant field(s) {sorted(bad)}; known: {sorted(known)}")
        return arms

    @model_validator(mode="after")
    def _metric_or_parts(self) -> "ClaimSpec":
        if bool(self.metric) == bool(self.parts):
            raise reason("give exactly one of metric (a measured claim) or parts (a compound claim)")
        if self.metric and self.metric not in (*ESTIMANDS, *CHECKS):
            raise reason(f"unknown metric {self.metric!r}; known: {sorted(ESTIMANDS)} and checks {list(CHECKS)}")
        if self.metric and (self.metric in CHECKS) != (self.rule.kind == "check"):
            raise reason(f"metric {self.metric!r} needs rule kind 'check' exactly when it is one of {list(CHECKS)}")
        return self


class ClaimsSpec(_Spec):
    version: int
    alpha: float
    looks: tuple[int, ...]
    claims: tuple[ClaimSpec, ...]
    sha256: str = ""
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "ClaimsSpec":
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise reason("claim ids must be unique")
        for c in self.claims:
            missing = set(c.parts) - set(ids)
            if missing:
                raise reason(f"claim {c.id} names unknown parts {sorted(missing)}")
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise reason("looks must be increasing seed counts, the first ≥ 2")
        return self

    def by_id(self, cid: str) -> ClaimSpec:
        return next(c for c in self.claims if c.id == cid)


def load_claims_spec(path: str | Path | None = None) -> ClaimsSpec:
    """The spec with the sha256 of its bytes; a bad spec is refused naming the dotted key."""
    p = Path(path) if path else DEFAULT_SPEC
    if not p.is_file():
        raise ConfigError(f"claims spec {p} does not exist")
    raw = p.read_bytes()
    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"claims spec {p} is not valid YAML: {e}") from None
    try:
        return ClaimsSpec(**doc, sha256=hashlib.sha256(raw).hexdigest(), path=str(p))
    except ValidationError as e:
        raise config_error(e, ClaimsSpec, root="claims") from None


# ------------------------------------------------------------------ estimands


class NotMeasured(Exception):
    """This estimand cannot be computed from these results; the message says why."""


@dataclass
class Arms:
    """One seed's arms for one claim, and the data measurements (C7, C8)."""

    spec: ClaimSpec
    cfg: float
    base: VariantResult | None
    treat: VariantResult | None
    data: dict
    notes: list[str] = field(default_factory=list)  # what an estimate wants said beside it (a censored optimum)

    def point(self, which: Literal["baseline", "treatment"]):
        r = self.base if which == "baseline" else self.treat
        start = self.spec.point.baseline_start if which == "baseline" else self.spec.point.treatment_start
        p = point_at(r, self.cfg, "max" if start == "max" else str(start))
        if p is None:
            raise NotMeasured(f"{r.variant} has no point at CFG {self.cfg:g}")
        if start != "max" and not math.isclose(p.first_sigma, float(start), rel_tol=0.05):
            raise NotMeasured(f"{r.variant} was not evaluated from σ {start} (nearest {p.first_sigma:g})")
        return p

    def leak(self, which: Literal["baseline", "treatment"]):
        r = self.base if which == "baseline" else self.treat
        start = self.spec.point.baseline_start if which == "baseline" else self.spec.point.treatment_start
        probe = r.probes.leak_at("max" if start == "max" else str(start)) if r.probes else None
        if probe is None:
            raise NotMeasured(f"{r.variant} has no designed mean-leak probe (evaluated before it existed?)")
        if start != "max" and not math.isclose(probe.start, float(start), rel_tol=0.05):
            raise NotMeasured(f"{r.variant}'s mean-leak probe ran from {probe.start:g}, not {start}")
        return probe


Estimate = tuple[float, float, int]  # (D_k, within-run SE or NaN, prompts)


def _level(values: np.ndarray, pid: np.ndarray) -> Estimate:
    """Mean over prompts of the prompt's mean of ``values`` (non-finite images left out), jackknifed."""
    ok = np.isfinite(values)
    if not ok.any():
        raise NotMeasured("no image has this value (no prompt of that kind?)")
    return A.paired_mean_contrast(values[ok], np.zeros(int(ok.sum())), pid[ok])


def _contrast(a: np.ndarray, b: np.ndarray, pid) -> Estimate:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.isfinite(d).any():
        raise NotMeasured("no image has a finite value on both arms")
    return A.paired_mean_contrast(a, b, pid)


def _x0_error_20000(x: Arms) -> Estimate:
    if not (x.base.probes and x.treat.probes):
        raise NotMeasured("the x̂0 probes did not run")
    return _contrast(x.base.probes.x0_20000.per_image_err, x.treat.probes.x0_20000.per_image_err, x.base.prompt_index)


def _brightness_error(x: Arms) -> Estimate:
    return _contrast(x.point("baseline").arr("brightness_err"), x.point("treatment").arr("brightness_err"),
                     x.base.prompt_index)


def _background(x: Arms, bg: str) -> np.ndarray:
    return np.array([f"{bg}_background" in x.treat.prompts[i] for i in x.treat.prompt_index])


def _brightness_error_on(bg: str) -> Callable[[Arms], Estimate]:
    def est(x: Arms) -> Estimate:
        p = x.point("treatment")
        if not p.per_image.brightness_err_unclamped:
            raise NotMeasured(f"{x.treat.variant} was evaluated before unclamped brightness was recorded")
        # unclamped, as the spec says: a sample pushed past white by CFG clips to pure white, and the
        # clipped error would be one constant for every image (a zero-width interval, no verdict)
        vals = np.where(_background(x, bg), p.arr("brightness_err_unclamped"), np.nan)
        return _level(vals, np.asarray(x.treat.prompt_index))
    return est


def _distance_to_grey(x: Arms) -> Estimate:
    p = x.point("treatment")
    extreme = _background(x, "black") | _background(x, "white")
    return _level(np.where(extreme, np.abs(p.arr("brightness") - 0.5), np.nan), np.asarray(x.treat.prompt_index))


def _slope(probe, kept: np.ndarray) -> float:
    pid = np.asarray(probe.prompt_index)
    idx = np.flatnonzero(np.isin(pid, kept))
    return within_group_slope(probe.noise_mean[idx], np.asarray(probe.out_mean)[idx], pid[idx])[0]


def _leak_slope(x: Arms) -> Estimate:
    probe = x.leak("treatment")
    return A.jackknife(probe.prompt_index, lambda kept: _slope(probe, kept))


def _leak_slope_ratio(x: Arms) -> Estimate:
    pb, pt = x.leak("baseline"), x.leak("treatment")
    if pb.prompt_index != pt.prompt_index:
        raise NotMeasured("the two arms' probes used different prompts")
    return A.jackknife(pt.prompt_index, lambda kept: _slope(pt, kept) / _slope(pb, kept))


def _count_error_2x(x: Arms) -> Estimate:
    probe = x.treat.probes.count if x.treat.probes else None
    if probe is None:
        raise NotMeasured("no 2×-canvas count probe (it needs an exact counter: the embedded benchmark)")
    lo, hi = f"{x.spec.point.baseline_start:g}", f"{x.spec.point.treatment_start:g}"
    if lo not in probe.wrong or hi not in probe.wrong:
        raise NotMeasured(f"the count probe ran from {sorted(probe.wrong)}, not {lo} and {hi}")
    return _contrast(probe.wrong[lo], probe.wrong[hi], probe.prompt_index or x.treat.prompt_index)


def _cfg_optimum(r: VariantResult, start: str) -> tuple[float, bool]:
    """(log CFG*, censored): the vertex of the parabola in log CFG through the grid minimum of KID and
    its two neighbours. KID spans orders of magnitude over a CFG grid, so one quadratic over the whole
    grid is pulled by its far tail; the local parabola is exact for a quadratic and ignores the tail.
    A minimum at a grid edge is censored: the edge is reported, the optimum may lie beyond it."""
    pts = {}
    for p in r.points:
        q = point_at(r, p.cfg_scale, start)
        if q is p and p.kid_tagger is not None and math.isfinite(p.kid_tagger):
            pts[p.cfg_scale] = p.kid_tagger
    if len(pts) < 5:
        raise NotMeasured(f"a CFG optimum needs KID at ≥ 5 CFG scales; {r.variant} has {len(pts)} "
                          "(a weekly config with eval.cfg_scales: [1.5, 2.5, 3.5, 5, 7, 10])")
    x = np.log(np.array(sorted(pts)))
    y = np.array([pts[c] for c in sorted(pts)])
    i = int(np.argmin(y))
    if i in (0, len(x) - 1):
        return float(x[i]), True
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    return (float(np.clip(-b / (2 * a), x[i - 1], x[i + 1])) if a > 0 else float(x[i])), False


def _log_cfg_optimum(x: Arms) -> Estimate:
    sb, st = x.spec.point.baseline_start, x.spec.point.treatment_start
    (ob, cb), (ot, ct) = _cfg_optimum(x.base, str(sb)), _cfg_optimum(x.treat, str(st))
    x.notes += [f"{r.variant}'s KID minimum is at the grid edge CFG {math.exp(o):g} (censored: its optimum may "
                "lie beyond)" for r, o, cens in ((x.base, ob, cb), (x.treat, ot, ct)) if cens]
    return ob - ot, math.nan, len(set(x.base.prompt_index))


def _adherence(x: Arms, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, treatment) per-image ``name``: the exact scorer's reading where both arms have one
    (the benchmark), else the domain tagger's — the same instrument on both arms."""
    b, t = x.point("baseline"), x.point("treatment")
    if len(b.per_image.scorer_recall_rare) and len(t.per_image.scorer_recall_rare):
        return b.arr(f"scorer_{name}"), t.arr(f"scorer_{name}")
    return b.arr(name), t.arr(name)


def _recall_rare_gain(x: Arms) -> Estimate:
    b, t = _adherence(x, "recall_rare")
    return _contrast(t, b, x.base.prompt_index)


def _leakage_common_drop(x: Arms) -> Estimate:
    b, t = _adherence(x, "leakage_common")
    return _contrast(b, t, x.base.prompt_index)


SCORER_METRICS = {"count_error_2x", "recall_rare_gain", "leakage_common_drop"}  # read by the exact scorer if present
TAGGER_METRICS = {"log_cfg_optimum", "kid_harm"}  # KID in the domain tagger's feature space


def instrument_accuracy(results: list[VariantResult]) -> dict[str, dict[str, float]]:
    """Per instrument, its accuracy on the held-out real images (the same for every result: the
    instruments are built once and never depend on what they measure)."""
    return next((r.instruments for r in results if r.instruments), {})


def instrument_note(metric: str, results: list[VariantResult]) -> str:
    """Which instrument measured ``metric`` and its accuracy on held-out real images."""
    acc = instrument_accuracy(results)
    counter = next((r.probes.counter for r in results if r.probes and r.probes.counter), "")
    name = (counter or None if metric == "count_error_2x" else
            "exact scorer" if metric in SCORER_METRICS and "exact scorer" in acc else
            "domain tagger" if metric in SCORER_METRICS | TAGGER_METRICS else None)
    if name is None:
        return ""
    figures = ", ".join(f"{k} {v:.3f}" for k, v in acc.get(name, {}).items())
    return f"instrument: {name}" + (f" (held-out real images: {figures})" if figures else "")


def _kid_harm(x: Arms) -> Estimate:
    kb, kt = x.point("baseline").kid_tagger, x.point("treatment").kid_tagger
    if kb is None or kt is None:
        raise NotMeasured("KID was not computed (no tagger features)")
    return kt - kb, math.nan, len(set(x.base.prompt_index))


def _distance_ratio(start: str) -> Callable[[Arms], Estimate]:
    def est(x: Arms) -> Estimate:
        pi = x.treat.probes.practical_infinity if x.treat.probes else None
        if pi is None or start not in pi.per_image_distance:
            raise NotMeasured("the practical-infinity probe did not run (ZTSNR variants only)")
        if not pi.per_image_reference:
            raise NotMeasured("no scale: the probe had one sample per prompt (eval.seeds_per_prompt ≥ 2 needed)")
        d, ref = np.asarray(pi.per_image_distance[start]), np.asarray(pi.per_image_reference)
        pid = np.asarray(pi.prompt_index or x.treat.prompt_index)

        def ratio(kept: np.ndarray) -> float:
            m = np.isin(pid, kept)
            return float(d[m].mean() / ref[m].mean())
        return A.jackknife(pid, ratio)
    return est


ESTIMANDS: dict[str, Callable[[Arms], Estimate]] = {
    "x0_error_20000": _x0_error_20000,
    "brightness_error": _brightness_error,
    "brightness_error_black": _brightness_error_on("black"),
    "brightness_error_white": _brightness_error_on("white"),
    "distance_to_grey": _distance_to_grey,
    "leak_slope": _leak_slope,
    "leak_slope_ratio": _leak_slope_ratio,
    "count_error_2x": _count_error_2x,
    "log_cfg_optimum": _log_cfg_optimum,
    "recall_rare_gain": _recall_rare_gain,
    "leakage_common_drop": _leakage_common_drop,
    "kid_harm": _kid_harm,
    "distance_ratio_317": _distance_ratio("317"),
    "distance_ratio_136": _distance_ratio("136"),
    "distance_ratio_56": _distance_ratio("56"),
}
# a property of the code or the data (``_check``): passed or failed, never an interval
CHECKS = ("x0_nonfinite_inf", "bucketing_kept", "heldout_normalised")


def _check(spec: ClaimSpec, arms: list[Arms]) -> tuple[bool, str]:
    if spec.metric == "x0_nonfinite_inf":
        lines, ok = [], True
        for x in arms:
            if not (x.base and x.treat and x.base.probes and x.treat.probes):
                raise NotMeasured("needs both arms with the x̂0 probes")
            fb, ft = x.base.probes.x0_inf.nonfinite_frac, x.treat.probes.x0_inf.nonfinite_frac
            ok &= fb > 0.5 and ft == 0
            lines.append(f"seed {x.base.seed}: {x.base.variant} non-finite {fb:.0%}, {x.treat.variant} {ft:.0%}")
        return ok, "; ".join(lines)
    data = arms[0].data if arms else {}
    if spec.metric == "bucketing_kept":
        b = data.get("bucketing")
        if not b:
            raise NotMeasured("no training-set bucketing data")
        kept, square = np.asarray(b["kept"]), np.asarray(b["kept_square"])
        worse = int((kept < square - 1e-12).sum())
        return worse == 0 and kept.mean() >= square.mean(), (
            f"{len(kept)} images: bucketing keeps {kept.mean():.1%}, a centre square {square.mean():.1%}; "
            f"{worse} image(s) keep less (true by construction of nearest-aspect buckets: a check, not evidence)")
    if spec.metric == "heldout_normalised":
        n = data.get("normalisation") or {}
        if "heldout_mean_after" not in n:
            raise NotMeasured("no held-out split statistics")
        m, s, tol = np.asarray(n["heldout_mean_after"]), np.asarray(n["heldout_std_after"]), spec.rule.margin or 0.05
        return bool(np.all(np.abs(m) < tol) and np.all(np.abs(s - 1) < tol)), (
            f"training statistics applied to {n.get('heldout_images', '?')} held-out images: mean "
            f"{np.round(m, 3).tolist()}, std {np.round(s, 3).tolist()} (tolerance {tol})")
    raise NotMeasured(f"{spec.metric} is not a check")


# ------------------------------------------------------------------ selection and decision


def matches(variant_config: dict, selector: dict) -> bool:
    """The variant has every selected field, and every other field at its default."""
    defaults = VariantConfig(name="x").model_dump()
    for name, default in defaults.items():
        if name in ("name", "dimension_scale", "normalize_scale"):
            continue
        want = selector.get(name, default)
        have = variant_config.get(name, default)
        if want != have and not (_num(want) is not None and _num(want) == _num(have)):
            return False
    return True


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _arm(results: list[VariantResult], selector: dict | None, role: str) -> VariantResult | None:
    if selector is None:
        return None
    found = [r for r in results if matches(r.variant_config, selector)]
    if not found:
        raise NotMeasured(f"no variant matches the {role} arm {selector} (add it to the config)")
    if len({r.variant for r in found}) > 1:
        raise NotMeasured(f"several variants match the {role} arm {selector}: {sorted({r.variant for r in found})}")
    return found[0]


def _rule(spec: ClaimsSpec, r: RuleSpec):
    if r.kind == "superiority":
        return A.Superiority(r.direction, spec.alpha)
    if r.kind == "above":
        return A.Superiority("greater", spec.alpha, threshold=r.margin)
    if r.kind in ("noninferiority", "below"):
        return A.NonInferiority(r.margin, spec.alpha)
    if r.kind == "equivalence":
        return A.Equivalence(r.margin, 2 * spec.alpha)
    raise ValueError(r.kind)


@dataclass
class ClaimResult:
    spec: ClaimSpec
    effect: A.Effect
    decision: A.Decision
    seeds_available: int = 0
    look: int | None = None  # the K this recipe-level verdict was taken at; None below the first look
    holm_alpha: float | None = None
    arms: dict[str, str] = field(default_factory=dict)  # arm → variant name
    cfg: float | None = None
    parts: list["ClaimResult"] = field(default_factory=list)
    check_passed: bool | None = None
    detail: str = ""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def level(self) -> str:
        if self.parts:
            return A.RECIPE if all(p.level == A.RECIPE for p in self.parts) else A.CHECKPOINT
        return self.effect.level

    @property
    def verdict(self) -> str:
        """The rule's word; below the first look marked checkpoint-level (no recipe-level word)."""
        v = self.decision.verdict
        if v in (A.NOT_MEASURED, A.CHECK_PASSED, A.CHECK_FAILED) or self.level == A.RECIPE:
            return v
        return f"checkpoint-level: {v}"

    def to_dict(self) -> dict:
        lo, hi = self.effect.interval(0.95)
        finite = lambda v: v if v is not None and math.isfinite(v) else None  # noqa: E731
        return {"id": self.id, "title": self.spec.title, "role": self.spec.role, "estimand": self.spec.estimand,
                "verdict": self.verdict, "level": self.level, "n_seeds": self.effect.n_seeds,
                "seeds_available": self.seeds_available, "look": self.look,
                "effect": {"value": finite(self.effect.value), "ci95": [finite(lo), finite(hi)]},
                "per_seed": [{"seed": c.seed, "value": finite(c.value), "se": finite(c.se), "n_prompts": c.n_prompts}
                             for c in self.effect.per_seed],
                "s_w": finite(self.effect.s_w), "tau": finite(self.effect.tau), "unit": self.spec.unit,
                "rule": self.spec.rule.model_dump(), "margin": self.spec.rule.margin, "holm_alpha": self.holm_alpha,
                "arms": self.arms, "cfg": self.cfg, "parts": [p.id for p in self.parts],
                "reason": self.decision.reason or self.detail}


@dataclass
class ClaimsOutcome:
    spec: ClaimsSpec
    claims: list[ClaimResult]
    checks: list[ClaimResult]

    def to_dict(self) -> dict:
        return {"claims": [c.to_dict() for c in self.claims],
                "checks": [{"id": c.id, "title": c.spec.title, "passed": c.check_passed, "verdict": c.verdict,
                            "detail": c.detail or c.decision.reason} for c in self.checks],
                "claims_spec_sha256": self.spec.sha256, "claims_spec_version": self.spec.version,
                "claims_spec_path": self.spec.path, "looks": list(self.spec.looks)}


def _nearest_cfg(results: list[VariantResult], want: float) -> float | None:
    scales = sorted({p.cfg_scale for r in results for p in r.points})
    return min(scales, key=lambda c: abs(c - want)) if scales else None


def _measure(spec: ClaimsSpec, c: ClaimSpec, results: list[VariantResult], data: dict) -> ClaimResult:
    seeds = sorted({r.seed for r in results}) or [0]
    cfg = _nearest_cfg(results, c.point.cfg)
    per_seed, arms_used, reasons = [], {}, []
    arm_sets = []
    for k in seeds:
        rs = [r for r in results if r.seed == k]
        try:
            base, treat = _arm(rs, c.arms.get("baseline"), "baseline"), _arm(rs, c.arms.get("treatment"), "treatment")
            x = Arms(c, cfg if cfg is not None else c.point.cfg, base, treat, data)
            arm_sets.append(x)
            arms_used = {a: r.variant for a, r in (("baseline", base), ("treatment", treat)) if r is not None}
            if c.rule.kind == "check":
                continue
            value, se, g = ESTIMANDS[c.metric](x)
            reasons += [(k, n) for n in x.notes]
            if math.isfinite(value):
                per_seed.append(A.SeedContrast(k, value, se, g))
            else:
                reasons.append((k, "the estimate is not finite"))
        except NotMeasured as e:
            reasons.append((k, str(e)))
    texts = {t for _, t in reasons}
    reasons = list(texts) if len(texts) == 1 and len(reasons) == len(seeds) else [f"seed {k}: {t}" for k, t in reasons]
    empty = A.two_stage([])
    if c.rule.kind == "check":
        if c.metric in ("bucketing_kept", "heldout_normalised"):
            arm_sets = arm_sets or [Arms(c, c.point.cfg, None, None, data)]
        try:
            ok, detail = _check(c, arm_sets)
        except NotMeasured as e:
            return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(reasons) or str(e)),
                               arms=arms_used)
        return ClaimResult(c, empty, A.check(ok, detail), arms=arms_used, check_passed=ok, detail=detail)
    if not per_seed:
        return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(dict.fromkeys(reasons))),
                           len(seeds), arms=arms_used, cfg=cfg)
    look = max((k for k in spec.looks if k <= len(per_seed)), default=None)
    used = per_seed[:look] if look else per_seed
    effect = A.two_stage(used)
    decision = _rule(spec, c.rule).decide(effect)
    if decision.verdict == A.NOT_MEASURED and not decision.reason:
        decision = A.ZERO_WIDTH
    note = "; ".join(t for t in dict.fromkeys([*reasons, instrument_note(c.metric, results)]) if t)
    if look and look < len(per_seed):
        note = (note + "; " if note else "") + (f"decided at the look K = {look} on seeds "
                                                f"{[s.seed for s in used]}; {len(per_seed)} available")
    return ClaimResult(c, effect, decision, len(per_seed), look, arms=arms_used, cfg=cfg, detail=note)


def _compound(c: ClaimSpec, parts: list[ClaimResult]) -> ClaimResult:
    words = [p.decision.verdict for p in parts]
    if A.NOT_MEASURED in words:
        v = A.NOT_MEASURED
    elif A.CONTRADICTED in words:
        v = A.CONTRADICTED
    elif all(w in (A.SUPPORTED, A.EQUIVALENT) for w in words):
        v = A.SUPPORTED
    else:
        v = A.INCONCLUSIVE
    why = "intersection-union of " + ", ".join(f"{p.id}: {p.verdict}" for p in parts)
    return ClaimResult(c, A.two_stage([]), A.Decision(v, math.nan, why), parts=parts,
                       seeds_available=max((p.seeds_available for p in parts), default=0))


def apply_holm(primaries: list[ClaimResult], spec: ClaimsSpec) -> None:
    """Holm's step-down over the primary claims that were measured: a primary is "supported" (or
    "equivalent") only if its p-value is below its Holm level (α/m for the smallest p, …, stopping
    at the first failure). Holm guards the claims in their expected direction; a contradiction keeps
    its nominal decision."""
    tested = [r for r in primaries if r.decision.verdict != A.NOT_MEASURED and r.decision.p_value == r.decision.p_value]
    for r, level in zip(tested, A.holm([r.decision.p_value for r in tested], spec.alpha)):
        r.holm_alpha = level
        p = r.decision.p_value
        if r.decision.verdict in (A.SUPPORTED, A.EQUIVALENT) and not p < level:
            r.decision = A.Decision(A.INCONCLUSIVE, p, f"{r.decision.verdict} alone (p = {p:.3g}) but not at its "
                                                       f"Holm level {level:.3g}")


def evaluate_claims(results: list[VariantResult], spec: ClaimsSpec | None = None,
                    data: dict | None = None) -> ClaimsOutcome:
    """Every claim of ``spec`` (default: configs/claims.yaml) over every training seed in ``results``.
    ``data``: the training set's measurements (``bucketing``, ``normalisation``) for the checks."""
    spec = spec or load_claims_spec()
    data = data or {}
    done: dict[str, ClaimResult] = {}
    for c in spec.claims:
        if not c.parts:
            done[c.id] = _measure(spec, c, results, data)
    apply_holm([done[c.id] for c in spec.claims if c.role == "primary" and c.id in done], spec)
    for c in spec.claims:
        if c.parts:
            done[c.id] = _compound(c, [done[p] for p in c.parts])
    ordered = [done[c.id] for c in spec.claims]
    return ClaimsOutcome(spec, [r for r in ordered if r.spec.role != "check"],
                         [r for r in ordered if r.spec.role == "check"])
