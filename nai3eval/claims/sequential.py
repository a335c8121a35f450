"""α spent across the looks: group-sequential boundaries for verdicts taken at several K.

A claim is looked at when K training seeds exist for each K in the spec's ``looks`` (3 and 5).
Testing each look at the full one-sided α lets the null reach "supported" at either look with
probability ≈ 0.045 instead of 0.025. The spec therefore names a boundary family, and each look
tests at its nominal level α_i, chosen so that under the null the chance of crossing at *any*
look is α (the statistic at look i is Z_i with corr(Z_i, Z_j) = √(K_i/K_j), the information
fractions of a mean over independent seeds):

* ``pocock``: one critical value c at every look;
* ``obrien_fleming``: c_i = C·√(K_max/K_i), strict early and close to α at the last look.

The values for equally spaced looks match Jennison & Turnbull's tables (Pocock C_P(2) = 2.178,
C_P(3) = 2.289; O'Brien–Fleming C_B(2) = 1.977, C_B(3) = 2.004, two-sided α = 0.05). With few
seeds the statistic is a t, not a Z; each look applies its nominal α_i to the t test with K_i − 1
degrees of freedom; its boundaries keep their shape on the scale of each look's p-value and are
calibrated on the t statistics' own joint law (``t_nominal_alphas``), and ``nai3 claims validate`` measures the family-wise error that results.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
from scipy import optimize, stats

Boundary = Literal["pocock", "obrien_fleming"]


def _crossing(critical: Sequence[float], fractions: Sequence[float]) -> float:
    """P(Z_i ≥ c_i for some i) for the canonical joint distribution at these information fractions."""
    t = np.asarray(fractions, dtype=float)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    if len(t) == 1:
        return float(stats.norm.sf(critical[0]))
    stay = stats.multivariate_normal.cdf(np.asarray(critical, dtype=float), mean=np.zeros(len(t)), cov=cov,
                                         abseps=1e-7, releps=1e-6, rng=np.random.default_rng(0))  # the same α every time
    return float(1.0 - stay)


def _shape(looks: tuple[int, ...], boundary: Boundary) -> np.ndarray:
    """Each look's critical value relative to the boundary's constant: Pocock 1, O'Brien–Fleming
    √(K_max/K)."""
    if boundary not in ("pocock", "obrien_fleming"):
        raise ValueError(f"unknown boundary {boundary!r}: pocock or obrien_fleming")
    return np.array([1.0 if boundary == "pocock" else math.sqrt(looks[-1] / k) for k in looks])


@lru_cache(maxsize=64)
def critical_values(looks: tuple[int, ...], alpha: float, boundary: Boundary = "obrien_fleming") -> tuple[float, ...]:
    """The critical Z value at each look: the null crosses one of them with probability ``alpha``
    (the normal boundary, checked against the published tables; the rules use ``t_nominal_alphas``)."""
    shape, fractions = _shape(looks, boundary), [k / looks[-1] for k in looks]
    c = optimize.brentq(lambda c: _crossing(c * shape, fractions) - alpha, 0.5, 10.0, xtol=1e-7)
    return tuple(float(c * s) for s in shape)


T_DRAWS = 500_000  # null experiments behind the t boundaries: α to ±0.0007 (3 SE)


@lru_cache(maxsize=8)
def _null_maxima(looks: tuple[int, ...], boundary: Boundary) -> tuple[np.ndarray, np.ndarray]:
    """(max_K z_K / shape_K over the null draws, shape): see ``t_nominal_alphas``."""
    shape = _shape(looks, boundary)
    rng = np.random.default_rng(20261203)
    d = rng.standard_normal((T_DRAWS, looks[-1]))
    z = np.stack([stats.norm.isf(stats.t.sf(d[:, :k].mean(1) / d[:, :k].std(1, ddof=1) * math.sqrt(k), k - 1))
                  for k in looks], axis=1)
    return (z / shape).max(axis=1), shape


@lru_cache(maxsize=64)
def t_nominal_alphas(looks: tuple[int, ...], alpha: float, boundary: Boundary = "obrien_fleming"
                     ) -> tuple[float, ...]:
    """Each look's one-sided level for the one-sample t statistic T_K = √K·mean/sd over the first
    K seeds, such that the null crosses at some look with probability ``alpha``.

    With three to five seeds the statistic is a t with 2 to 4 degrees of freedom, and its joint law
    across looks is not the normal one: the normal boundaries applied to t p-values let the null
    through at ≈ 0.028 instead of 0.025. Each T_K is mapped to the normal quantile of its own
    p-value (z_K = Φ̄⁻¹(P(t_{K−1} ≥ T_K)): exactly N(0, 1) under the null), the boundary keeps its
    shape on that scale (Pocock: constant; O'Brien–Fleming: ∝ √(K_max/K)), and its constant is the
    (1 − α) quantile of max_K z_K / shape_K. Under the null the D_k are i.i.d. normal, so this law
    is pivotal (free of the effect's scale): drawn once, seeded."""
    maxima, shape = _null_maxima(looks, boundary)
    c = float(np.quantile(maxima, 1 - alpha))
    return tuple(float(stats.norm.sf(c * s)) for s in shape)


def holm_levels(p_values: Sequence[float], at_looks: Sequence[int | None], m: int, looks: Sequence[int],
                alpha: float, boundary: Boundary = "obrien_fleming") -> list[float]:
    """Holm's step-down over one family of ``m`` hypotheses (fixed by the spec: a hypothesis not
    measured, or retained at an earlier look, still counts; only those already rejected have left
    it), each tested at its own look: the step of rank r is at that look's level of a boundary for
    α/(m − r), so a step's α is spent over the looks like the whole α is (below the first look,
    ``None``: α/(m − r) itself). NaN p-values take no part; after the first hypothesis retained,
    every later one is retained (level 0)."""
    idx = [i for i, p in enumerate(p_values) if p == p]
    order = sorted(idx, key=lambda i: p_values[i])
    levels = [math.nan] * len(p_values)
    still = True
    for rank, i in enumerate(order):
        share = alpha / max(1, m - rank)
        level = alpha_at(at_looks[i], looks, share, boundary) if at_looks[i] else share
        levels[i] = level if still else 0.0
        still = still and p_values[i] < level
    return levels


def nominal_alphas(looks: Sequence[int], alpha: float, boundary: Boundary = "obrien_fleming") -> tuple[float, ...]:
    """The one-sided level each look's t test is taken at (``t_nominal_alphas``)."""
    return t_nominal_alphas(tuple(looks), alpha, boundary)


def alpha_at(look: int, looks: Sequence[int], alpha: float, boundary: Boundary = "obrien_fleming") -> float:
    """The nominal one-sided α of the look taken at K = ``look``."""
    return nominal_alphas(looks, alpha, boundary)[list(looks).index(look)]
