"""How a claim is decided (docs/claims.md, "Decision rules"): two-stage analysis over
training-seed replicates and decision rules fixed in advance.

Stage 1, within one training run (seed k): the paired contrast D_k between two arms, computed from
per-image values that are clustered by prompt, with a delete-one-prompt jackknife standard error
(an image-level bootstrap of a prompt-clustered mean covers only 65–85 %).
Stage 2, the recipe: D̄ ± t_{K−1}·sd(D_k)/√K over K seeds. The unit of replication is the training
run; with K < 3 the result is labelled checkpoint-level and shows its interval only, no verdict word.
s_w² = mean SE_k² is the within-run variance, τ̂² = max(0, var(D_k) − s_w²) the between-seed one.

Decision rules return a verdict and the p-value that Holm's step-down uses across the primary
claims: superiority (one-sided), equivalence (TOST inside ±margin), non-inferiority (upper bound of
the harm below a margin), and checks (a property of code or data: passed/failed, no interval).
No interval of zero width (n < 2, or all values equal) ever yields a verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
from scipy import stats

SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE = "supported", "contradicted", "equivalent", "inconclusive"
CHECK_PASSED, CHECK_FAILED, NOT_MEASURED = "check passed", "check failed", "not measured"
FUTILE = "futile"  # conditional power at K_max below the registered threshold (planning.py)
RECIPE, CHECKPOINT = "recipe", "checkpoint"
MIN_SEEDS_FOR_RECIPE = 3


@dataclass(frozen=True)
class SeedContrast:
    """D_k for one training seed, with its prompt-clustered (jackknife) standard error. A censored
    D_k is known only to lie in [low, high] (one end infinite: "≥ low" or "≤ high"); ``value`` is
    then the finite bound, shown as such and never analysed as the value."""

    seed: int
    value: float
    se: float
    n_prompts: int
    low: float | None = None
    high: float | None = None

    @property
    def censored(self) -> bool:
        return self.low is not None or self.high is not None

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.value if self.low is None else self.low, self.value if self.high is None else self.high)


@dataclass(frozen=True)
class Effect:
    """An effect with the interval the decision uses (two-sided at ``confidence``) and its t
    reference distribution: ``df`` degrees of freedom around ``value`` with scale ``se``."""

    value: float
    se: float
    df: float
    level: Literal["recipe", "checkpoint"]
    per_seed: tuple[SeedContrast, ...] = ()
    s_w: float = math.nan  # √(mean within-run SE²)
    tau: float = math.nan  # √τ̂², the between-seed spread beyond within-run noise
    why: str = ""  # how the interval was formed, where a reader must know (censored seeds)

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    @property
    def zero_width(self) -> bool:
        return not (self.se > 0 and math.isfinite(self.se) and self.df >= 1)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        if self.zero_width:
            return self.value, self.value
        h = stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return self.value - h, self.value + h

    def p_greater(self, threshold: float = 0.0) -> float:
        """One-sided p-value of H0: effect ≤ threshold."""
        return float(stats.t.sf((self.value - threshold) / self.se, self.df)) if not self.zero_width else math.nan

    def p_less(self, threshold: float = 0.0) -> float:
        """One-sided p-value of H0: effect ≥ threshold."""
        return float(stats.t.cdf((self.value - threshold) / self.se, self.df)) if not self.zero_width else math.nan


def jackknife(prompt_ids: Sequence[int], statistic: Callable[[np.ndarray], float]) -> tuple[float, float, int]:
    """(estimate, delete-one-prompt jackknife SE, number of prompts) of ``statistic(kept_prompts)``.

    ``statistic`` receives the array of prompt ids to use, so any per-image contrast, slope or
    ratio can be clustered by prompt."""
    labels = np.unique(np.asarray(prompt_ids))
    g = len(labels)
    value = float(statistic(labels))
    if g < 2:
        return value, math.nan, g
    leave_out = np.array([statistic(np.delete(labels, i)) for i in range(g)], dtype=float)
    if not np.all(np.isfinite(leave_out)):
        return value, math.nan, g
    se = math.sqrt((g - 1) / g * float(((leave_out - leave_out.mean()) ** 2).sum()))
    return value, se, g


def paired_mean_contrast(a: Sequence[float], b: Sequence[float], prompt_ids: Sequence[int]
                         ) -> tuple[float, float, int]:
    """D = mean over prompts of the prompt's mean of (a_i − b_i), with its jackknife SE. Images with
    a non-finite value on either side are left out (their prompt keeps the others)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    pid = np.asarray(prompt_ids)
    ok = np.isfinite(d)
    d, pid = d[ok], pid[ok]
    means = {p: float(d[pid == p].mean()) for p in np.unique(pid)}
    return jackknife(list(means), lambda kept: float(np.mean([means[p] for p in kept])))


