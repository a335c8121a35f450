"""Deciding the claims: arms chosen by variant fields in each training seed's runs, one estimate
per seed, the two-stage effect, the spec's rule, Holm across the primaries, intersection-union for
compound claims. Recipe-level verdicts are taken only at the spec's looks (K = 3, 5): with 4 seeds
available the decision is the one taken at K = 3 on the first three. Below the first look every
verdict is checkpoint-level.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pydantic import ValidationError

from nai3train.config import VariantConfig

from ..record import Record, Run
from . import statistics as A
from .checks import CHECKS
from .censored import recipe_effect
from .ledger import Entry, Ledger, entry_for, is_final, open_key, utc_iso
from .sequential import alpha_at, holm_levels
from .estimands import ESTIMANDS, SCORER_METRICS, TAGGER_METRICS, Arms, NotMeasured
from .spec import ClaimsSpec, ClaimSpec, RuleSpec, load_claims_spec

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


def _rule(r: RuleSpec, alpha: float):
    """The decision rule of ``r`` at one-sided level ``alpha`` (TOST: 2α, its two one-sided tests)."""
    if r.kind == "superiority":
        return A.Superiority(r.direction, alpha, sesoi=r.sesoi)
    if r.kind == "above":
        return A.Superiority("greater", alpha, threshold=r.margin)
    if r.kind in ("noninferiority", "below"):
        return A.NonInferiority(r.margin, alpha)
    if r.kind == "equivalence":
        return A.Equivalence(r.margin, 2 * alpha)
    raise ValueError(r.kind)


def look_alpha(spec: ClaimsSpec, look: int | None) -> float:
    """The one-sided α a verdict at ``look`` is taken at: the look's share of the spec's α under its
    boundary (``sequential``); below the first look (checkpoint-level) the spec's α."""
    return alpha_at(look, spec.looks, spec.alpha, spec.boundary) if look else spec.alpha


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
    ledger: Entry | None = None  # the verdict was taken at an earlier look and stands (``ledger``)
    final_alpha: float = math.nan  # the nominal one-sided α of the spec's last look (power is planned at it)

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
        if v in (A.NOT_MEASURED, A.CHECK_PASSED, A.CHECK_FAILED) or v.startswith("decided in ") or self.level == A.RECIPE:
            return v
        return f"checkpoint-level: {v}"

    @property
    def variance_ratio(self) -> float:
        """τ̂²/s_w²: how much more a retrained seed varies than a resampled one (within-run noise).
        Large: more seeds, not more images, narrow the interval."""
        e = self.effect
        return e.tau ** 2 / e.s_w ** 2 if e.s_w > 0 and math.isfinite(e.tau) else math.nan

    def seeds_for_power(self, alpha: float, power: float = 0.8) -> int | None:
        """Training seeds that detect the claim's smallest effect of interest (its ``sesoi``, else
        its margin) with ``power`` at one-sided ``alpha``, given the spread of D_k seen so far."""
        e, r = self.effect, self.spec.rule
        interest = r.sesoi or r.margin
        if e.n_seeds < 2 or interest is None:
            return None
        return A.seeds_for_power(e.se * math.sqrt(e.n_seeds), interest, alpha, power)

    def to_dict(self) -> dict:
        lo, hi = self.effect.interval(0.95)
        finite = lambda v: v if v is not None and math.isfinite(v) else None  # noqa: E731
        return {"id": self.id, "title": self.spec.title, "role": self.spec.role, "estimand": self.spec.estimand,
                "verdict": self.verdict, "level": self.level, "n_seeds": self.effect.n_seeds,
                "seeds_available": self.seeds_available, "look": self.look,
                "effect": {"value": finite(self.effect.value), "ci95": [finite(lo), finite(hi)]},
                "per_seed": [{"seed": c.seed, "value": finite(c.value), "se": finite(c.se), "n_prompts": c.n_prompts,
                              **({"bounds": [finite(b) for b in c.bounds]} if c.censored else {})}
                             for c in self.effect.per_seed],
                "s_w": finite(self.effect.s_w), "tau": finite(self.effect.tau), "unit": self.spec.unit,
                "rule": self.spec.rule.model_dump(), "margin": self.spec.rule.margin, "holm_alpha": self.holm_alpha,
                "arms": self.arms, "cfg": self.cfg, "parts": [p.id for p in self.parts],
                "reason": self.decision.reason or self.detail,
                "decided": asdict(self.ledger) if self.ledger else None,
                "tau2_over_sw2": finite(self.variance_ratio), "sesoi": self.spec.rule.sesoi,
                "seeds_for_80pct_power": self.seeds_for_power(self.final_alpha),
                "decided_in": self.spec.decided_in}


