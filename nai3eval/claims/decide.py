"""Deciding the claims: arms chosen by variant fields in each training seed's runs, one estimate
per seed, the two-stage effect, a look at every K from the spec's first look to the claim's K_max
(``looks``: α spending, Holm in both directions, robustness, futility), intersection-union for
compound claims. The ledger's looks decide what is taken again: a look already taken is shown, a
final verdict stands. Below the first look a claim shows its interval only, no verdict word.
"""
from __future__ import annotations

import hashlib
import math

from pydantic import ValidationError

from nai3train.config import VariantConfig

from ..record import Record, Run
from . import statistics as A
from .checks import CHECKS
from .ledger import Ledger, identity, other_estimands
from .looks import apply_holm, finish, take_look
from .estimands import ESTIMANDS, SCORER_METRICS, TAGGER_METRICS, Arms, NotMeasured
from .result import ClaimResult, ClaimsOutcome
from .spec import ClaimsSpec, ClaimSpec, load_claims_spec

__all__ = ["ClaimResult", "ClaimsOutcome", "apply_holm", "evaluate_claims", "instrument_accuracy", "instrument_note",
           "matches"]
IGNORED = ("name", "dimension_scale", "normalize_scale")  # how a variant is named and scaled, not what it is


def matches(variant: VariantConfig, selector: dict) -> bool:
    """The variant has every selected field, and every other field at its default (typed: the
    selector is read as a variant, so 20000 and 2e4 are one σ)."""
    try:
        want = VariantConfig(name=variant.name, **selector)
    except ValidationError:
        return False
    return all(getattr(want, f) == getattr(variant, f) for f in VariantConfig.model_fields if f not in IGNORED)


def _arm(runs: list[Run], selector: dict | None, role: str) -> Run | None:
    if selector is None:
        return None
    found = [r for r in runs if matches(r.variant, selector)]
    if not found:
        raise NotMeasured(f"no variant matches the {role} arm {selector} (add it to the config)")
    if len({r.name for r in found}) > 1:
        raise NotMeasured(f"several variants match the {role} arm {selector}: {sorted({r.name for r in found})}")
    return found[0]


def instrument_accuracy(record: Record) -> dict[str, dict[str, float]]:
    """Per instrument, its accuracy on the held-out real images (the same for every result: the
    instruments are built once and never depend on what they measure)."""
    return next((r.instruments for r in record.runs.values() if r.instruments), {})


def instrument_note(metric: str, record: Record) -> str:
    """Which instrument measured ``metric`` and its accuracy on held-out real images."""
    acc = instrument_accuracy(record)
    counter = next((r.counter for r in record.runs.values() if r.counter), "")
    name = (counter or None if metric.startswith("count_error_2x") else
            "exact scorer" if metric in SCORER_METRICS and "exact scorer" in acc else
            "domain tagger" if metric in SCORER_METRICS | TAGGER_METRICS else None)
    if name is None:
        return ""
    figures = ", ".join(f"{k} {v:.3f}" for k, v in acc.get(name, {}).items())
    return f"instrument: {name}" + (f" (held-out real images: {figures})" if figures else "")


def instrument_disturbance(record: Record) -> dict[str, dict]:
    """Per set-level instrument, its disturbance test on the reference set (``nai3eval.disturbance``)."""
    return next((r.disturbance for r in record.runs.values() if r.disturbance), {})


def failed_instrument(metric: str, record: Record) -> str:
    """Why the set-level instrument ``metric`` reads may not decide anything ("" when it may)."""
    d = instrument_disturbance(record).get("domain tagger") if metric in TAGGER_METRICS else None
    if d is None or d["passed"]:
        return ""
    return "instrument failed its disturbance test: domain tagger (" + "; ".join(d["failures"]) + ")"


def _cfg_point(spec_cfg: float, tolerance: float, record: Record) -> float | None:
    """The swept CFG scale the claim is measured at: the nearest to its point, within its tolerance."""
    cfg = record.nearest_cfg(spec_cfg)
    if cfg is not None and abs(cfg - spec_cfg) > tolerance:
        raise NotMeasured(f"no swept CFG scale within {tolerance:g} of the claim's {spec_cfg:g} (nearest {cfg:g}; "
                          f"swept {record.cfg_scales()})")
    return cfg


def resolve_arms(variants, selectors: dict[str, dict]) -> dict[str, str]:
    """arm → the one variant (by name) among ``variants`` its selector matches; an arm that matches
    none, or several, is left out. The ledger's recipe of a claim is named by these arms, so the
    report (over the record's variants) and the nightly's plan (over the config's) agree."""
    named = {v.name: v for v in variants}
    out = {}
    for arm, sel in selectors.items():
        found = [n for n, v in named.items() if matches(v, sel)]
        if len(found) == 1:
            out[arm] = found[0]
    return out


