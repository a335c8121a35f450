"""Interval-censored seeds (docs/claims.md, "Censored optima").

Some per-seed estimates are known only as a bound: a CFG optimum whose KID minimum sits at the
grid's edge lies at or beyond that edge, so D_k is "≥ x" or "≤ x". Putting the edge value in the
t test biases the mean towards the grid and the interval undercovers; leaving the seed out
selects on the outcome. Here each seed is an interval [low, high] (equal ends: observed) under the
same normal model the t test assumes, D_k ~ N(μ, σ²), and μ is judged by its profile likelihood.

The profile likelihood-ratio statistic is mapped onto the t scale, T = √((K − 1)(e^{LR/K} − 1)):
with nothing censored this is exactly |D̄ − μ|/(s/√K), so the interval, the p-values and every
verdict equal the t test's; censoring changes only what the censored seeds contribute (their
probability of lying beyond the bound, not a value at it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from .statistics import CHECKPOINT, MIN_SEEDS_FOR_RECIPE, RECIPE, Effect, SeedContrast, spread, two_stage


def _loglik(mu: float, log_sigma: float, exact: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    s = math.exp(log_sigma)
    ll = float(np.sum(stats.norm.logpdf((exact - mu) / s)) - len(exact) * log_sigma)
    lo, hi = (low - mu) / s, (high - mu) / s
    # P(low ≤ D ≤ high), in the tail that keeps precision
    mass = np.where(lo > 0, stats.norm.sf(lo) - stats.norm.sf(hi), stats.norm.cdf(hi) - stats.norm.cdf(lo))
    return ll + float(np.sum(np.log(np.maximum(mass, 1e-300))))


def _split(cs: Sequence[SeedContrast]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed values, censored seeds' lower ends, their upper ends)."""
    cens = [c.bounds for c in cs if c.censored]
    return (np.array([c.value for c in cs if not c.censored], dtype=float),
            np.array([lo for lo, _ in cens], dtype=float), np.array([hi for _, hi in cens], dtype=float))


@dataclass(frozen=True)
class CensoredEffect(Effect):
    """μ̂ and its profile-likelihood interval from seeds some of which are bounds. ``se`` is σ̂/√K
    (what power is planned with); ``value`` is μ̂. Needs two observed seeds that differ: with fewer,
    σ has no estimate and nothing is decided (``zero_width``)."""

    log_sigma_hat: float = math.nan
    loglik_hat: float = math.nan
    informative: int = 0  # seeds that bound D_k on at least one side: the K of the t scale


    def _profile(self, mu: float) -> float:
        exact, low, high = _split(self.per_seed)
        centre = self.log_sigma_hat
        res = optimize.minimize_scalar(lambda ls: -_loglik(mu, ls, exact, low, high),
                                       bounds=(centre - 12.0, centre + 12.0), method="bounded",
                                       options={"xatol": 1e-10})
        return -float(res.fun)

    def t_stat(self, mu: float) -> float:
        """The signed profile-likelihood statistic for μ on the t scale (exactly the t statistic
        (D̄ − μ)/(s/√K) when nothing is censored)."""
        k = self.informative
        lr = max(0.0, 2.0 * (self.loglik_hat - self._profile(mu)))
        t = math.sqrt((k - 1) * math.expm1(lr / k)) if lr / k < 700 else math.inf
        return math.copysign(t, self.value - mu)

    @property
    def zero_width(self) -> bool:
        return not (math.isfinite(self.value) and math.isfinite(self.log_sigma_hat))

    def _bound(self, t_crit: float, direction: int) -> float:
        step = max(math.exp(self.log_sigma_hat), 1e-9)
        inner = self.value
        for _ in range(60):
            outer = self.value + direction * step
            if abs(self.t_stat(outer)) >= t_crit:
                return float(optimize.brentq(lambda m: abs(self.t_stat(m)) - t_crit, min(inner, outer),
                                             max(inner, outer), xtol=1e-12))
            inner, step = outer, step * 2
        return direction * math.inf

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        if self.zero_width:
            return self.value, self.value
        t_crit = float(stats.t.ppf(0.5 + confidence / 2, self.df))
        return self._bound(t_crit, -1), self._bound(t_crit, +1)

    def p_greater(self, threshold: float = 0.0) -> float:
        return float(stats.t.sf(self.t_stat(threshold), self.df)) if not self.zero_width else math.nan

    def p_less(self, threshold: float = 0.0) -> float:
        return float(stats.t.cdf(self.t_stat(threshold), self.df)) if not self.zero_width else math.nan


def censored_two_stage(contrasts: Sequence[SeedContrast]) -> CensoredEffect:
    """The recipe-level effect when some D_k are bounds: the maximum-likelihood μ̂ of the censored
    normal model, judged on the t scale with K − 1 degrees of freedom, as the t test is."""
    cs = tuple(contrasts)
    # a seed censored both ways says nothing about μ: it adds no degree of freedom
    k = sum(1 for c in cs if math.isfinite(c.bounds[0]) or math.isfinite(c.bounds[1]))
    level = RECIPE if k >= MIN_SEEDS_FOR_RECIPE else CHECKPOINT
    exact, low, high = _split(cs)
    n_cens = len(low)
    unbounded = f"; {len(cs) - k} unbounded seed(s) left out of the degrees of freedom" if k < len(cs) else ""
    if len(exact) < 2 or float(np.ptp(exact)) == 0.0:
        return CensoredEffect(math.nan, math.nan, max(k - 1, 0), level, cs, why=(
            f"{n_cens} of {len(cs)} seeds are censored (bounds only); the censored analysis needs two seeds with "
            f"observed, different values to estimate the spread{unbounded}"), informative=k)
    start = np.array([float(exact.mean()), math.log(float(exact.std(ddof=0)) or 1e-6)])
    res = optimize.minimize(lambda p: -_loglik(p[0], p[1], exact, low, high), start, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    mu, log_sigma = float(res.x[0]), float(res.x[1])
    sigma2 = math.exp(2 * log_sigma) * k / (k - 1)  # on the scale of var(D_k, ddof=1), as the t test's
    return CensoredEffect(mu, math.sqrt(sigma2 / k), k - 1, level, cs, *spread(cs, sigma2),
                          f"{n_cens} of {len(cs)} seeds censored: interval-censored (profile likelihood) analysis"
                          + unbounded, log_sigma, -float(res.fun), k)


def recipe_effect(contrasts: Sequence[SeedContrast]) -> Effect:
    """The recipe-level effect over training seeds: the t test (``two_stage``), or the censored
    analysis where some seed is known only as a bound."""
    cs = tuple(contrasts)
    return censored_two_stage(cs) if any(c.censored for c in cs) else two_stage(cs)