def two_stage(contrasts: Sequence[SeedContrast]) -> Effect:
    """The recipe-level effect over training seeds: D̄ ± t_{K−1}·sd(D_k)/√K.

    K = 1: the within-run (checkpoint-level) interval, t with G − 1 degrees of freedom.
    K = 2: the seed interval with 1 degree of freedom, labelled checkpoint-level.
    """
    cs = tuple(contrasts)
    k = len(cs)
    if k == 0:
        return Effect(math.nan, math.nan, 0, CHECKPOINT)
    if any(c.censored for c in cs):
        raise ValueError("a censored D_k is a bound, not a value: use claims.censored.recipe_effect")
    values = np.array([c.value for c in cs], dtype=float)
    if k == 1:
        c = cs[0]
        return Effect(c.value, c.se, c.n_prompts - 1, CHECKPOINT, cs, spread(cs, math.nan)[0])
    var = float(values.var(ddof=1))
    return Effect(float(values.mean()), math.sqrt(var / k), k - 1, RECIPE if k >= MIN_SEEDS_FOR_RECIPE else CHECKPOINT,
                  cs, *spread(cs, var))


def spread(cs: Sequence[SeedContrast], var: float) -> tuple[float, float]:
    """(s_w, τ̂): √ of the mean within-run SE², and √max(0, var − s_w²) for the seeds' variance
    ``var`` (ddof 1); NaN where no seed has a within-run SE."""
    ses = np.array([c.se for c in cs], dtype=float)
    if not np.any(np.isfinite(ses)):
        return math.nan, math.nan
    s_w2 = float(np.nanmean(ses**2))
    return math.sqrt(s_w2), math.sqrt(max(0.0, var - s_w2)) if var == var else math.nan


@dataclass(frozen=True)
class Decision:
    verdict: str
    p_value: float  # what Holm adjusts; NaN for checks and unmeasured claims
    reason: str = ""
    p_equivalence: float = math.nan  # TOST inside ±SESOI, where the rule registers one
    p_against: float = math.nan  # the one-sided p-value of the opposite direction (what guards "contradicted")


def tost(e: Effect, low: float, high: float) -> float:
    """The p-value of two one-sided tests that the effect lies inside (low, high)."""
    return max(e.p_greater(low), e.p_less(high))


ZERO_WIDTH = Decision(NOT_MEASURED, math.nan, "zero-width interval (fewer than 2 units or identical values)")


@dataclass(frozen=True)
class Superiority:
    """The effect exceeds ``threshold`` (0: a difference; a margin: "a level above m") in the expected
    direction: the one-sided lower bound > threshold (upper < threshold for 'contradicted').

    With a smallest effect of interest (``sesoi``) the rule has three outcomes, so a null result
    can be informative: supported; equivalent — the effect lies within ±sesoi of the threshold by
    two one-sided tests at the same α (no effect worth having); else inconclusive (or contradicted)."""

    direction: Literal["greater", "less"] = "greater"
    alpha: float = 0.025  # one-sided: the lower bound of the two-sided 95 % interval
    threshold: float = 0.0
    sesoi: float | None = None
    name: str = field(default="superiority", init=False)

    def decide(self, e: Effect, alpha: float | None = None) -> Decision:
        a = self.alpha if alpha is None else alpha
        if e.zero_width:
            return ZERO_WIDTH
        t = self.threshold
        p_for = e.p_greater(t) if self.direction == "greater" else e.p_less(t)
        p_against = e.p_less(t) if self.direction == "greater" else e.p_greater(t)
        p_eq = tost(e, t - self.sesoi, t + self.sesoi) if self.sesoi else math.nan
        if p_for < a:
            return Decision(SUPPORTED, p_for, p_equivalence=p_eq, p_against=p_against)
        if p_eq < a:
            return Decision(EQUIVALENT, p_for, f"within ±{self.sesoi:g} (the smallest effect of interest) of "
                                               f"{t:g}: TOST p = {p_eq:.3g}", p_eq, p_against)
        if p_against < a:
            return Decision(CONTRADICTED, p_for, p_equivalence=p_eq, p_against=p_against)
        return Decision(INCONCLUSIVE, p_for, p_equivalence=p_eq, p_against=p_against)


