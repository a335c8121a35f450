"""Non-finite samples: ε-prediction sampled from σ = ∞ returns ∞·(ε − F), which is counted, never raised."""
from __future__ import annotations

from ..pixels import finite_images
from .base import Output, PointMetric, Samples


class Finite(PointMetric):
    outputs = (Output("nonfinite_samples", "images", better="lower", column="non-finite", fmt="g"),
               Output("finite", "bool", per_image=True))
    order = 90

    def measure(self, samples: Samples) -> dict:
        finite = finite_images(samples.images)
        return {"nonfinite_samples": float((~finite).sum()), "finite": finite.tolist()}
