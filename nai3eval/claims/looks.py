"""Taking a look (docs/claims.md, "Looks, α spending and the ledger"): at K seeds, on the first K,
at the level α-spending gives the looks this claim has taken; Holm over the primaries in both
directions; then leave-one-seed-out robustness, futility, and whether the look ends the claim.

The order of these steps is the procedure ``nai3 claims validate`` simulates (``validate``), and
only ever removes rejections from the spending boundaries' own: robustness and futility can keep a
claim open or stop it, never make it supported.
"""
from __future__ import annotations

import math

from . import statistics as A
from .censored import recipe_effect
from .ledger import Entry, Ledger, looks_of
from .planning import conditional_power, effect_sd_upper, final_critical
from .result import ClaimResult
from .sequential import holm_levels, level_at
from .spec import ClaimsSpec, RuleSpec


def rule_for(spec: ClaimsSpec, r: RuleSpec, margin: float | None):
    """The decision rule of ``r``; its level is given per look."""
    if r.kind == "superiority":
        return A.Superiority(r.direction, spec.alpha, sesoi=r.sesoi)
    if r.kind == "above":
        return A.Superiority("greater", spec.alpha, threshold=margin)
    if r.kind in ("noninferiority", "below"):
        return A.NonInferiority(margin, spec.alpha)
    if r.kind == "equivalence":
        return A.Equivalence(margin, spec.alpha)
    if r.kind == "null_twin":
        return A.NullTwin(margin, spec.alpha)
    raise ValueError(r.kind)


def from_ledger(result: ClaimResult, entry: Entry) -> ClaimResult:
    """A look already taken: its outcome stands; today's estimate is shown beside it."""
    result.decision = A.Decision(entry.verdict, math.nan, entry.describe() + (f"; {entry.reason}" if entry.reason
                                                                               else ""))
    result.look, result.ledger, result.final, result.robust = entry.look, entry, entry.final, entry.robust
    result.level = entry.level
    return result


def take_look(spec: ClaimsSpec, result: ClaimResult, seeds: int, ledger: Ledger, ident: str) -> ClaimResult:
    """Decide ``result`` (its ``effect`` over every seed it has) from the ledger or by a new look.
    ``seeds``: the training seeds in the record (a look that measures nothing is still a look)."""
    c = result.spec
    k_max = result.k_max = spec.kmax(c)
    taken = looks_of(ledger, ident)
    final = next((e for e in taken if e.final), None)
    if final is not None:
        return from_ledger(result, final)
    per_seed = list(result.effect.per_seed)
    k = min(len(per_seed) if per_seed else seeds, k_max)
    if taken and k <= taken[-1].look:  # this K was looked at (or the record has fewer seeds than a look had)
        same = next((e for e in taken if e.look == k), taken[-1])
        return from_ledger(result, same)
    if k < spec.first_look:
        return result  # below the first look: the interval only, nothing recorded
    result.look, result.new_look = k, True
    result.history = tuple(e.look for e in taken if e.spent) + (k,)
    if result.decision.verdict == A.NOT_MEASURED:
        result.final = k == k_max
        return result
    if k < len(per_seed):  # the look uses the first K seeds only
        result.effect = recipe_effect(per_seed[:k])
    # a null twin's fault test is two-sided: α/2 spent on each side (``level`` is one side's)
    twin = c.rule.kind == "null_twin"
    result.level = level_at(result.history, k_max, spec.alpha / 2 if twin else spec.alpha, spec.spending)
    result.decision = rule_for(spec, c.rule, spec.margin(c)).decide(result.effect, result.level * (2 if twin else 1))
    if result.decision is A.ZERO_WIDTH and result.effect.why:
        result.decision = A.Decision(A.NOT_MEASURED, math.nan, result.effect.why)
    if k < len(per_seed):
        result.detail = "; ".join(t for t in (result.detail, f"the look K = {k} used seeds "
                                              f"{[s.seed for s in per_seed[:k]]}; {len(per_seed)} available") if t)
    return result


