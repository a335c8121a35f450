"""Per-point metrics as streaming objects built once per sweep.

Each metric is called with a point's samples and fills its fields of the point's typed result.
The expensive state lives for the whole sweep: the reference set is featurised once (torchmetrics
FID and KID with ``reset_real_features=False``), and each generated image is featurised once —
the tagger's penultimate features feed FD, KID and, through its head, the tag predictions.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Union

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from nai3train.data import Vocabulary

from .prompts import PromptSet
from .results import PointResult
from .tagger import Tagger

log = logging.getLogger(__name__)


def to_unit_unclamped(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] pixels → (x + 1)/2, not clipped (CFG overshoot lies outside [0, 1]); non-finite
    pixels become 0.5 (they are counted separately)."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=1.0, neginf=-1.0)
    return (x + 1) / 2


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] pixels → [0, 1], clipped as an image is shown."""
    return to_unit_unclamped(images).clamp(0, 1)


RealImages = Union[torch.Tensor, Callable[[], Iterable[torch.Tensor]]]
"""A reference set: all at once (a small tensor), or a callable that streams it in batches
(``FolderDataset.batches``), so a real-size reference folder is never held in memory."""


def real_batches(real: RealImages, size: int = 256) -> Iterator[torch.Tensor]:
    """The reference images in order, a batch at a time, in [−1, 1]."""
    yield from (real.split(size) if torch.is_tensor(real) else real())


def image_brightness(real: RealImages) -> torch.Tensor:
    """Per image, the mean of its pixels in [0, 1] (clipped as shown)."""
    parts = [to_unit(b).flatten(1).mean(1) for b in real_batches(real)]
    return torch.cat(parts) if parts else torch.zeros(0)


def nonfinite_count(images: torch.Tensor) -> int:
    return int((~torch.isfinite(images.flatten(1))).any(1).sum())


@dataclass
class Samples:
    """What a sampled point hands to its metrics: pixels in [−1, 1] on the CPU, each image's
    starting-noise mean (model units) and the prompt set they came from."""

    images: torch.Tensor
    start_means: torch.Tensor
    prompt_set: PromptSet


class PointMetric(Protocol):
    def __call__(self, samples: Samples, result: PointResult) -> None: ...


