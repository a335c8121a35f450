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
degrees of freedom, and ``nai3 claims validate`` measures the family-wise error that results.
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


@lru_cache(maxsize=64)
def critical_values(looks: tuple[int, ...], alpha: float, boundary: Boundary = "obrien_fleming") -> tuple[float, ...]:
    """The critical Z value at each look: the null crosses one of them with probability ``alpha``."""
    fractions = [k / looks[-1] for k in looks]
    shape = [1.0] * len(looks) if boundary == "pocock" else [math.sqrt(1 / f) for f in fractions]
    if boundary not in ("pocock", "obrien_fleming"):
        raise ValueError(f"unknown boundary {boundary!r}: pocock or obrien_fleming")
    c = optimize.brentq(lambda c: _crossing([c * s for s in shape], fractions) - alpha, 0.5, 10.0, xtol=1e-7)
    return tuple(c * s for s in shape)


def nominal_alphas(looks: Sequence[int], alpha: float, boundary: Boundary = "obrien_fleming") -> tuple[float, ...]:
    """The one-sided level each look tests at (1 − Φ(c_i))."""
    return tuple(float(stats.norm.sf(c)) for c in critical_values(tuple(looks), alpha, boundary))


def alpha_at(look: int, looks: Sequence[int], alpha: float, boundary: Boundary = "obrien_fleming") -> float:
    """The nominal one-sided α of the look taken at K = ``look``."""
    return nominal_alphas(looks, alpha, boundary)[list(looks).index(look)]