def apply_holm(primaries: list[ClaimResult], spec: ClaimsSpec, supported_left: int = 0,
               contradicted_left: int = 0) -> None:
    """Holm's step-down over the primaries' directional hypotheses, one family per direction, each
    of size m = the spec's primaries less those already decided in that direction: *supported* only
    below its Holm level for "an effect", *contradicted* only below its Holm level for "the opposite
    effect", each at its own look's spending (``sequential.holm_levels``); *equivalent* (no effect
    of interest) by Bonferroni at the look's level for α/m."""
    tested = [r for r in primaries if r.new_look and r.decision.verdict != A.NOT_MEASURED
              and r.decision.p_value == r.decision.p_value]
    if not tested:
        return
    hist, kmax = [r.history for r in tested], [r.k_max for r in tested]
    m_for, m_against = spec.primaries - supported_left, spec.primaries - contradicted_left
    for_ = holm_levels([r.decision.p_value for r in tested], hist, kmax, m_for, spec.alpha, spec.spending)
    rank = holm_levels([r.decision.p_value for r in tested], hist, kmax, m_for, spec.alpha, spec.spending, stop=False)
    against = holm_levels([r.decision.p_against for r in tested], hist, kmax, m_against, spec.alpha, spec.spending)
    for r, lf, lr, la in zip(tested, for_, rank, against):
        # "no effect of interest" is its own family: Bonferroni over every primary, never recycled
        d, eq_level = r.decision, level_at(r.history, r.k_max, spec.alpha / max(1, spec.primaries), spec.spending)
        r.level = lf if lf > 0 else lr
        if d.p_value < lf:
            v, why = A.SUPPORTED, f"p = {d.p_value:.3g} < its Holm level {lf:.3g}"
        elif d.p_equivalence < eq_level:
            v, why = A.EQUIVALENT, f"TOST p = {d.p_equivalence:.3g} < α/m at this look, {eq_level:.3g}"
        elif d.p_against < la:
            v, why = A.CONTRADICTED, f"the opposite direction's p = {d.p_against:.3g} < its Holm level {la:.3g}"
            r.level = la
        else:
            v = A.INCONCLUSIVE
            why = (f"p = {d.p_value:.3g}, not below its Holm level {lf:.3g}" if lf > 0 else
                   f"p = {d.p_value:.3g}; retained by Holm's step-down (an earlier step was retained; at its rank "
                   f"the level is {lr:.3g})")
        r.decision = A.Decision(v, d.p_value, why, d.p_equivalence, d.p_against)


def _direction(spec: ClaimsSpec, r: ClaimResult) -> tuple[bool, float] | None:
    """(supported means "greater than", its threshold) of a directional rule; None otherwise."""
    rule = r.spec.rule
    if rule.kind == "superiority":
        return rule.direction == "greater", 0.0
    if rule.kind == "above":
        return True, spec.margin(r.spec)
    if rule.kind in ("below", "noninferiority"):
        return False, spec.margin(r.spec)
    return None


def _loo_survives(spec: ClaimsSpec, r: ClaimResult) -> bool:
    """Whether the verdict holds at the same level with any one of the K seeds left out."""
    seeds = list(r.effect.per_seed)
    if len(seeds) < 3:
        return False
    way = _direction(spec, r)
    for j in range(len(seeds)):
        e = recipe_effect(seeds[:j] + seeds[j + 1:])
        if e.zero_width:
            return False
        if r.spec.rule.kind == "null_twin":  # the side the fault was found on, against the one-sided level
            p = e.p_greater(0.0) if r.effect.value > 0 else e.p_less(0.0)
        elif way is None:
            return True  # no direction to lose (an equivalence rule's contradiction)
        else:
            greater = way[0] if r.decision.verdict == A.SUPPORTED else not way[0]
            p = e.p_greater(way[1]) if greater else e.p_less(way[1])
        if not p < r.level:
            return False
    return True


def finish(spec: ClaimsSpec, r: ClaimResult) -> None:
    """After Holm: robustness, futility, and whether this look ends the claim."""
    if not r.new_look:
        return
    if r.decision.verdict == A.NOT_MEASURED:
        r.final = r.look >= r.k_max  # a look that measured nothing at K_max still ends the claim
        return
    v, last = r.decision.verdict, r.look >= r.k_max
    if v in (A.SUPPORTED, A.CONTRADICTED):
        r.robust = _loo_survives(spec, r)
        if not r.robust and not last:
            r.detail = "; ".join(t for t in (r.detail, "not final: the verdict does not survive dropping one of the "
                                                       f"{r.look} seeds; decided again at the next look") if t)
    elif v == A.INCONCLUSIVE and r.spec.rule.sesoi and not last:
        e = r.effect
        sign = 1.0 if r.spec.rule.direction == "greater" else -1.0
        share = spec.alpha / max(1, spec.primaries) if r.spec.role == "primary" else spec.alpha
        sd = effect_sd_upper(e, spec.futility.sd_confidence)
        c = final_critical(r.history, r.k_max, share, spec.spending)
        r.conditional_power = float(conditional_power(sign * e.value, sd, r.look, r.k_max, r.spec.rule.sesoi, c))
        if r.conditional_power < spec.futility.conditional_power:
            r.decision = A.Decision(A.FUTILE, r.decision.p_value, (
                f"conditional power at K_max = {r.k_max} is {r.conditional_power:.3f} < "
                f"{spec.futility.conditional_power:g} (effect {r.spec.rule.sesoi:g}, spread at its "
                f"{spec.futility.sd_confidence:.0%} upper bound {sd:.3g})"), r.decision.p_equivalence,
                r.decision.p_against)
    v = r.decision.verdict
    r.final = last or v in (A.EQUIVALENT, A.FUTILE) or (v in (A.SUPPORTED, A.CONTRADICTED) and bool(r.robust))
