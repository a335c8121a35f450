"""``nai3 claims validate``: the registered spec's procedure, run on simulated replicates.

The rules are only as good as their error rates on data shaped like ours: per claim K training
seeds whose contrasts D_k spread √(τ² + s_w²) (τ between seeds, s_w within a run). ``family``
decides m primaries exactly as a report does (``looks``): a look at every K from the first look to
K_max on the first K seeds, each at the level α-spending gives (``sequential``), Holm over the
primaries in each direction, leave-one-seed-out robustness, futility, and the ledger's rule that a
final verdict ends a claim and only final *supported* (*contradicted*) leave their family. It is
vectorised over experiments; ``replay`` runs the same draws through the report's own functions, and
the tests hold the two to the same verdicts. It measures:

* the family-wise error of *supported*: all primaries null, P(any primary shown supported at any
  look) — must be ≤ α; with futility switched off as well (non-binding: it can only lower it);
* the family-wise error of *contradicted*, the same way;
* the null twin's false-fault rate (a correct harness) and its power against a fault of ±margin;
* the false-futility rate: a primary whose true effect is its smallest effect of interest,
  P(declared futile); and the detection rate of a positive control;
* the coverage of the repeated confidence intervals: θ inside every interval a claim showed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .planning import conditional_power, final_critical, sd_upper
from .sequential import nominal_levels
from .spec import ClaimsSpec

SUP, EQV, CON, FUT, INC = 1, 2, 3, 4, 0  # verdict codes of ``family``


@dataclass(frozen=True)
class Validation:
    n: int
    tau: float
    s_w: float
    primaries: int
    effect: float
    sesoi: float
    familywise_error: float  # supported, futility on
    familywise_error_no_futility: float
    contradicted_error: float
    contradicted_error_no_futility: float
    power_at_sesoi: float
    twin_false_fault: float
    twin_power: float
    false_futility: float
    detection: float
    coverage: float
    alpha: float = 0.025

    @property
    def mc_se(self) -> float:
        """Monte Carlo standard error of a rate near α."""
        return math.sqrt(self.alpha * (1 - self.alpha) / self.n)


@dataclass(frozen=True)
class Family:
    shown: np.ndarray  # (n, m) verdict codes ever shown (bit per code)
    final: np.ndarray  # (n, m) final verdict code (INC where none)
    covered: np.ndarray  # (n, m) θ inside every repeated CI shown


def _stats(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = d[..., :k]
    return x.mean(-1), x.std(-1, ddof=1)


def _levels(spec: ClaimsSpec, k_max: int, k: int, m: int) -> np.ndarray:
    """[d] → the level at look K of a claim looked at every K so far, for α/d (d = 1 … m; [0] = [1])."""
    looks = tuple(range(spec.first_look, k + 1))
    out = [nominal_levels(looks, k_max, spec.alpha / d, spec.spending)[-1] for d in range(1, m + 1)]
    return np.array([out[0], *out])


def _holm(p: np.ndarray, m_eff: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down per row: (rejected, each hypothesis's rank level); NaN p take no part."""
    n, m = p.shape
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=1)
    still = np.ones(n, dtype=bool)
    rejected, level = np.zeros((n, m), dtype=bool), np.zeros((n, m))
    rows = np.arange(n)
    for r in range(m):
        i = order[:, r]
        pi = p[rows, i]
        li = table[np.clip(m_eff - r, 1, len(table) - 1)]
        ok = ~np.isnan(pi)
        level[rows[ok], i[ok]] = li[ok]
        still &= ok & (pi < li)
        rejected[rows[still], i[still]] = True
    return rejected, level


def _robust(d: np.ndarray, k: int, level: np.ndarray, greater: np.ndarray) -> np.ndarray:
    """Every leave-one-out subset of the first K seeds still rejects at ``level`` in its direction."""
    x = d[..., :k]
    ok = np.ones(x.shape[:-1], dtype=bool)
    if k < 3:
        return ~ok
    for j in range(k):
        sub = np.delete(x, j, axis=-1)
        mean, sd = sub.mean(-1), sub.std(-1, ddof=1)
        t = mean / (sd / math.sqrt(k - 1))
        p = np.where(greater, stats.t.sf(t, k - 2), stats.t.cdf(t, k - 2))
        ok &= p < level
    return ok


