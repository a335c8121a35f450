"""Confidence intervals: percentile bootstrap (scipy) for per-image metrics, paired differences
between variants (same prompts and noise, so image i of one variant pairs with image i of the
other), and prompt-clustered slopes. Set-level metrics (FD, KID) get no resampled "spread": resampling
with replacement biases FD upwards, so it is not an uncertainty measure (statistics.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean with a percentile-bootstrap CI (scipy.stats.bootstrap)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.all(x == x[0]):
        v = float(x.mean()) if len(x) else float("nan")
        return Estimate(v, v, v)
    r = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES, method="percentile",
                        random_state=np.random.default_rng(seed))
    return Estimate(float(x.mean()), float(r.confidence_interval.low), float(r.confidence_interval.high))


def paired_diff_ci(a, b, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of a_i − b_i over pairs where both are finite."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    return mean_ci(a[ok] - b[ok], confidence, seed)


def cluster_ci(groups, statistic: Callable[[np.ndarray], float], confidence: float = 0.95,
               seed: int = 0) -> Estimate:
    """Bootstrap over clusters (e.g. prompts): resample cluster labels with replacement, recompute."""
    labels = np.unique(np.asarray(groups))
    value = float(statistic(labels))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.choice(labels, size=len(labels), replace=True)) for _ in range(N_RESAMPLES // 4)])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return Estimate(value, float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    return Estimate(value, float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
