"""Prompt adherence from boolean tag readings against the prompted tags (no metric class here:
the domain tagger and the exact scorer both read adherence this way)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RARE_BELOW, COMMON_FROM = 0.05, 0.2  # a tag's share of the training images


def tag_groups(freq: dict[str, float], vocab: list[str], rare_below: float = RARE_BELOW,
               common_from: float = COMMON_FROM) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over ``vocab``: rare tags (< 5 % of training images) and common ones (≥ 20 %)."""
    f = torch.tensor([freq.get(t, 0.0) for t in vocab])
    return f < rare_below, f >= common_from


@dataclass
class GroupAdherence:
    """Claim C6's two readings of one instrument: recall of prompted rare tags, and leakage — common
    tags detected although not prompted (micro-averaged, and per image; NaN: no rare tag prompted)."""

    recall_rare: float
    recall_common: float
    leakage: float
    per_image_recall_rare: list[float]
    per_image_leakage: list[float]


def group_adherence(pred: torch.Tensor, prompted: torch.Tensor,
                    groups: tuple[torch.Tensor, torch.Tensor]) -> GroupAdherence:
    rare, common = (m.float() for m in groups)
    recall = {}
    for name, mask in (("rare", rare), ("common", common)):
        p = prompted * mask
        recall[name] = float((pred * p).sum() / p.sum()) if p.sum() > 0 else math.nan
    p = prompted * rare
    per = ((pred * p).sum(1) / p.sum(1).clamp_min(1)).tolist()
    not_prompted = (1 - prompted) * common
    return GroupAdherence(recall["rare"], recall["common"],
                          float((pred * not_prompted).sum() / not_prompted.sum().clamp_min(1)),
                          [v if n > 0 else math.nan for v, n in zip(per, p.sum(1).tolist())],
                          ((pred * not_prompted).sum(1) / not_prompted.sum(1).clamp_min(1)).tolist())


def adherence(pred: torch.Tensor, prompted: torch.Tensor,
              groups: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Micro-averaged precision and recall, per-image recall and the tags found; with ``groups``,
    rare-tag recall, common-tag recall and common-tag leakage (scalars and per image)."""
    tp = (pred * prompted).sum()
    out = {"tag_precision": float(tp / pred.sum().clamp_min(1)), "tag_recall": float(tp / prompted.sum().clamp_min(1)),
           "recall": ((pred * prompted).sum(1) / prompted.sum(1).clamp_min(1)).tolist(),
           "found": [torch.nonzero(row).flatten().tolist() for row in pred]}
    if groups is not None:
        g = group_adherence(pred, prompted, groups)
        out.update(tag_recall_rare=g.recall_rare, tag_recall_common=g.recall_common, tag_leakage_common=g.leakage,
                   recall_rare=g.per_image_recall_rare, leakage_common=g.per_image_leakage)
    return out