def family(spec: ClaimsSpec, theta: np.ndarray, sd: float, n: int, rng: np.random.Generator, sesoi: float,
           futility: bool = True) -> Family:
    """``n`` experiments of m = len(θ) primaries ('greater', smallest effect of interest ``sesoi``)."""
    m, k_max = len(theta), spec.k_max
    d = rng.normal(np.asarray(theta)[None, :, None], sd, (n, m, k_max))
    shown, final = np.zeros((n, m), dtype=np.int64), np.full((n, m), -1)
    covered = np.ones((n, m), dtype=bool)
    c_final = final_critical(tuple(range(spec.first_look, k_max + 1)), k_max, spec.alpha / m, spec.spending)
    for k in range(spec.first_look, k_max + 1):
        lev = _levels(spec, k_max, k, m)
        open_ = final < 0
        mean, s = _stats(d, k)
        se = s / math.sqrt(k)
        t = mean / se
        p_for = np.where(open_, stats.t.sf(t, k - 1), np.nan)
        p_against = np.where(open_, stats.t.cdf(t, k - 1), np.nan)
        p_eq = np.maximum(stats.t.sf((mean + sesoi) / se, k - 1), stats.t.cdf((mean - sesoi) / se, k - 1))
        m_for = m - (final == SUP).sum(1)
        m_against = m - (final == CON).sum(1)
        rej_for, lev_for = _holm(p_for, m_for, lev)
        rej_against, lev_against = _holm(p_against, m_against, lev)
        eq = open_ & ~rej_for & (p_eq < lev[m])  # its own family: Bonferroni over every primary
        con = open_ & ~rej_for & ~eq & rej_against
        verdict = np.where(rej_for, SUP, np.where(eq, EQV, np.where(con, CON, INC)))
        level = np.where(con, lev_against, lev_for)
        half = stats.t.isf(np.maximum(level, 1e-300), k - 1) * se
        covered &= ~open_ | ((mean - half <= theta[None, :]) & (np.asarray(theta)[None, :] <= mean + half))
        robust = _robust(d, k, level, verdict != CON)
        last = k == k_max
        if futility and not last:
            upper = sd_upper(s, k, spec.futility.sd_confidence)
            low = conditional_power(mean, upper, k, k_max, sesoi, c_final) < spec.futility.conditional_power
            verdict = np.where(open_ & (verdict == INC) & low, FUT, verdict)
        shown |= np.where(open_, 1 << verdict, 0)
        ends = open_ & (last | np.isin(verdict, (EQV, FUT)) | (np.isin(verdict, (SUP, CON)) & robust))
        final = np.where(ends, verdict, final)
    return Family(shown, np.where(final < 0, INC, final), covered)


def twin(spec: ClaimsSpec, theta: float, sd: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """The null twin at every look (two-sided fault test at the look's level, robustness): per
    experiment whether a fault was ever shown."""
    k_max = spec.k_max
    d = rng.normal(theta, sd, (n, k_max))
    fault, done = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    looks = tuple(range(spec.first_look, k_max + 1))
    for k, level in zip(looks, nominal_levels(looks, k_max, spec.alpha / 2, spec.spending)):  # one side's
        mean, s = _stats(d, k)
        t = mean / (s / math.sqrt(k))
        hit = ~done & (np.minimum(stats.t.sf(t, k - 1), stats.t.cdf(t, k - 1)) < level)
        fault |= hit
        robust = _robust(d[:, None, :], k, np.full((n, 1), level), (mean > 0)[:, None])[:, 0]
        done |= hit & (robust | (k == k_max))
    return fault


def validate(spec: ClaimsSpec, tau: float, s_w: float, n: int = 4000, effect: float | None = None,
             seed: int = 0, sesoi: float | None = None) -> Validation:
    """Simulate ``n`` experiments of each kind under ``spec`` (see the module docstring)."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    m = max(1, spec.primaries)
    sd = math.sqrt(tau ** 2 + s_w ** 2)
    sesois = [c.rule.sesoi for c in spec.claims if c.role == "primary" and c.rule.sesoi]
    sesoi = sesoi or (float(np.median(sesois)) if sesois else 2 * sd)
    effect = 2 * sesoi if effect is None else effect
    null = family(spec, np.zeros(m), sd, n, rngs[0], sesoi)
    plain = family(spec, np.zeros(m), sd, n, rngs[1], sesoi, futility=False)
    at_sesoi = family(spec, np.r_[sesoi, np.zeros(m - 1)], sd, n, rngs[2], sesoi)
    control = family(spec, np.r_[effect, np.zeros(m - 1)], sd, n, rngs[3], sesoi)
    shown_sup = lambda f: float(((f.shown >> SUP) & 1).any(1).mean())  # noqa: E731
    return Validation(
        n, tau, s_w, m, effect, sesoi, shown_sup(null), shown_sup(plain),
        float(((null.shown >> CON) & 1).any(1).mean()), float(((plain.shown >> CON) & 1).any(1).mean()),
        float((at_sesoi.final[:, 0] == SUP).mean()),
        float(twin(spec, 0.0, sd, n, rngs[4]).mean()), float(twin(spec, sesoi, sd, n, rngs[5]).mean()),
        float((at_sesoi.final[:, 0] == FUT).mean()), float((control.final[:, 0] == SUP).mean()),
        float(control.covered[:, 0].mean()), spec.alpha)
