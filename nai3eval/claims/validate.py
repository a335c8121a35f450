"""``nai3 claims validate``: the registered spec's rules, run on simulated replicates.

The rules are only as good as their error rates on data shaped like ours: K training seeds per
look, G prompts per seed, a between-seed spread τ (retraining changes the checkpoint) and a
within-run standard error s_w (resampling prompts and noise). Each simulated experiment draws
D_k = θ + u_k + e_k (u_k ~ N(0, τ²), e_k ~ N(0, s_w²)) with an estimated SE_k (s_w·√(χ²_{G−1}/(G−1))),
and decides it exactly as a report does: ``two_stage`` at each look on the first K seeds, the
spec's rule at the look's α (``sequential``), one Holm family across the looks whose size only
supported claims leave (``holm_levels``), and the ledger rule (a verdict that ends a claim
stands). It measures:

* the family-wise error: all primaries null, P(any primary supported at any look) — must be ≤ α;
* the A/A rate: one null contrast (two arms of one recipe), P(declared different either way);
* the detection rate of a positive control at ``effect`` (default: the effect with 80 % power);
* the coverage of the final look's 95 % interval;
* the false-equivalence rate: a primary whose true effect is exactly its smallest effect of
  interest, P(declared equivalent at any look) — must be ≤ α (TOST at α/m per look, as a report).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from . import statistics as A
from .ledger import is_final
from .sequential import alpha_at, holm_levels
from .spec import ClaimsSpec


@dataclass(frozen=True)
class Validation:
    n: int
    tau: float
    s_w: float
    prompts: int
    primaries: int
    effect: float
    familywise_error: float
    aa_rate: float
    detection: float
    coverage: float
    alpha: float = 0.025
    sesoi: float = math.nan
    false_equivalence: float = math.nan

    @property
    def mc_se(self) -> float:
        """Monte Carlo standard error of a rate near α."""
        return math.sqrt(self.alpha * (1 - self.alpha) / self.n)


def _draw(rng: np.random.Generator, theta: float, k: int, tau: float, s_w: float, prompts: int
          ) -> list[A.SeedContrast]:
    d = theta + rng.normal(0, tau, k) + rng.normal(0, s_w, k)
    se = s_w * np.sqrt(rng.chisquare(prompts - 1, k) / (prompts - 1))
    return [A.SeedContrast(i, float(d[i]), float(se[i]), prompts) for i in range(k)]


def _decide(spec: ClaimsSpec, draws: list[list[A.SeedContrast]], sesoi: float | None = None,
            m_family: int | None = None) -> tuple[list[str], A.Effect]:
    """Each claim's final verdict over the looks (superiority, 'greater'; with ``sesoi`` also
    'equivalent', its TOST at the look's α over the ``m_family`` primaries), and the last claim's
    effect at the last look."""
    verdicts: list[str | None] = [None] * len(draws)
    effect = A.two_stage([])
    for look in spec.looks:
        alpha = alpha_at(look, spec.looks, spec.alpha, spec.boundary)
        rule = A.Superiority("greater", alpha, sesoi=sesoi)
        open_ = [i for i, v in enumerate(verdicts) if v is None]
        effects = {i: A.two_stage(draws[i][:look]) for i in open_}
        decisions = {i: rule.decide(effects[i]) for i in open_}
        m = len(draws) - sum(v == A.SUPPORTED for v in verdicts)  # as decide.py: only the supported leave
        levels = holm_levels([decisions[i].p_value for i in open_], [look] * len(open_), m, spec.looks, spec.alpha,
                             spec.boundary)
        for i, level in zip(open_, levels):
            d = decisions[i]
            verdict = d.verdict if d.verdict != A.SUPPORTED or d.p_value < level else A.INCONCLUSIVE
            if verdict == A.EQUIVALENT and not d.p_equivalence < alpha / (m_family or len(draws)):
                verdict = A.INCONCLUSIVE
            if is_final(verdict, look, spec.looks):
                verdicts[i] = verdict
        effect = A.two_stage(draws[-1][:look])
    return [v or A.INCONCLUSIVE for v in verdicts], effect


def power_effect(spec: ClaimsSpec, tau: float, s_w: float, power: float = 0.8, seeds: int | None = None) -> float:
    """The effect the t test at ``seeds`` (default: the last look) supports with ``power`` at that
    look's α: the noncentral t, D_k spread √(τ² + s_w²) (the earlier looks only add to it)."""
    k = seeds or spec.looks[-1]
    look = max((x for x in spec.looks if x <= k), default=spec.looks[-1])
    crit = stats.t.isf(alpha_at(look, spec.looks, spec.alpha, spec.boundary), k - 1)
    nc = optimize.brentq(lambda nc: stats.nct.sf(crit, k - 1, nc) - power, 0.0, 100.0)
    return nc * math.sqrt((tau ** 2 + s_w ** 2) / k)


def validate(spec: ClaimsSpec, tau: float, s_w: float, prompts: int = 16, n: int = 4000, effect: float | None = None,
             seed: int = 0, progress=None) -> Validation:
    """Simulate ``n`` experiments of each kind under ``spec`` (see the module docstring)."""
    # one independent stream per kind of experiment: a rate added later never moves the others
    rng_null, rng_aa, rng_control, rng_sesoi = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    k = spec.looks[-1]
    m = max(1, spec.primaries)
    effect = power_effect(spec, tau, s_w) if effect is None else effect
    sesois = [c.rule.sesoi for c in spec.claims if c.role == "primary" and c.rule.sesoi]
    sesoi = float(np.median(sesois)) if sesois else None
    fwe = aa = detected = covered = false_eq = 0
    for _ in (progress(range(n)) if progress else range(n)):
        if sesoi:
            at_sesoi, _ = _decide(spec, [_draw(rng_sesoi, sesoi, k, tau, s_w, prompts)], sesoi, m)
            false_eq += at_sesoi[0] == A.EQUIVALENT
        null, _ = _decide(spec, [_draw(rng_null, 0.0, k, tau, s_w, prompts) for _ in range(m)])
        fwe += A.SUPPORTED in null
        twin, _ = _decide(spec, [_draw(rng_aa, 0.0, k, tau, s_w, prompts)])
        aa += twin[0] in (A.SUPPORTED, A.CONTRADICTED)
        control, last = _decide(spec, [_draw(rng_control, effect, k, tau, s_w, prompts)])
        detected += control[0] == A.SUPPORTED
        lo, hi = last.interval(0.95)
        covered += lo <= effect <= hi
    return Validation(n, tau, s_w, prompts, m, effect, fwe / n, aa / n, detected / n, covered / n, spec.alpha,
                      sesoi or math.nan, false_eq / n if sesoi else math.nan)