@dataclass
class ClaimsOutcome:
    spec: ClaimsSpec
    claims: list[ClaimResult]
    checks: list[ClaimResult]
    decided_at: str = field(default_factory=utc_iso)  # when these verdicts were taken (their ledger entries)

    def to_dict(self) -> dict:
        return {"claims": [c.to_dict() for c in self.claims],
                "checks": [{"id": c.id, "title": c.spec.title, "passed": c.check_passed, "verdict": c.verdict,
                            "detail": c.detail or c.decision.reason} for c in self.checks],
                "claims_spec_sha256": self.spec.sha256, "claims_spec_version": self.spec.version,
                "claims_spec_path": self.spec.path, "looks": list(self.spec.looks)}

    def new_ledger_entries(self, run_id: str = "") -> list[Entry]:
        """What goes into the ledger now: the verdicts this report took that end their claims
        (``ledger.is_final``), and the claims its look left open (inconclusive before the last
        look), for looks no earlier report took."""
        return [entry_for(c, self.spec, self.decided_at, run_id, open=not is_final(c.decision.verdict, c.look,
                                                                                   self.spec.looks))
                for c in self.claims if not c.parts and c.ledger is None and c.look is not None
                and (is_final(c.decision.verdict, c.look, self.spec.looks) or c.decision.verdict == A.INCONCLUSIVE)]

    def metrics_by_seeds(self) -> dict[int, dict[str, float]]:
        """Per claim its effect and 95 % interval bounds, keyed by K (MLflow's step: a claim's chart
        shows its interval narrowing as training seeds accumulate). Names are stable:
        ``claims/<id>/effect``, ``claims/<id>/ci95_low``, ``claims/<id>/ci95_high``,
        ``claims/<id>/seeds``; a bound that is not finite (K = 1) is left out."""
        out: dict[int, dict[str, float]] = {}
        for c in self.claims:
            e = c.effect
            if not e.per_seed or e.value is None or not math.isfinite(e.value):
                continue
            lo, hi = e.interval(0.95)
            row = {"effect": e.value, "ci95_low": lo, "ci95_high": hi, "seeds": float(e.n_seeds)}
            out.setdefault(e.n_seeds, {}).update(
                {f"claims/{c.id}/{k}": float(v) for k, v in row.items() if v is not None and math.isfinite(v)})
        return out