def _variants(record: Record) -> list[VariantConfig]:
    return [r.variant for r in record.runs.values()]


def _seed_contrast(c: ClaimSpec, x: Arms, k: int) -> A.SeedContrast | str:
    value, se, g = ESTIMANDS[c.metric](x)
    if x.bounds is not None:
        return A.SeedContrast(k, value, se, g, low=x.bounds[0], high=x.bounds[1])
    return A.SeedContrast(k, value, se, g) if math.isfinite(value) else "the estimate is not finite"


def _measure(spec: ClaimsSpec, c: ClaimSpec, record: Record, data: dict) -> ClaimResult:
    """Per seed D_k (or the check's outcome), and the effect over every seed; no verdict yet."""
    seeds = record.seeds or [0]
    per_seed, arms_used, reasons, arm_sets = [], {}, [], []
    try:
        cfg = _cfg_point(c.point.cfg, c.point.cfg_tolerance, record) if c.rule.kind != "check" else \
            record.nearest_cfg(c.point.cfg)
    except NotMeasured as e:
        return ClaimResult(c, A.two_stage([]), A.Decision(A.NOT_MEASURED, math.nan, str(e)), arms=resolve_arms(_variants(record), c.arms),
                           planning=spec)
    for k in seeds:
        try:
            rs = record.runs_at(k)
            base, treat = _arm(rs, c.arms.get("baseline"), "baseline"), _arm(rs, c.arms.get("treatment"), "treatment")
            x = Arms(cfg if cfg is not None else c.point.cfg, record, base, treat, data, c.point.baseline_start,
                     c.point.treatment_start, weight=c.weight)
            arm_sets.append(x)
            arms_used = {a: r.name for a, r in (("baseline", base), ("treatment", treat)) if r is not None}
            if c.rule.kind == "check":
                continue
            got = _seed_contrast(c, x, k)
            reasons += [(k, n) for n in x.notes]
            per_seed.append(got) if isinstance(got, A.SeedContrast) else reasons.append((k, got))
        except NotMeasured as e:
            reasons.append((k, str(e)))
    arms_used = arms_used or resolve_arms(_variants(record), c.arms)  # the arms name the ledger's recipe, measured or not
    texts = {t for _, t in reasons}
    reasons = list(texts) if len(texts) == 1 and len(reasons) == len(seeds) else [f"seed {k}: {t}" for k, t in reasons]
    empty = A.two_stage([])
    if c.rule.kind == "check":
        return _check(c, arm_sets, arms_used, reasons, record, data)
    if not per_seed:
        return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(dict.fromkeys(reasons))),
                           len(seeds), arms=arms_used, cfg=cfg, planning=spec)
    from .censored import recipe_effect

    effect = recipe_effect(per_seed)
    decision = A.Decision(A.INCONCLUSIVE, math.nan)
    if effect.zero_width:
        decision = A.Decision(A.NOT_MEASURED, math.nan, effect.why or A.ZERO_WIDTH.reason)
    failed = failed_instrument(c.metric, record)
    if failed:
        decision = A.Decision(A.NOT_MEASURED, math.nan, failed)
    note = "; ".join(t for t in dict.fromkeys([*reasons, effect.why, instrument_note(c.metric, record)]) if t)
    if cfg is not None and cfg != c.point.cfg:
        note = "; ".join(t for t in (note, f"measured at CFG {cfg:g} (the claim's point: {c.point.cfg:g})") if t)
    return ClaimResult(c, effect, decision, len(per_seed), arms=arms_used, cfg=cfg, detail=note, planning=spec)


def _check(c: ClaimSpec, arm_sets: list, arms_used: dict, reasons: list, record: Record, data: dict) -> ClaimResult:
    check, empty = CHECKS[c.metric], A.two_stage([])
    if not check.needs_arms:
        arm_sets = arm_sets or [Arms(c.point.cfg, record, None, None, data)]
    try:
        ok, detail = check.run(c.rule.margin, arm_sets)
    except NotMeasured as e:
        return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(reasons) or str(e)),
                           arms=arms_used)
    return ClaimResult(c, empty, A.check(ok, detail), arms=arms_used, check_passed=ok, detail=detail)


def _elsewhere(result: ClaimResult, config: str, why: str = "") -> ClaimResult:
    """A claim whose deciding report is another config's: its value is shown, no verdict is taken
    (nor entered in the ledger, nor counted in Holm here)."""
    result.decision = A.Decision(f"decided in {config}", math.nan, why or (
        f"its deciding report is the {config} config's (claims spec: decided_in); the value is shown only"))
    return result