@dataclass(frozen=True)
class Equivalence:
    """"≈ 0" / "alike": two one-sided tests — the (1 − 2α) interval lies inside ±margin. An interval
    wholly outside the margin contradicts it."""

    margin: float
    alpha: float = 0.05
    name: str = field(default="equivalence", init=False)

    def decide(self, e: Effect, alpha: float | None = None) -> Decision:
        a = self.alpha if alpha is None else alpha
        if e.zero_width:
            return ZERO_WIDTH
        p = tost(e, -self.margin, self.margin)
        if p < a:
            return Decision(EQUIVALENT, p)
        lo, hi = e.interval(1 - 2 * a)
        if lo > self.margin or hi < -self.margin:
            return Decision(CONTRADICTED, p)
        return Decision(INCONCLUSIVE, p)


@dataclass(frozen=True)
class NullTwin:
    """The harness's own A/A check on trained replicates (a recipe against itself): a *fault*
    ("contradicted") when the two-sided t test rejects a zero difference at ``alpha`` (α/2 per
    side: a correct harness reads it with probability α); *equivalent* when TOST at ``alpha``
    puts the difference inside ±margin (the smallest effect of interest of the claims it guards);
    else inconclusive. A fault outranks equivalence: a twin must not differ at all."""

    margin: float
    alpha: float = 0.025
    name: str = field(default="null twin", init=False)

    def decide(self, e: Effect, alpha: float | None = None) -> Decision:
        a = self.alpha if alpha is None else alpha
        if e.zero_width:
            return ZERO_WIDTH
        p_zero = 2 * min(e.p_greater(0.0), e.p_less(0.0))
        p_eq = tost(e, -self.margin, self.margin)
        if p_zero < a:
            return Decision(CONTRADICTED, p_zero, f"the twin differs from its original: two-sided p = {p_zero:.3g} "
                                                  f"< {a:.3g} (a harness fault)", p_eq)
        if p_eq < a:
            return Decision(EQUIVALENT, p_zero, f"within ±{self.margin:g}: TOST p = {p_eq:.3g}", p_eq)
        return Decision(INCONCLUSIVE, p_zero, p_equivalence=p_eq)


@dataclass(frozen=True)
class NonInferiority:
    """"Not worse": the one-sided upper bound of the harm (effect, larger = worse) is below the margin;
    a lower bound above the margin contradicts it."""

    margin: float
    alpha: float = 0.025  # one-sided: the upper bound of the two-sided 95 % interval
    name: str = field(default="non-inferiority", init=False)

    def decide(self, e: Effect, alpha: float | None = None) -> Decision:
        a = self.alpha if alpha is None else alpha
        if e.zero_width:
            return ZERO_WIDTH
        p, against = e.p_less(self.margin), e.p_greater(self.margin)
        if p < a:
            return Decision(SUPPORTED, p, p_against=against)
        if against < a:
            return Decision(CONTRADICTED, p, p_against=against)
        return Decision(INCONCLUSIVE, p, p_against=against)


def check(passed: bool, detail: str = "") -> Decision:
    """A property of the code or the data: reported as such, never as evidence with an interval."""
    return Decision(CHECK_PASSED if passed else CHECK_FAILED, math.nan, detail)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Holm's step-down thresholds: the level at which each hypothesis is tested (NaN p-values,
    e.g. checks, take no part). Reject in order of p while p_(i) < α/(m − i)."""
    idx = [i for i, p in enumerate(p_values) if p == p]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    levels = [math.nan] * len(p_values)
    still = True
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        levels[i] = level if still else 0.0
        if not p_values[i] < level:
            still = False  # every later hypothesis is retained
    return levels
