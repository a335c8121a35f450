"""Per-point metrics: domain Fréchet distance (torchmetrics FID with the tagger's features), tag
adherence from the tagger's predictions, the mean-leak probe and extreme-brightness errors."""
from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

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


def kernel_distance(tagger: Tagger, real: torch.Tensor, fake: torch.Tensor, subsets: int = 50) -> tuple[float, float]:
    """KID (mean, std over subsets) of tagger features, torchmetrics' unbiased polynomial-kernel MMD²."""
    size = min(len(real), len(fake))
    kid = KernelInceptionDistance(feature=TaggerFeatures(tagger), normalize=True, subsets=subsets,
                                  subset_size=max(2, size // 2 if subsets > 1 else size))
    kid.update(to_unit(real), real=True)
    kid.update(to_unit(fake), real=False)
    m, s = kid.compute()
    return float(m), float(s)


def tag_groups(freq: dict[str, float], vocab: list[str], rare_below: float = 0.05,
               common_from: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over ``vocab``: rare tags (< 5 % of training images) and common ones (≥ 20 %)."""
    f = torch.tensor([freq.get(t, 0.0) for t in vocab])
    return f < rare_below, f >= common_from


def tag_adherence(tagger: Tagger, images: torch.Tensor, prompted: torch.Tensor,
                  rare: torch.Tensor | None = None, common: torch.Tensor | None = None) -> dict:
    """Prompt adherence from the tagger: micro-averaged precision/recall of the prompted tags, recall
    within rare and common tags, and leakage — common tags detected although not prompted. Also
    per-image values (lists) for confidence intervals."""
    pred = tag_predictions(tagger, to_unit(images) * 2 - 1).float()
    tp = (pred * prompted).sum()
    per_image_recall = (pred * prompted).sum(1) / prompted.sum(1).clamp_min(1)
    out: dict = {"tag_precision": float(tp / pred.sum().clamp_min(1)),
                 "tag_recall": float(tp / prompted.sum().clamp_min(1)),
                 "per_image_recall": per_image_recall.tolist(),
                 "per_image_found": [torch.nonzero(row).flatten().tolist() for row in pred]}
    if rare is not None and common is not None:
        for name, mask in (("rare", rare), ("common", common)):
            p = prompted * mask.float()
            out[f"tag_recall_{name}"] = float((pred * p).sum() / p.sum()) if p.sum() > 0 else float("nan")
            out[f"per_image_recall_{name}"] = [float(v) if n > 0 else float("nan") for v, n in
                                               zip(((pred * p).sum(1) / p.sum(1).clamp_min(1)).tolist(),
                                                   p.sum(1).tolist())]
        not_prompted = (1 - prompted) * common.float()
        leak = (pred * not_prompted).sum(1) / not_prompted.sum(1).clamp_min(1)
        out["tag_leakage_common"] = float((pred * not_prompted).sum() / not_prompted.sum().clamp_min(1))
        out["per_image_leakage_common"] = leak.tolist()
    return out


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
    return {"mean_leak_slope": slope, "mean_leak_r": r, "per_image_start_mean": start_means.tolist(),
            "per_image_out_mean": out_mean.tolist()}


def brightness(images: torch.Tensor, prompts: list[list[str]], real_images: torch.Tensor,
               real_tags: list[list[str]]) -> dict:
    """Extreme-brightness probe (claim C2): output mean brightness for black/white-background
    prompts, and its absolute error against the real images with the same background.
    ``per_image_brightness_err`` holds each image's error (NaN for other prompts)."""
    out: dict = {}
    bright = to_unit(images).flatten(1).mean(1)
    real_bright = to_unit(real_images).flatten(1).mean(1)
    per_image = torch.full((len(images),), float("nan"))
    for key in ("black", "white"):
        tag = f"{key}_background"
        sel = torch.tensor([tag in p for p in prompts])
        ref = torch.tensor([tag in t for t in real_tags])
        if sel.any() and ref.any():
            err = (bright - real_bright[ref].mean()).abs()
            per_image[sel] = err[sel]
            out[f"brightness_{key}"] = float(bright[sel].mean())
            out[f"brightness_err_{key}"] = float(err[sel].mean())
    out["per_image_brightness_err"] = per_image.tolist()
    out["per_image_brightness"] = bright.tolist()
    return out