def _compound(c: ClaimSpec, parts: list[ClaimResult]) -> ClaimResult:
    """Intersection-union: supported only when every part is *supported* (an *equivalent* part says
    there is no effect worth having: the compound is not supported)."""
    words = [p.decision.verdict for p in parts]
    if len(set(words)) == 1 and words[0].startswith("decided in "):
        v = words[0]  # every part is decided in another config's report: so is the compound
    elif A.NOT_MEASURED in words:
        v = A.NOT_MEASURED
    elif A.CONTRADICTED in words:
        v = A.CONTRADICTED
    elif all(w == A.SUPPORTED for w in words) and all(p.final or p.robust for p in parts):
        v = A.SUPPORTED
    elif any(w in (A.FUTILE, A.EQUIVALENT) and p.final for w, p in zip(words, parts)):
        v = A.FUTILE
    else:
        v = A.INCONCLUSIVE
    why = "intersection-union of " + ", ".join(f"{p.id}: {p.verdict}" for p in parts)
    return ClaimResult(c, A.two_stage([]), A.Decision(v, math.nan, why), parts=parts,
                       seeds_available=max((p.seeds_available for p in parts), default=0))


def deciding(spec: ClaimsSpec, c: ClaimSpec, config: str | None, config_hash: str) -> str:
    """"" when this report decides claim ``c``; else why it only shows its value. A config decides
    the claims the spec names it for, recognised by its hash (``deciders``); a config the spec never
    names (the smoke demo, your own) decides every claim in its own ledger."""
    if c.decided_in is None or c.role == "check":
        return ""
    pinned = spec.deciders[c.decided_in]
    if config_hash == pinned:
        return ""
    if config_hash in spec.deciders.values() or config in spec.deciders:
        own = "" if config not in spec.deciders or config_hash == spec.deciders[config] else (
            f"; this config is named {config} but its hash {config_hash[:12]} is not the registered "
            f"{spec.deciders[config][:12]} (another grid, prompt set or recipe)")
        return (f"its deciding report is the {c.decided_in} config's (hash {pinned[:12]}, claims spec: decided_in); "
                f"the value is shown only{own}")
    return ""


def recipe_of(arms: dict[str, str], recipes: dict[str, str] | None) -> str:
    """The arms' recipe key (``arms``: arm → variant name): what the claim's seeds are replicates of."""
    keys = sorted(f"{arm}={(recipes or {}).get(name, name)}" for arm, name in arms.items())
    return hashlib.sha256("|".join(keys).encode()).hexdigest()[:16]


def evaluate_claims(record: Record, spec: ClaimsSpec | None = None, data: dict | None = None,
                    ledger: Ledger | None = None, config: str | None = None, config_hash: str = "",
                    recipes: dict[str, str] | None = None) -> ClaimsOutcome:
    """Every claim of ``spec`` (default: configs/claims.yaml) over every training seed in ``record``.
    ``data``: the training set's measurements (``bucketing``, ``normalisation``) for the checks;
    ``None`` when nai3 never saw the training data (a researcher's own model): those checks are
    left out. ``ledger``: the looks taken so far (a look is taken at new K only; a final verdict
    stands). ``config``/``config_hash``: the report's config, which decides the claims the spec
    pins it for (``deciding``); ``recipes``: variant name → recipe key (the ledger's identity)."""
    spec = spec or load_claims_spec()
    if data is None:
        spec = spec.model_copy(update={"claims": [c for c in spec.claims
                                                  if c.role != "check" or CHECKS[c.metric].needs_arms]})
    data, ledger = data or {}, ledger or {}
    done: dict[str, ClaimResult] = {}
    for c in spec.claims:
        if c.parts:
            continue
        r = done[c.id] = _measure(spec, c, record, data)
        why = deciding(spec, c, config, config_hash)
        if why:
            _elsewhere(r, c.decided_in, why)
        elif c.role != "check":
            r.ident = (spec.block_sha256(c), config_hash, recipe_of(r.arms, recipes))
            key = identity(c.id, *r.ident)
            r.others = other_estimands(ledger, c.id, key)
            take_look(spec, r, len(record.seeds or [0]), ledger, key)
    primaries = [done[c.id] for c in spec.claims if c.role == "primary" and c.id in done]
    final = [r.ledger.verdict for r in primaries if r.ledger is not None and r.ledger.final]
    apply_holm(primaries, spec, final.count(A.SUPPORTED), final.count(A.CONTRADICTED))
    for r in done.values():
        finish(spec, r)
    for c in spec.claims:
        if c.parts:
            done[c.id] = _compound(c, [done[p] for p in c.parts])
    ordered = [done[c.id] for c in spec.claims]
    return ClaimsOutcome(spec, [r for r in ordered if r.spec.role != "check"],
                         [r for r in ordered if r.spec.role == "check"])
