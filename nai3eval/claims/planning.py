"""Planning numbers that describe the registered design, not an imagined one (docs/claims.md,
"Futility and planning").

* ``sd_upper``: an upper confidence bound on the spread of D_k (2 degrees of freedom at K = 3 make
  the point estimate an optimist's number).
* ``conditional_power``: the chance that the claim is supported at K_max if its true effect is its
  smallest effect of interest, given the seeds so far (the B-value of a mean over seeds). Below the
  registered threshold the claim is *futile*: non-binding, since no boundary assumes it.
* ``simulate``: the registered design itself — a look at every K from the first look to K_max, each
  at the level ``sequential.nominal_levels`` gives, futility included — run on simulated seeds,
  vectorised. It gives the design's power and expected K for the report, and is the single-claim
  half of ``nai3 claims validate``.
* ``variance_ratio_interval``: τ̂²/s_w² with its F-based interval (on 2 degrees of freedom the point
  estimate reads > 1 in 15 % of cases where the truth is 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .sequential import Spending, nominal_levels


def sd_upper(sd, k: int, confidence: float):
    """The one-sided upper ``confidence`` bound on σ from a sample sd on k − 1 degrees of freedom
    (array-friendly; NaN below 2 seeds)."""
    if k < 2:
        return sd * math.nan
    return sd * math.sqrt((k - 1) / stats.chi2.ppf(1 - confidence, k - 1))


def effect_sd_upper(e, confidence: float) -> float:
    """The upper bound on the spread of D_k behind an effect (a censored effect's from the seeds that
    bound it: an unbounded seed adds no information)."""
    k = getattr(e, "informative", 0) or e.n_seeds
    return sd_upper(e.se * math.sqrt(k), k, confidence)


def final_critical(history: tuple[int, ...], k_max: int, alpha: float, spending: Spending) -> float:
    """The normal critical value of the last look at K_max, given the looks taken so far and one
    planned at every later K."""
    planned = tuple(sorted(set(history) | set(range((history[-1] if history else 2) + 1, k_max + 1))))
    return float(stats.norm.isf(max(nominal_levels(planned, k_max, alpha, spending)[-1], 1e-300)))


def conditional_power(mean, sd, k, k_max: int, theta: float, c_final: float):
    """P(the mean over K_max seeds reaches c_final·σ/√K_max | the first k seeds' mean ``mean``,
    each later seed ~ N(θ, σ²)), in the claim's direction (array-friendly). At k ≥ K_max: 0 or 1."""
    rest = k_max - np.asarray(k, dtype=float)
    need = c_final * sd * math.sqrt(k_max) - k * mean - rest * theta
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rest > 0, stats.norm.sf(need / (sd * np.sqrt(np.maximum(rest, 1e-12)))),
                        (need <= 0).astype(float))


def variance_ratio_interval(var_d: float, s_w2: float, k: int, prompts: int, confidence: float = 0.90
                            ) -> tuple[float, float, float]:
    """(τ̂²/s_w², low, high): var(D_k)/s_w² is F(K − 1, K(G − 1))-distributed times (τ² + s_w²)/s_w²,
    so its interval maps to one for τ²/s_w² = (τ² + s_w²)/s_w² − 1 (clipped at 0)."""
    if not (k >= 2 and s_w2 > 0 and math.isfinite(var_d) and prompts >= 2):
        return math.nan, math.nan, math.nan
    r, d1, d2 = var_d / s_w2, k - 1, k * (prompts - 1)
    hi_f, lo_f = stats.f.ppf(0.5 + confidence / 2, d1, d2), stats.f.ppf(0.5 - confidence / 2, d1, d2)
    return max(0.0, r - 1), max(0.0, r / hi_f - 1), max(0.0, r / lo_f - 1)


@dataclass(frozen=True)
class Design:
    """One claim's registered sequential design: looks at every K in [first_look, k_max], one-sided
    level ``alpha`` spent by ``spending``, futility at conditional power < ``futility`` (sd taken at
    its upper ``sd_confidence`` bound, effect of interest ``sesoi``; None: no futility)."""

    first_look: int
    k_max: int
    alpha: float
    spending: Spending = "obrien_fleming"
    sesoi: float | None = None
    futility: float = 0.10
    sd_confidence: float = 0.80

    @property
    def looks(self) -> tuple[int, ...]:
        return tuple(range(self.first_look, self.k_max + 1))

    def levels(self) -> tuple[float, ...]:
        return nominal_levels(self.looks, self.k_max, self.alpha, self.spending)


@dataclass(frozen=True)
class Simulated:
    supported: np.ndarray  # bool per experiment: crossed the efficacy boundary at some look
    futile: np.ndarray  # bool: stopped for futility first
    stop_k: np.ndarray  # the K at which it ended (K_max if it never did)
    covered: np.ndarray  # bool: θ inside every repeated CI the experiment took

    @property
    def power(self) -> float:
        return float(self.supported.mean())

    @property
    def expected_k(self) -> float:
        return float(self.stop_k.mean())


def simulate(design: Design, theta: float, sd: float, n: int, rng: np.random.Generator,
             futility: bool = True, observed: np.ndarray | None = None) -> Simulated:
    """``n`` experiments of one claim whose seeds are N(θ, sd²), decided as a report decides it:
    the t test at each look's level on the first K seeds, then futility (non-binding: it only stops).
    Coverage is of the repeated CIs (two-sided, each look's level on either side). ``observed``: the
    seeds measured so far, which every experiment shares; their looks were taken and left the claim
    open, so only the looks after them are simulated (the continuation of an open claim)."""
    levels = design.levels()
    d = rng.normal(theta, sd, (n, design.k_max))
    taken = 0
    if observed is not None:
        taken = min(len(observed), design.k_max)
        d[:, :taken] = np.asarray(observed, float)[:taken]
    s, ss = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    c_final = float(stats.norm.isf(max(levels[-1], 1e-300)))
    alive = np.ones(n, dtype=bool)
    sup, fut, covered = np.zeros(n, bool), np.zeros(n, bool), np.ones(n, bool)
    stop = np.full(n, design.k_max)
    for k, level in zip(design.looks, levels):
        if k <= taken:
            continue
        mean = s[:, k - 1] / k
        sdk = np.sqrt(np.maximum(ss[:, k - 1] - k * mean * mean, 0.0) / (k - 1))
        se = sdk / math.sqrt(k)
        half = stats.t.isf(max(level, 1e-300), k - 1) * se
        covered &= ~alive | ((mean - half <= theta) & (theta <= mean + half))
        hit = alive & (stats.t.sf(mean / se, k - 1) < level)
        sup |= hit
        stop[hit] = k
        alive &= ~hit
        if futility and design.sesoi and k < design.k_max:
            upper = sd_upper(sdk, k, design.sd_confidence)
            low = alive & (conditional_power(mean, upper, k, design.k_max, design.sesoi, c_final) < design.futility)
            fut |= low
            stop[low] = k
            alive &= ~low
    return Simulated(sup, fut, stop, covered)