def _measure(spec: ClaimsSpec, c: ClaimSpec, record: Record, data: dict) -> ClaimResult:
    seeds = record.seeds or [0]
    cfg = record.nearest_cfg(c.point.cfg)
    per_seed, arms_used, reasons = [], {}, []
    arm_sets = []
    for k in seeds:
        rs = record.runs_at(k)
        try:
            base, treat = _arm(rs, c.arms.get("baseline"), "baseline"), _arm(rs, c.arms.get("treatment"), "treatment")
            x = Arms(cfg if cfg is not None else c.point.cfg, record, base, treat, data, c.point.baseline_start,
                     c.point.treatment_start, weight=c.weight)
            arm_sets.append(x)
            arms_used = {a: r.name for a, r in (("baseline", base), ("treatment", treat)) if r is not None}
            if c.rule.kind == "check":
                continue
            value, se, g = ESTIMANDS[c.metric](x)
            reasons += [(k, n) for n in x.notes]
            if x.bounds is not None:
                lo, hi = x.bounds
                per_seed.append(A.SeedContrast(k, value, se, g, low=lo, high=hi))
            elif math.isfinite(value):
                per_seed.append(A.SeedContrast(k, value, se, g))
            else:
                reasons.append((k, "the estimate is not finite"))
        except NotMeasured as e:
            reasons.append((k, str(e)))
    texts = {t for _, t in reasons}
    reasons = list(texts) if len(texts) == 1 and len(reasons) == len(seeds) else [f"seed {k}: {t}" for k, t in reasons]
    empty = A.two_stage([])
    if c.rule.kind == "check":
        check = CHECKS[c.metric]
        if not check.needs_arms:
            arm_sets = arm_sets or [Arms(c.point.cfg, record, None, None, data)]
        try:
            ok, detail = check.run(c.rule.margin, arm_sets)
        except NotMeasured as e:
            return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(reasons) or str(e)),
                               arms=arms_used)
        return ClaimResult(c, empty, A.check(ok, detail), arms=arms_used, check_passed=ok, detail=detail)
    if not per_seed:
        return ClaimResult(c, empty, A.Decision(A.NOT_MEASURED, math.nan, "; ".join(dict.fromkeys(reasons))),
                           len(seeds), arms=arms_used, cfg=cfg)
    look = max((k for k in spec.looks if k <= len(per_seed)), default=None)
    used = per_seed[:look] if look else per_seed
    effect = recipe_effect(used)
    decision = _rule(c.rule, look_alpha(spec, look)).decide(effect)
    if decision.verdict == A.NOT_MEASURED and not decision.reason:
        decision = A.ZERO_WIDTH
    if decision is A.ZERO_WIDTH and effect.why:
        decision = A.Decision(A.NOT_MEASURED, math.nan, effect.why)
    failed = failed_instrument(c.metric, record)
    if failed:
        decision = A.Decision(A.NOT_MEASURED, math.nan, failed)
    note = "; ".join(t for t in dict.fromkeys([*reasons, effect.why, instrument_note(c.metric, record)]) if t)
    if look and look < len(per_seed):
        note = (note + "; " if note else "") + (f"decided at the look K = {look} on seeds "
                                                f"{[s.seed for s in used]}; {len(per_seed)} available")
    return ClaimResult(c, effect, decision, len(per_seed), look, arms=arms_used, cfg=cfg, detail=note,
                       final_alpha=look_alpha(spec, spec.looks[-1]))


def _elsewhere(result: ClaimResult, config: str) -> ClaimResult:
    """A claim whose deciding report is another config's: its value is shown, no verdict is taken
    (nor entered in the ledger, nor counted in Holm here)."""
    result.decision = A.Decision(f"decided in {config}", math.nan, f"its deciding report is the {config} config's "
                                                                    "(claims spec: decided_in); the value is shown only")
    return result


def _compound(c: ClaimSpec, parts: list[ClaimResult]) -> ClaimResult:
    words = [p.decision.verdict for p in parts]
    if len(set(words)) == 1 and words[0].startswith("decided in "):
        v = words[0]  # every part is decided in another config's report: so is the compound
    elif A.NOT_MEASURED in words:
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


