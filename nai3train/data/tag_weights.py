"""Tag statistics and tag-based loss weights (docs/data.md, "Tag-based loss weighting").

The paper gives the intent — damp over-represented concepts, lift rare ones — but no formula. Ours:

    raw_i = mean over image i's tags t of (f_t / f_ref)^(−α)          f_t: fraction of images with t
    w_i   = clip(c · raw_i, lo, hi)     with c chosen so that mean_i w_i = 1 exactly

f_ref is the median tag frequency, α = 0.5, [lo, hi] = [0.2, 5]. The power law is the usual
inverse-frequency re-weighting, softened (α < 1) so common tags are damped rather than ignored;
clipping stops a single rare tag from dominating a batch; the scale c (found by bisection; the
mean is monotone in c) keeps the average loss scale unchanged, so learning rates transfer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


def tag_frequencies(tag_lists: list[list[str]]) -> dict[str, float]:
    """Fraction of images carrying each tag, most frequent first."""
    n = max(1, len(tag_lists))
    c = Counter(t for ts in tag_lists for t in set(ts))
    return {t: k / n for t, k in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))}


@dataclass(frozen=True)
class TagWeighting:
    alpha: float = 0.5
    lo: float = 0.2
    hi: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.lo <= 1 <= self.hi) or self.alpha < 0:
            raise ValueError(f"tag weighting needs alpha ≥ 0 and lo ≤ 1 ≤ hi, got {self}")

    def weights(self, tag_lists: list[list[str]]) -> np.ndarray:
        freq = tag_frequencies(tag_lists)
        f_ref = float(np.median(list(freq.values())))
        raw = np.array([np.mean([(freq[t] / f_ref) ** (-self.alpha) for t in set(ts)]) if ts else 1.0
                        for ts in tag_lists])
        lo_c, hi_c = 1e-12, 1e12
        for _ in range(200):  # bisection on log c
            c = np.sqrt(lo_c * hi_c)
            m = np.clip(c * raw, self.lo, self.hi).mean()
            if m > 1:
                hi_c = c
            else:
                lo_c = c
        return np.clip(np.sqrt(lo_c * hi_c) * raw, self.lo, self.hi)


def weight_histogram(weights: np.ndarray, bins: int = 10) -> dict:
    counts, edges = np.histogram(weights, bins=bins)
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges], "mean": float(weights.mean()),
            "min": float(weights.min()), "max": float(weights.max())}
