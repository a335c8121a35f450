"""The domain tagger as an instrument: Fréchet distance and KID in its feature space, and prompt
adherence from its predictions. Each generated image is featurised once; the reference set is
featurised once per evaluation (torchmetrics FID/KID with ``reset_real_features=False``)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from nai3train.data import Vocabulary

from ..disturbance import disturbance
from ..pixels import RealImages, first_images, real_batches, to_unit
from .adherence import adherence, tag_groups
from .base import INSTRUMENT_SEED, InstrumentContext, Output, PointMetric, Samples


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

    def __init__(self, real_features: torch.Tensor, kid_subsets: int = 50, seed: int = 0):
        dim = real_features.shape[1]
        self.seed = seed  # KID's subsets: the same draw at every point, whatever ran before in the process
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
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global generator
            torch.manual_seed(self.seed)
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


def scale_with_floor(std: torch.Tensor) -> torch.Tensor:
    """Each dimension's scale: its std, but never below the median std (all dimensions constant:
    1, nothing to scale)."""
    floor = std.median()
    if not floor > 0:
        floor = std.max() if std.max() > 0 else torch.tensor(1.0, dtype=std.dtype)
    return std.clamp_min(floor)


DISTURBANCE_IMAGES = 512  # reference images the disturbance test reads (held in memory, corrupted)


class ScaledDistances:
    """FD and KID against reference features, both sides centred by the reference and divided by
    its per-dimension scale (``scale_with_floor``) — one affine map, fixed by the reference.

    The tagger's features have no unit (GELU outputs in the tens to hundreds: raw KID ran to 1e9,
    so no margin could be stated in it). Divided by each dimension's own std, a dimension nearly
    constant on real images dominated everything (a blur of σ 2 px measured FD 5.5e7, pure noise
    25); with the floor no dimension weighs more than a typical one."""

    def __init__(self, real_features: torch.Tensor, kid_subsets: int = 50, seed: int = 0):
        self.mean = real_features.mean(0)
        self.scale = scale_with_floor(real_features.std(0))
        self.distances = FeatureDistances(self.standardise(real_features), kid_subsets, seed)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.scale

    def __call__(self, fake_features: torch.Tensor) -> tuple[float, float, float]:
        z = self.standardise(fake_features)
        kid, kid_std = self.distances.kernel(z)
        return self.distances.frechet(z), kid, kid_std


@torch.no_grad()
def tagger_features(tagger, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The tagger's penultimate features of images in [−1, 1] (clipped as shown)."""
    x = to_unit(images) * 2 - 1
    return torch.cat([tagger.features(x[i:i + batch]) for i in range(0, len(x), batch)])


def tagger_distance(tagger, kid_subsets: int = 50, seed: int = 0
                    ) -> Callable[[torch.Tensor], Callable[[torch.Tensor], tuple[float, float, float]]]:
    """reference images → (images → (FD, KID, KID std)) in the tagger's scaled feature space."""
    def make(reference: torch.Tensor) -> Callable[[torch.Tensor], tuple[float, float, float]]:
        ref = ScaledDistances(tagger_features(tagger, reference), kid_subsets, seed)
        return lambda images: ref(tagger_features(tagger, images))
    return make


class TaggerMetrics(PointMetric):
    """Domain FD/KID from the tagger's features (standardised by the reference set) and prompt
    adherence from its predictions: micro-averaged precision/recall of the prompted tags, recall
    within rare and common tags, and leakage — common tags detected although not prompted (C6)."""

    outputs = (Output("fd_tagger", "FD, standardised tagger features", better="lower", column="FD"),
               Output("kid_tagger", "KID, standardised tagger features", better="lower", column="KID", fmt=".3g"),
               Output("kid_tagger_std", "KID std over subsets"),
               Output("tag_precision", "fraction of found tags", better="higher", column="precision", fmt=".3f"),
               Output("tag_recall", "fraction of prompted tags", better="higher", column="recall", fmt=".3f"),
               Output("tag_recall_rare", "fraction of prompted rare tags", better="higher", column="rare recall",
                      fmt=".3f"),
               Output("tag_recall_common", "fraction of prompted common tags", better="higher"),
               Output("tag_leakage_common", "fraction of unprompted common tags", better="lower", column="leakage",
                      fmt=".3f"),
               Output("recall", "fraction of prompted tags", per_image=True, better="higher"),
               Output("recall_rare", "fraction of prompted rare tags", per_image=True, better="higher"),
               Output("leakage_common", "fraction of unprompted common tags", per_image=True, better="lower"),
               Output("found", "tag indices", per_image=True))
    order = 20

    def __init__(self, tagger, vocab: list[str], real_images: RealImages,
                 tag_frequency: dict[str, float] | None = None, threshold: float = 0.5, kid_subsets: int = 50,
                 seed: int = 0):
        self.tagger = tagger.eval()
        self.vocab = vocab
        self.vocabulary = Vocabulary(tuple(vocab))
        self.threshold = threshold
        self.groups = tag_groups(tag_frequency, vocab) if tag_frequency else None
        self.kid_subsets, self.seed = kid_subsets, seed
        self.reference = ScaledDistances(torch.cat([self.features(b) for b in real_batches(real_images)]),
                                         kid_subsets, seed)

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "TaggerMetrics | None":
        if ctx.tagger is None:
            return None
        if ctx.tagger_accuracy:
            ctx.accuracy["domain tagger"] = dict(ctx.tagger_accuracy)
        metric = cls(ctx.tagger, ctx.tagger_vocab, ctx.real_images, ctx.tag_frequency, seed=INSTRUMENT_SEED)
        images = first_images(ctx.real_images, DISTURBANCE_IMAGES)
        if len(images) >= 8:  # FD and KID decide nothing they were not validated for
            ctx.disturbance["domain tagger"] = disturbance("domain tagger", images, metric.distance_to,
                                                           INSTRUMENT_SEED).summary()
        return metric

    def distance_to(self, reference: torch.Tensor) -> Callable[[torch.Tensor], tuple[float, float, float]]:
        """images → (FD, KID, KID std) against ``reference`` images, as the sweep measures (the
        disturbance test builds its own reference this way)."""
        return tagger_distance(self.tagger, self.kid_subsets, self.seed)(reference)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return tagger_features(self.tagger, images)

    @torch.no_grad()
    def measure(self, samples: Samples) -> dict:
        feats = self.features(samples.images)
        fd, kid, kid_std = self.reference(feats)
        pred = (torch.sigmoid(self.tagger.head(feats)) > self.threshold).float()
        return {"fd_tagger": fd, "kid_tagger": kid, "kid_tagger_std": kid_std,
                **adherence(pred, self.vocabulary.multi_hot(samples.prompt_set.per_image), self.groups)}