def apply_holm(primaries: list[ClaimResult], spec: ClaimsSpec, left: int = 0) -> None:
    """Holm's step-down over the primary claims, one family whose size m is the spec's number of
    primaries less those an earlier look already supported (``left``): a primary is "supported"
    (or "equivalent") only if its p-value is below its Holm level, each at its own look
    (``sequential.holm_levels``). Holm guards the claims in their expected direction; a
    contradiction keeps its nominal decision."""
    tested = [r for r in primaries if r.decision.verdict != A.NOT_MEASURED and r.decision.p_value == r.decision.p_value]
    m = spec.primaries - left
    levels = holm_levels([r.decision.p_value for r in tested], [r.look for r in tested], m, spec.looks, spec.alpha,
                         spec.boundary)
    for r, level in zip(tested, levels):
        r.holm_alpha = level
        p, d = r.decision.p_value, r.decision
        if d.verdict == A.SUPPORTED and not p < level:
            r.decision = A.Decision(A.INCONCLUSIVE, p, f"supported alone (p = {p:.3g}) but not at its Holm level "
                                                       f"{level:.3g}", d.p_equivalence)
        elif d.verdict == A.EQUIVALENT and not d.p_equivalence < (bonferroni := look_alpha(spec, r.look) / max(m, 1)):
            # "no effect of interest" is a second family of hypotheses: Bonferroni over the primaries
            r.decision = A.Decision(A.INCONCLUSIVE, p, f"equivalent alone (TOST p = {d.p_equivalence:.3g}) but not "
                                                       f"at α/m = {bonferroni:.3g} across the {m} primaries",
                                    d.p_equivalence)


def _from_ledger(result: ClaimResult, entry: Entry) -> ClaimResult:
    """A claim decided at an earlier look: its verdict stands; today's estimate is shown beside it."""
    result.decision = A.Decision(entry.verdict, math.nan, entry.describe())
    result.look, result.ledger = entry.look, entry
    return result


def evaluate_claims(record: Record, spec: ClaimsSpec | None = None, data: dict | None = None,
                    ledger: Ledger | None = None, config: str | None = None) -> ClaimsOutcome:
    """Every claim of ``spec`` (default: configs/claims.yaml) over every training seed in ``record``.
    ``data``: the training set's measurements (``bucketing``, ``normalisation``) for the checks;
    ``None`` when nai3 never saw the training data (a researcher's own model): the checks of the
    training data do not apply and are left out, rather than shown as not measured. ``ledger``:
    the verdicts earlier looks took; those claims are not decided again (nor counted in Holm).
    ``config``: the name of the config whose report this is; where the spec names another config
    as a claim's deciding report (``decided_in``), the claim's value is shown, not decided."""
    spec = spec or load_claims_spec()
    if data is None:
        spec = spec.model_copy(update={"claims": [c for c in spec.claims
                                                  if c.role != "check" or CHECKS[c.metric].needs_arms]})
    data = data or {}
    done: dict[str, ClaimResult] = {}
    ledger = ledger or {}
    decided = set()
    deciders = {c.decided_in for c in spec.claims if c.decided_in}
    for c in spec.claims:
        if not c.parts:
            done[c.id] = _measure(spec, c, record, data)
            if config in deciders and c.decided_in and c.decided_in != config and c.role != "check":
                _elsewhere(done[c.id], c.decided_in)
                decided.add(c.id)
                continue
            entry = ledger.get(c.id)
            if entry is None and done[c.id].look is not None:
                entry = ledger.get(open_key(c.id, done[c.id].look))  # this look was taken and left it open
            if entry is not None and c.role != "check":
                if done[c.id].seeds_available >= entry.look:
                    _from_ledger(done[c.id], entry)
                    decided.add(c.id)
                else:  # this record never reached that look: its own result, the ledger's beside it
                    done[c.id].detail = "; ".join(t for t in (done[c.id].detail, f"the ledger: {entry.verdict}, "
                                                              f"{entry.describe()}") if t)
    rejected = sum(1 for cid in decided if done[cid].spec.role == "primary"
                   and cid in ledger and ledger[cid].verdict == A.SUPPORTED)  # those tested here stay in the family
    apply_holm([done[c.id] for c in spec.claims if c.role == "primary" and c.id in done and c.id not in decided],
               spec, rejected)
    for c in spec.claims:
        if c.parts:
            done[c.id] = _compound(c, [done[p] for p in c.parts])
    ordered = [done[c.id] for c in spec.claims]
    return ClaimsOutcome(spec, [r for r in ordered if r.spec.role != "check"],
                         [r for r in ordered if r.spec.role == "check"])
