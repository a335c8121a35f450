"""Object counters for claim C4 (a higher σ_max keeps large structure coherent on a larger canvas:
the wrong-count rate of samples at 1.5× and 2× the native side).

A counter says how many objects a prompt asks for and how many an image shows, with one
instrument per kind of data:

* the embedded benchmark: the exact scorer counts connected components (``scorer.count_objects``)
  against the prompt's count tag (``1_object`` …);
* anime models: the WD14 tagger's count tags (``1girl``, ``2girls`` … ``6+girls``, the same for
  boys; ``solo`` means one), the most probable count tag of the prompt's family — no count tag
  above the threshold reads as zero.

Neither depends on the model it measures.
"""
from __future__ import annotations

import re
from typing import Protocol

import torch

_COUNT_TAG = re.compile(r"^(\d)(\+?)(girl|boy)s?$")

Want = tuple[str, int]  # (what is counted, how many)


class Counter(Protocol):
    name: str

    def wanted(self, prompt: list[str]) -> Want | None:
        """What ``prompt`` asks to be counted and how many (None: it asks for no number)."""

    def count(self, images: torch.Tensor, kinds: list[str]) -> list[int]:
        """How many objects of ``kinds[i]`` image i (in [−1, 1]) shows."""


class BenchmarkCounter:
    name = "exact scorer"

    def wanted(self, prompt: list[str]) -> Want | None:
        from nai3train.data.synth import COUNTS

        n = next((COUNTS[t][1] for t in prompt if t in COUNTS), None)
        return None if n is None else ("object", n)

    def count(self, images: torch.Tensor, kinds: list[str]) -> list[int]:
        from .scorer import count_objects

        return count_objects(images)


def count_tag(tag: str) -> Want | None:
    """``2girls`` → ("girl", 2); ``6+boys`` → ("boy", 6); anything else → None."""
    m = _COUNT_TAG.match(tag.strip().replace(" ", "_"))
    return (m.group(3), int(m.group(1))) if m else None


class WD14Counter:
    """Counts read through a WD14 tagger's count tags (see the module docstring)."""

    name = "WD14 tagger"

    def __init__(self, tagger):
        self.tagger = tagger
        parsed = [(i, count_tag(t)) for i, t in enumerate(tagger.tags)]
        self.columns = {kind: [(i, c[1]) for i, c in parsed if c and c[0] == kind] for kind in ("girl", "boy")}

    def wanted(self, prompt: list[str]) -> Want | None:
        return next((c for c in map(count_tag, prompt) if c), ("girl", 1) if "solo" in prompt else None)

    def count(self, images: torch.Tensor, kinds: list[str]) -> list[int]:
        probs = self.tagger.probabilities(images)
        out = []
        for row, kind in zip(probs, kinds):
            cols = self.columns.get(kind) or []
            best = max(cols, key=lambda c: row[c[0]], default=None)
            out.append(best[1] if best is not None and row[best[0]] >= self.tagger.threshold else 0)
        return out


def wrong_counts(counter: Counter, prompts: list[list[str]], images: torch.Tensor) -> list[float]:
    """Per image 1.0 if the count differs from the prompt's, 0.0 if it matches, NaN without a count."""
    want = [counter.wanted(p) for p in prompts]
    got = counter.count(images, [w[0] if w else "" for w in want])
    return [float("nan") if w is None else float(g != w[1]) for g, w in zip(got, want)]
