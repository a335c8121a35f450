"""α spent across the looks (docs/claims.md, "Looks, α spending and the ledger").

A claim registers a maximum number of training seeds K_max and is looked at whenever K seeds exist,
from the spec's first look (K = 3) on — in practice every night. A fixed pair of looks (3, 5) could
not be extended: registering more looks later (3, 5, 10) let the null through at 0.042. Here α is
*spent* as a function of the information fraction t = K/K_max (Lan & DeMets 1983), so a look may
happen at any K and the looks actually taken decide each boundary:

* ``obrien_fleming`` (O'Brien–Fleming type): α(t) = 2 − 2Φ(z_{1−α/2}/√t) — almost nothing early;
* ``pocock`` (Pocock type): α(t) = α·ln(1 + (e − 1)t).

At look j the boundary c_j is such that the null crosses it, having crossed no earlier look, with
probability α(t_j) − α(t_{j−1}). ``critical_values`` solves this for the normal statistic (checked
against published tables). With 3 to 10 seeds the statistic is a t, whose joint law across looks is
not the normal one, so the rules use ``nominal_levels``: each T_K is mapped to the normal quantile of
its own p-value (z_K = Φ̄⁻¹(P(t_{K−1} ≥ T_K)), exactly N(0, 1) under the null) and the same
increments are spent on the joint law of those z, drawn once from independent normal seeds (seeded:
the same levels every time; the law is free of the effect's scale). A look's nominal level is then
the p-value its t test must beat.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
from scipy import stats

Spending = Literal["obrien_fleming", "pocock"]
K_MAX_LIMIT = 20  # the null draws cover this many seeds
NULL_DRAWS = 300_000  # the t law's Monte Carlo: a level's spent α to ±0.0009 relative (3 SE) at α = 0.025


def spent(t: float, alpha: float, spending: Spending = "obrien_fleming") -> float:
    """The cumulative one-sided α spent by information fraction ``t`` (0 < t ≤ 1; α at t = 1)."""
    t = min(max(t, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if spending == "obrien_fleming":
        return float(2.0 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(t)))
    if spending == "pocock":
        return float(alpha * math.log(1.0 + (math.e - 1.0) * t))
    raise ValueError(f"unknown spending function {spending!r}: obrien_fleming or pocock")


def _fractions(looks: Sequence[int], k_max: int) -> list[float]:
    if not looks or list(looks) != sorted(set(looks)) or looks[-1] > k_max:
        raise ValueError(f"looks {list(looks)} must be increasing seed counts up to K_max = {k_max}")
    return [k / k_max for k in looks]


def critical_values(looks: tuple[int, ...], k_max: int, alpha: float, spending: Spending = "obrien_fleming"
                    ) -> tuple[float, ...]:
    """The normal-theory boundaries c_j (Z ≥ c_j at look j) by numerical integration: the
    independent-increments law of a mean over seeds, corr(Z_i, Z_j) = √(K_i/K_j)."""
    from scipy import optimize

    t = np.asarray(_fractions(looks, k_max))
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    out: list[float] = []

    def stay(c: list[float]) -> float:
        j = len(c)
        return float(stats.multivariate_normal.cdf(np.asarray(c), mean=np.zeros(j), cov=cov[:j, :j],
                                                   abseps=1e-6, releps=1e-5, rng=np.random.default_rng(0))
                     if j > 1 else stats.norm.cdf(c[0]))

    for j in range(len(t)):
        target = 1.0 - spent(float(t[j]), alpha, spending)  # P(no crossing up to look j)
        out.append(float(optimize.brentq(lambda c: stay(out + [c]) - target, 0.0, 12.0, xtol=1e-8)))
    return tuple(out)


@lru_cache(maxsize=1)
def _null_z() -> np.ndarray:
    """(draws, K_MAX_LIMIT + 1): column K holds z_K, the normal quantile of the one-sided t p-value
    of the first K independent N(0, 1) seeds (columns 0 and 1 unused)."""
    rng = np.random.default_rng(20261207)
    d = rng.standard_normal((NULL_DRAWS, K_MAX_LIMIT))
    s, ss = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    z = np.full((NULL_DRAWS, K_MAX_LIMIT + 1), -np.inf)
    for k in range(2, K_MAX_LIMIT + 1):
        mean = s[:, k - 1] / k
        sd = np.sqrt(np.maximum(ss[:, k - 1] - k * mean * mean, 0.0) / (k - 1))
        z[:, k] = stats.norm.isf(stats.t.sf(mean / sd * math.sqrt(k), k - 1))
    return z


@lru_cache(maxsize=4096)
def nominal_levels(looks: tuple[int, ...], k_max: int, alpha: float, spending: Spending = "obrien_fleming"
                   ) -> tuple[float, ...]:
    """Each look's one-sided level for its t test (p < level rejects), spending α(K/K_max) over the
    looks ``looks`` actually taken (see the module docstring). Deterministic."""
    if k_max > K_MAX_LIMIT:
        raise ValueError(f"K_max {k_max} > {K_MAX_LIMIT}: the t law is drawn for up to {K_MAX_LIMIT} seeds")
    t = _fractions(looks, k_max)
    z = _null_z()
    alive = np.ones(NULL_DRAWS, dtype=bool)
    crossed, levels = 0, []
    for k, frac in zip(looks, t):
        if not levels:  # the first look: z_K is exactly N(0, 1), so its level is what it spends
            c = float(stats.norm.isf(spent(frac, alpha, spending)))
        else:
            want = int(round(spent(frac, alpha, spending) * NULL_DRAWS)) - crossed  # draws to cross here
            zk = z[alive, k]
            if want <= 0:
                levels.append(0.0)
                continue
            want = min(want, zk.size)
            c = float(np.partition(zk, zk.size - want)[zk.size - want])  # the want-th largest survivor
        hit = alive & (z[:, k] >= c)
        crossed += int(hit.sum())
        alive &= ~hit
        levels.append(float(stats.norm.sf(c)))
    return tuple(levels)


def level_at(looks: Sequence[int], k_max: int, alpha: float, spending: Spending = "obrien_fleming") -> float:
    """The nominal level of the last of ``looks`` (the earlier ones are those already taken)."""
    return nominal_levels(tuple(looks), k_max, alpha, spending)[-1]


def holm_levels(p_values: Sequence[float], histories: Sequence[tuple[int, ...] | None], k_maxes: Sequence[int],
                m: int, alpha: float, spending: Spending = "obrien_fleming", stop: bool = True) -> list[float]:
    """Holm's step-down over one family of ``m`` hypotheses (fixed by the spec: a hypothesis not
    measured, or retained, still counts; only those already rejected have left it), each tested at
    its own look: the step of rank r is at the current look's level of hypothesis i's spending for
    α/(m − r) over its own looks (``histories[i]``: the K of every look taken, this one last;
    ``None``: below the first look, α/(m − r) itself). NaN p-values take no part; after the first
    hypothesis retained, every later one is retained (level 0; ``stop=False``: each rank's level
    regardless, for showing the interval at it)."""
    idx = [i for i, p in enumerate(p_values) if p == p]
    order = sorted(idx, key=lambda i: p_values[i])
    levels = [math.nan] * len(p_values)
    still = True
    for rank, i in enumerate(order):
        share = alpha / max(1, m - rank)
        level = level_at(histories[i], k_maxes[i], share, spending) if histories[i] else share
        levels[i] = level if still or not stop else 0.0
        still = still and p_values[i] < level
    return levels
