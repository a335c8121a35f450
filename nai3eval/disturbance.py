"""Disturbance tests for a set-level quality metric, as Heusel et al. (2017) validated FID: on a
reference set split in two, the second half measures ≈ 0 against the first (KID's interval
covers 0), the same images under increasing corruption (Gaussian noise, Gaussian blur, three
strengths each) measure monotonically more, and pure noise measures the most. An instrument that
fails them decides no claim (``claims`` reads "not measured" for what it feeds).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

NOISE_STD = (0.1, 0.25, 0.5)  # added Gaussian noise, pixel units of [−1, 1]
BLUR_SIDE = (1 / 16, 1 / 8, 3 / 16)  # Gaussian blur σ as a fraction of the shorter side (1, 2, 3 px at 16 px)
REPEATS = 8  # random splits averaged: one split of a small reference set is too noisy to order the rows
MIN_RESPONSE = 0.05  # the strongest corruption must move FD by this share of what pure noise moves it
Distance = Callable[[torch.Tensor], tuple[float, float, float]]
"""images → (FD, KID, KID std over subsets) against a fixed reference."""


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel ±3σ, edges replicated (any image size)."""
    k = 2 * math.ceil(3 * sigma) + 1
    r = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-r ** 2 / (2 * sigma * sigma))
    g = (g / g.sum()).to(images)
    c = images.shape[1]
    x = F.pad(images, (k // 2,) * 4, mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)


def corruptions(images: torch.Tensor, seed: int = 0) -> list[tuple[str, float, torch.Tensor]]:
    """(kind, strength, images): noise and blur at three strengths each, and pure noise."""
    gen = torch.Generator().manual_seed(seed)
    out = [("noise", s, (images + s * torch.randn(images.shape, generator=gen)).clamp(-1, 1)) for s in NOISE_STD]
    side = min(images.shape[-2:])
    out += [("blur", s * side, gaussian_blur(images, s * side)) for s in BLUR_SIDE]
    return out + [("pure noise", 1.0, torch.randn(images.shape, generator=gen).clamp(-1, 1))]


@dataclass(frozen=True)
class Row:
    kind: str  # "split", "noise", "blur", "pure noise"
    strength: float
    fd: float  # mean over the random splits
    kid: float  # mean over the random splits
    kid_std: float  # spread of one split's KID (std over splits; over KID's subsets with one split)


@dataclass
class Disturbance:
    """One instrument's disturbance table and its verdict."""

    instrument: str
    rows: list[Row] = field(default_factory=list)

    def _kind(self, kind: str) -> list[Row]:
        return sorted((r for r in self.rows if r.kind == kind), key=lambda r: r.strength)

    @property
    def split_covers_zero(self) -> bool:
        """Two halves of one set measure ≈ 0: the mean split KID lies within 1.96 spreads of 0."""
        s = self._kind("split")[0]
        return abs(s.kid) <= 1.96 * s.kid_std

    def monotone(self, kind: str) -> bool:
        """FD and KID grow with the strength, and measurably: the strongest corruption moves FD by at
        least ``MIN_RESPONSE`` of what pure noise moves it (an instrument all but blind to a
        corruption still drifts a little, and drifts in order). FD, not KID: KID's cubic kernel
        makes pure noise an outlier by orders of magnitude, so a share of it says little."""
        rows = self._kind(kind)
        split, top = self._kind("split")[0], self._kind("pure noise")[0]
        growing = all(a.fd < b.fd and a.kid < b.kid for a, b in zip(rows, rows[1:]))
        return growing and rows[-1].kid > split.kid and \
            rows[-1].fd - split.fd >= MIN_RESPONSE * (top.fd - split.fd) > 0

    @property
    def noise_is_worst(self) -> bool:
        top = self._kind("pure noise")[0]
        return all(top.fd >= r.fd and top.kid >= r.kid for r in self.rows)

    @property
    def failures(self) -> list[str]:
        checks = {"the split's KID interval excludes 0": self.split_covers_zero,
                  "noise is not monotone": self.monotone("noise"), "blur is not monotone": self.monotone("blur"),
                  "pure noise does not measure the most": self.noise_is_worst}
        return [what for what, ok in checks.items() if not ok]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict:
        """What travels with every result the instrument measured (JSON: real numbers and booleans)."""
        split, top = self._kind("split")[0], self._kind("pure noise")[0]
        return {"passed": self.passed, "failures": self.failures, "split_kid": split.kid,
                "split_kid_std": split.kid_std, "pure_noise_kid": top.kid, "pure_noise_fd": top.fd,
                "monotone_noise": self.monotone("noise"), "monotone_blur": self.monotone("blur")}

    def table(self) -> str:
        head = f"{'disturbance':<12} {'strength':>8} {'FD':>10} {'KID':>10} {'± std':>9}"
        lines = [f"{self.instrument}: " + ("passed" if self.passed else "FAILED: " + "; ".join(self.failures)), head]
        lines += [f"{r.kind:<12} {r.strength:>8g} {r.fd:>10.4g} {r.kid:>10.4g} {r.kid_std:>9.2g}" for r in self.rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"instrument": self.instrument, "rows": [asdict(r) for r in self.rows], **self.summary()}


def _one_split(images: torch.Tensor, make_distance: Callable[[torch.Tensor], Distance], seed: int) -> list[Row]:
    """One random split (seeded; a split by position would inherit the set's order): the first half
    is the reference, the second is measured against it as it is and corrupted."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    ref, held = images[order[: len(images) // 2]], images[order[len(images) // 2:]]
    distance = make_distance(ref)
    return [Row("split", 0.0, *distance(held))] + [Row(kind, s, *distance(x)) for kind, s, x in corruptions(held, seed)]


def disturbance(instrument: str, images: torch.Tensor, make_distance: Callable[[torch.Tensor], Distance],
                seed: int = 0, repeats: int = REPEATS) -> Disturbance:
    """The disturbance table of an instrument on ``images`` (the reference set, [−1, 1]), averaged
    over ``repeats`` random splits. ``make_distance(reference)`` builds the instrument's distance
    to that reference."""
    return _averaged(instrument, [_one_split(images, make_distance, seed + r) for r in range(repeats)])


def _averaged(instrument: str, runs: list[list[Row]]) -> Disturbance:
    """The rows of several splits, averaged; the spread of KID over the splits (one split: over KID's subsets)."""
    rows = []
    for i, first in enumerate(runs[0]):
        fd, kid = (torch.tensor([getattr(run[i], f) for run in runs], dtype=torch.float64) for f in ("fd", "kid"))
        spread = float(kid.std()) if len(runs) > 1 else first.kid_std
        rows.append(Row(first.kind, first.strength, float(fd.mean()), float(kid.mean()), spread))
    return Disturbance(instrument, rows)


def feature_disturbance(instrument: str, images: torch.Tensor, featurise: Callable[[torch.Tensor], Any],
                        make_distance: Callable[[Any], Callable[[Any], tuple[float, float, float]]], seed: int = 0,
                        repeats: int = REPEATS) -> Disturbance:
    """``disturbance`` for an instrument whose distance reads features only, each image featurised
    once: the whole set clean and under each corruption (drawn once, with ``seed``), every random
    split then selecting rows. For an extractor as costly as Inception at 299² that is 8 images'
    features per reference image instead of 8 per image per split. ``featurise``: images → an
    (N, d) array; ``make_distance``: reference features → (features → (FD, KID, KID std))."""
    clean = featurise(images)
    corrupted = [(kind, s, featurise(x)) for kind, s, x in corruptions(images, seed)]
    runs = []
    for r in range(repeats):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + r)).numpy()
        ref, held = order[: len(images) // 2], order[len(images) // 2:]
        distance = make_distance(clean[ref])
        runs.append([Row("split", 0.0, *distance(clean[held]))] +
                    [Row(kind, s, *distance(f[held])) for kind, s, f in corrupted])
    return _averaged(instrument, runs)