class _Features(nn.Module):
    """Identity 'feature extractor': torchmetrics is handed features computed once outside it."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FeatureDistances:
    """Fréchet distance and KID between a fixed reference feature set and each point's features:
    one torchmetrics object each for the whole sweep, the reference statistics kept across points."""

    def __init__(self, real_features: torch.Tensor, kid_subsets: int = 50):
        dim = real_features.shape[1]
        self.fid = FrechetInceptionDistance(feature=_Features(dim), reset_real_features=False)
        self.fid.update(real_features.double(), real=True)
        self.n_real = len(real_features)
        self.kid_subsets = kid_subsets
        self.real_features = real_features
        self._kids: dict[tuple[int, int], KernelInceptionDistance] = {}  # by (subsets, subset size)

    def frechet(self, fake_features: torch.Tensor) -> float:
        self.fid.reset()
        self.fid.update(fake_features.double(), real=False)
        return float(self.fid.compute())

    def kernel(self, fake_features: torch.Tensor) -> tuple[float, float]:
        """KID (mean, std over subsets): torchmetrics' unbiased polynomial-kernel MMD²."""
        size = min(self.n_real, len(fake_features))
        subsets = self.kid_subsets if size >= 4 else 1
        kid = self._kid(subsets, max(2, size // 2 if subsets > 1 else size))
        kid.reset()
        kid.update(fake_features.double(), real=False)
        m, s = kid.compute()
        return float(m), float(s)

    def _kid(self, subsets: int, subset_size: int) -> KernelInceptionDistance:
        """One KID object per subset layout (a sweep has one: every point has the same N)."""
        key = (subsets, subset_size)
        if key not in self._kids:
            kid = KernelInceptionDistance(feature=_Features(self.real_features.shape[1]), subsets=subsets,
                                          subset_size=subset_size, reset_real_features=False)
            kid.update(self.real_features.double(), real=True)
            self._kids[key] = kid
        return self._kids[key]


RARE_BELOW, COMMON_FROM = 0.05, 0.2  # a tag's share of the training images


def tag_groups(freq: dict[str, float], vocab: list[str], rare_below: float = RARE_BELOW,
               common_from: float = COMMON_FROM) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over ``vocab``: rare tags (< 5 % of training images) and common ones (≥ 20 %)."""
    f = torch.tensor([freq.get(t, 0.0) for t in vocab])
    return f < rare_below, f >= common_from


class TaggerMetrics:
    """Domain FD/KID from the tagger's features (standardised by the reference set) and prompt
    adherence from its predictions.

    Adherence: micro-averaged precision/recall of the prompted tags, recall within rare and common
    tags, and leakage — common tags detected although not prompted (claim C6)."""

    def __init__(self, tagger: Tagger, vocab: list[str], real_images: RealImages,
                 tag_frequency: dict[str, float] | None = None, threshold: float = 0.5, kid_subsets: int = 50):
        self.tagger = tagger.eval()
        self.vocab = vocab
        self.vocabulary = Vocabulary(tuple(vocab))
        self.threshold = threshold
        self.groups = tag_groups(tag_frequency, vocab) if tag_frequency else None
        real = torch.cat([self.features(b) for b in real_batches(real_images)])
        # The tagger's features have no unit (GELU outputs in the tens to hundreds: raw KID ran to 1e9,
        # so no margin could be stated in it). FD and KID are taken on features standardised by the
        # reference set's per-dimension mean and std — one affine map, fixed by the reference, for
        # every point — which puts KID on the scale Inception KIDs have and makes it unit-free.
        std = real.std(0)
        self.feature_mean = real.mean(0)
        self.feature_std = std.where(std > 1e-6 * std.max(), torch.inf)  # a constant dimension carries nothing: 0
        self.distances = FeatureDistances(self.standardise(real), kid_subsets)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        x = to_unit(images) * 2 - 1
        return torch.cat([self.tagger.features(x[i:i + batch]) for i in range(0, len(x), batch)])

    @torch.no_grad()
    def __call__(self, samples: Samples, result: PointResult) -> None:
        feats = self.features(samples.images)
        z = self.standardise(feats)
        result.fd_tagger = self.distances.frechet(z)
        result.kid_tagger, result.kid_tagger_std = self.distances.kernel(z)
        pred = (torch.sigmoid(self.tagger.head(feats)) > self.threshold).float()
        adherence(pred, self.vocabulary.multi_hot(samples.prompt_set.per_image), result, self.groups)


def adherence(pred: torch.Tensor, prompted: torch.Tensor, result: PointResult,
              groups: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Fill the adherence fields from boolean predictions and the prompted multi-hot targets."""
    tp = (pred * prompted).sum()
    result.tag_precision = float(tp / pred.sum().clamp_min(1))
    result.tag_recall = float(tp / prompted.sum().clamp_min(1))
    result.per_image.recall = ((pred * prompted).sum(1) / prompted.sum(1).clamp_min(1)).tolist()
    result.per_image.found = [torch.nonzero(row).flatten().tolist() for row in pred]
    if groups is None:
        return
    g = group_adherence(pred, prompted, groups)
    result.tag_recall_rare, result.tag_recall_common, result.tag_leakage_common = g.recall_rare, g.recall_common, g.leakage
    result.per_image.recall_rare, result.per_image.leakage_common = g.per_image_recall_rare, g.per_image_leakage


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


class MeanLeak:
    """Claim C3: within-prompt slope of the output image mean on the starting noise's mean."""

    def __call__(self, samples: Samples, result: PointResult) -> None:
        out_mean = torch.nan_to_num(samples.images.float(), nan=0.0, posinf=0.0, neginf=0.0).flatten(1).mean(1)
        result.mean_leak_slope, result.mean_leak_r = within_group_slope(
            samples.start_means.numpy(), out_mean.numpy(), samples.prompt_set.prompt_index.numpy())
        result.per_image.start_mean = samples.start_means.tolist()
        result.per_image.out_mean = out_mean.tolist()


class Brightness:
    """Claim C2: output mean brightness for black/white-background prompts and its error against
    the real images with the same background (per image; NaN for other prompts).
    ``real_brightness``: the reference images' brightness (``image_brightness``), one per tag list."""

    def __init__(self, real_brightness: torch.Tensor, real_tags: list[list[str]]):
        self.reference: dict[str, float] = {}
        for key in ("black", "white"):
            sel = torch.tensor([f"{key}_background" in t for t in real_tags])
            if sel.any():
                self.reference[key] = float(real_brightness[sel].mean())

    def __call__(self, samples: Samples, result: PointResult) -> None:
        pixels = to_unit_unclamped(samples.images)
        bright = pixels.clamp(0, 1).flatten(1).mean(1)
        unclamped = pixels.flatten(1).mean(1)  # beyond [0, 1] where CFG overshoots the pixel range
        per_image = torch.full((len(bright),), math.nan)
        per_image_raw = torch.full((len(bright),), math.nan)
        prompts = samples.prompt_set.per_image
        for key, ref in self.reference.items():
            sel = torch.tensor([f"{key}_background" in p for p in prompts])
            if sel.any():
                err = (bright - ref).abs()
                per_image[sel] = err[sel]
                per_image_raw[sel] = (unclamped - ref).abs()[sel]
                setattr(result, f"brightness_{key}", float(bright[sel].mean()))
                setattr(result, f"brightness_err_{key}", float(err[sel].mean()))
                setattr(result, f"brightness_unclamped_{key}", float(unclamped[sel].mean()))
        result.per_image.brightness = bright.tolist()
        result.per_image.brightness_err = per_image.tolist()
        result.per_image.brightness_err_unclamped = per_image_raw.tolist()


class ExactScorer:
    """Prompt adherence on the embedded benchmark read off the pixels (``scorer.read_tags``): the
    fraction of images showing the prompted background, object count, and colour + shape; with the
    training tag frequencies, C6's rare-tag recall and common-tag leakage too. An instrument that
    depends on nothing trained: the primary adherence instrument on the benchmark."""

    def __init__(self, tag_frequency: dict[str, float] | None = None):
        from nai3train.data.synth import BACKGROUNDS, COLOURS, COUNTS, SHAPES

        self.objects = {f"{c}_{s}" for c in COLOURS for s in SHAPES}
        readable = sorted({*BACKGROUNDS, *COUNTS, *self.objects})  # the tags the scorer can read at all
        self.vocab = Vocabulary(tuple(readable))
        self.groups = tag_groups(tag_frequency, readable) if tag_frequency else None

    @staticmethod
    def accuracy(images: torch.Tensor, tags: list[list[str]]) -> dict[str, float]:
        """Its accuracy on real images with known tags (the held-out split): per reading."""
        from .scorer import read_tags

        got = read_tags(images)
        return {key: float(np.mean([g[i] in want for g, want in zip(got, tags)]))
                for i, key in enumerate(("background", "count", "object"))}

    def __call__(self, samples: Samples, result: PointResult) -> None:
        from nai3train.data.synth import BACKGROUNDS, COUNTS

        from .scorer import read_tags

        read = read_tags(samples.images)
        result.per_image.read = read
        hits = {"background": [], "count": [], "object": []}
        for got, want in zip(read, samples.prompt_set.per_image):  # only the benchmark's own tags are scored
            want_bg = [t for t in want if t in BACKGROUNDS]
            want_n = [t for t in want if t in COUNTS]
            want_obj = [t for t in want if t in self.objects]
            for key, wanted, tag in (("background", want_bg, got[0]), ("count", want_n, got[1]),
                                     ("object", want_obj, got[2])):
                if wanted:
                    hits[key].append(tag in wanted)
        for key, h in hits.items():
            setattr(result, f"scorer_{key}_acc", float(np.mean(h)) if h else None)
        if self.groups is not None:
            g = group_adherence(self.vocab.multi_hot(read), self.vocab.multi_hot(samples.prompt_set.per_image),
                                self.groups)
            result.scorer_recall_rare, result.scorer_leakage_common = g.recall_rare, g.leakage
            result.per_image.scorer_recall_rare = g.per_image_recall_rare
            result.per_image.scorer_leakage_common = g.per_image_leakage


class RealDataMetrics:
    """Inception FID (clean-fid), CLIPScore (torchmetrics) and WD14 adherence from local weights.

    A missing or corrupt file is reported once (logged and kept in ``problems``) and the sweep goes
    on without that metric: any failure to load an instrument costs that instrument, not the run."""

    def __init__(self, real_images: RealImages, inception_weights: str = "", clip_path: str = "",
                 wd14_model: str = "", wd14_tags: str = ""):
        from . import realdata

        self.problems: list[str] = []
        self.inception = self.clip = self.wd14 = None
        if inception_weights:
            try:  # the reference set is featurised here, once, streamed
                self.inception = realdata.InceptionReference(realdata.InceptionFeatures(inception_weights),
                                                             real_batches(real_images, 32))
            except Exception as e:  # noqa: BLE001 - missing, truncated, wrong format: all skip the metric
                self._skip("Inception FID", e)
        if clip_path:
            try:
                self.clip = realdata.load_clip(clip_path)
            except Exception as e:  # noqa: BLE001
                self._skip("CLIPScore", e)
        if wd14_model or wd14_tags:
            try:
                self.wd14 = realdata.WD14Tagger(wd14_model, wd14_tags)
            except Exception as e:  # noqa: BLE001
                self._skip("WD14 tag adherence", e)

    @property
    def active(self) -> bool:
        return any(m is not None for m in (self.inception, self.clip, self.wd14))

    def _skip(self, what: str, e: Exception) -> None:
        msg = f"{what} skipped: {type(e).__name__}: {str(e)[:500]}"
        log.warning(msg)
        self.problems.append(msg)

    def __call__(self, samples: Samples, result: PointResult) -> None:
        from . import realdata

        fake, prompts = samples.images, samples.prompt_set.per_image
        if self.inception is not None:
            result.fid_inception = self.inception.fid(fake)
        if self.clip is not None:
            texts = [", ".join(p).replace("_", " ") for p in prompts]
            result.clip_score = realdata.clip_score(fake, texts, "", loaded=self.clip)
        if self.wd14 is not None:
            result.wd14_precision, result.wd14_recall = self.wd14.adherence(fake, prompts)
