"""Per-point metrics: domain Fréchet distance (torchmetrics FID with the tagger's features), tag
adherence from the tagger's predictions, the mean-leak probe and extreme-brightness errors."""
from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from .tagger import Tagger, TaggerFeatures, tag_predictions


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] model space → [0, 1]; non-finite pixels become 0.5 (they are counted separately)."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=1.0, neginf=-1.0)
    return ((x + 1) / 2).clamp(0, 1)


def nonfinite_count(images: torch.Tensor) -> int:
    return int((~torch.isfinite(images.flatten(1))).any(1).sum())


def frechet_distance(tagger: Tagger, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FD between tagger features of real and generated images (both in [−1, 1])."""
    fid = FrechetInceptionDistance(feature=TaggerFeatures(tagger), normalize=True)
    fid.update(to_unit(real), real=True)
    fid.update(to_unit(fake), real=False)
    return float(fid.compute())


def tag_adherence(tagger: Tagger, images: torch.Tensor, prompted: torch.Tensor) -> dict[str, float]:
    """Micro-averaged precision/recall of the prompted tags (multi-hot ``prompted``)."""
    pred = tag_predictions(tagger, to_unit(images) * 2 - 1).float()
    tp = (pred * prompted).sum()
    per_image_recall = (pred * prompted).sum(1) / prompted.sum(1).clamp_min(1)
    return {"tag_precision": float(tp / pred.sum().clamp_min(1)), "tag_recall": float(tp / prompted.sum().clamp_min(1)),
            "tag_recall_per_image_std": float(per_image_recall.std())}


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


def mean_leak(images: torch.Tensor, start_means: torch.Tensor, prompt_index: torch.Tensor) -> dict[str, float]:
    """Mean-leak probe (claim C3): slope of the output image mean on the starting noise's mean."""
    out_mean = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0).flatten(1).mean(1)
    slope, r = within_group_slope(start_means.numpy(), out_mean.numpy(), prompt_index.numpy())
    return {"mean_leak_slope": slope, "mean_leak_r": r}


def brightness(images: torch.Tensor, prompts: list[list[str]], real_images: torch.Tensor,
               real_tags: list[list[str]]) -> dict[str, float]:
    """Extreme-brightness probe (claim C2): output mean brightness for black/white-background
    prompts, and its absolute error against the real images with the same background."""
    out: dict[str, float] = {}
    bright = to_unit(images).flatten(1).mean(1)
    real_bright = to_unit(real_images).flatten(1).mean(1)
    for key in ("black", "white"):
        tag = f"{key}_background"
        sel = torch.tensor([tag in p for p in prompts])
        ref = torch.tensor([tag in t for t in real_tags])
        if sel.any() and ref.any():
            out[f"brightness_{key}"] = float(bright[sel].mean())
            out[f"brightness_err_{key}"] = float((bright[sel] - real_bright[ref].mean()).abs().mean())
    return out
