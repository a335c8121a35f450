"""Prompt adherence on the embedded benchmark read off the pixels (``nai3eval.scorer``)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from nai3train.data import Vocabulary

from ..pixels import real_batches
from .adherence import group_adherence, tag_groups
from .base import InstrumentContext, Output, PointMetric, Samples

READINGS = ("background", "count", "object")


def total_variation(a: list[str], b: list[str]) -> float:
    """½ Σ |p_a − p_b| between the empirical distributions of two lists of labels (0 alike, 1 disjoint)."""
    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in ca.keys() | cb.keys())


class ExactScorer(PointMetric):
    """The fraction of images showing the prompted background, object count, and colour + shape;
    with the training tag frequencies, C6's rare-tag recall and common-tag leakage too. An
    instrument that depends on nothing trained: the primary adherence instrument on the benchmark.

    Its set-level distance needs no learned features either: per reading, the total variation
    between the distribution of what it reads in the images and of what their prompts ask for
    (``scorer_tv``: the mean of the three; 0 when the set shows what was asked, in the asked
    proportions)."""

    outputs = (Output("scorer_background_acc", "fraction of images", better="higher"),
               Output("scorer_count_acc", "fraction of images", better="higher", column="scorer count", fmt=".3f"),
               Output("scorer_object_acc", "fraction of images", better="higher", column="scorer object", fmt=".3f"),
               Output("scorer_recall_rare", "fraction of prompted rare tags", better="higher",
                      column="scorer rare recall", fmt=".3f"),
               Output("scorer_leakage_common", "fraction of unprompted common tags", better="lower",
                      column="scorer leakage", fmt=".3f"),
               Output("scorer_tv", "total variation, mean over the three readings", better="lower", column="scorer TV",
                      fmt=".3f"),
               *(Output(f"scorer_tv_{key}", "total variation", better="lower") for key in READINGS),
               Output("read", "background, count, object", per_image=True),
               Output("scorer_image_recall_rare", "fraction of prompted rare tags", per_image=True, better="higher"),
               Output("scorer_image_leakage_common", "fraction of unprompted common tags", per_image=True,
                      better="lower"))
    order = 10

    def __init__(self, tag_frequency: dict[str, float] | None = None):
        from nai3train.data.synth import BACKGROUNDS, COLOURS, COUNTS, SHAPES

        self.objects = {f"{c}_{s}" for c in COLOURS for s in SHAPES}
        self.wanted = {"background": set(BACKGROUNDS), "count": set(COUNTS), "object": self.objects}
        readable = sorted({*BACKGROUNDS, *COUNTS, *self.objects})  # the tags the scorer can read at all
        self.vocab = Vocabulary(tuple(readable))
        self.groups = tag_groups(tag_frequency, readable) if tag_frequency else None

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "ExactScorer | None":
        if not ctx.benchmark:
            return None
        ctx.accuracy["exact scorer"] = cls.accuracy(torch.cat(list(real_batches(ctx.real_images))), ctx.real_tags)
        return cls(ctx.tag_frequency)

    @staticmethod
    def accuracy(images: torch.Tensor, tags: list[list[str]]) -> dict[str, float]:
        """Its accuracy on real images with known tags (the held-out split): per reading."""
        from ..scorer import read_tags

        got = read_tags(images)
        return {key: float(np.mean([g[i] in want for g, want in zip(got, tags)])) for i, key in enumerate(READINGS)}

    def measure(self, samples: Samples) -> dict:
        from ..scorer import read_tags

        read = read_tags(samples.images)
        hits: dict[str, list[bool]] = {key: [] for key in READINGS}
        pairs: dict[str, tuple[list[str], list[str]]] = {key: ([], []) for key in READINGS}
        for got, want in zip(read, samples.prompt_set.per_image):  # only the benchmark's own tags are scored
            for i, key in enumerate(READINGS):
                wanted = [t for t in want if t in self.wanted[key]]
                if wanted:
                    hits[key].append(got[i] in wanted)
                    pairs[key][0].append(got[i])
                    pairs[key][1].append(wanted[0])
        out: dict = {f"scorer_{key}_acc": float(np.mean(h)) if h else None for key, h in hits.items()}
        tv = {key: total_variation(*pairs[key]) for key in READINGS if pairs[key][0]}
        out.update({f"scorer_tv_{key}": v for key, v in tv.items()})
        out["scorer_tv"] = float(np.mean(list(tv.values()))) if tv else None
        out["read"] = read
        if self.groups is not None:
            g = group_adherence(self.vocab.multi_hot(read), self.vocab.multi_hot(samples.prompt_set.per_image),
                                self.groups)
            out.update(scorer_recall_rare=g.recall_rare, scorer_leakage_common=g.leakage,
                       scorer_image_recall_rare=g.per_image_recall_rare,
                       scorer_image_leakage_common=g.per_image_leakage)
        return out
