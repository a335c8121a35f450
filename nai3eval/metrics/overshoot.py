"""CFG overshoot: how much of an image lies outside the displayable range.

Guidance extrapolates the denoiser's output; at high CFG scales pixels leave [−1, 1] and are clipped
when shown, so a "black" image may be far darker than black before clipping. This reads that
directly: per image, the fraction of its finite pixel values outside [−1, 1].
"""
from __future__ import annotations

import math

import torch

from .base import Output, PointMetric, Samples


class Overshoot(PointMetric):
    outputs = (Output("overshoot_frac", "fraction of pixels", better="lower", column="overshoot", fmt=".3f"),
               Output("image_overshoot_frac", "fraction of pixels", per_image=True, better="lower"))
    order = 45

    def measure(self, samples: Samples) -> dict:
        x = samples.images.float().flatten(1)
        finite = torch.isfinite(x)
        outside = (finite & (x.abs() > 1)).sum(1).double()
        n = finite.sum(1).double()
        per_image = [float(o / k) if k > 0 else math.nan for o, k in zip(outside.tolist(), n.tolist())]
        measured = [v for v in per_image if not math.isnan(v)]
        return {"overshoot_frac": sum(measured) / len(measured) if measured else None,
                "image_overshoot_frac": per_image}
