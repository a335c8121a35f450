"""Claim C3 in the sweep: how much the output mean follows the starting noise's mean."""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import Output, PointMetric, Samples


def within_group_slope(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """OLS slope and correlation of y on x after removing each group's mean (prompt fixed effects).

    Comparing seeds within a prompt separates "the output copies the noise mean" from "different
    prompts have different brightness".
    """
    xc, yc = x.astype(float).copy(), y.astype(float).copy()
    for g in np.unique(groups):
        m = groups == g
        xc[m] -= xc[m].mean()
        yc[m] -= yc[m].mean()
    sxx, syy = float((xc**2).sum()), float((yc**2).sum())
    if sxx == 0:
        return float("nan"), float("nan")
    slope = float((xc * yc).sum() / sxx)
    r = float((xc * yc).sum() / math.sqrt(sxx * syy)) if syy > 0 else 0.0
    return slope, r


class MeanLeak(PointMetric):
    """Within-prompt slope of the output image mean on the starting noise's mean."""

    outputs = (Output("mean_leak_slope", "output mean per noise mean", better="lower", column="leak slope",
                      fmt=".3f"),
               Output("mean_leak_r", "correlation"),
               Output("out_mean", "model pixel units", per_image=True),
               Output("start_mean", "model pixel units", per_image=True))
    order = 30

    def measure(self, samples: Samples) -> dict:
        out_mean = torch.nan_to_num(samples.images.float(), nan=0.0, posinf=0.0, neginf=0.0).flatten(1).mean(1)
        slope, r = within_group_slope(samples.start_means.numpy(), out_mean.numpy(),
                                      samples.prompt_set.prompt_index.numpy())
        return {"mean_leak_slope": slope, "mean_leak_r": r, "start_mean": samples.start_means.tolist(),
                "out_mean": out_mean.tolist()}
