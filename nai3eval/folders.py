"""Set-level distances between any two image folders, through the code the sweep uses: so a
researcher can check an instrument on their own images (``nai3 metrics``) before trusting a
verdict built on it, and validate it with the disturbance test.

Feature spaces: ``tagger`` (the domain tagger's features, scaled as in the sweep) and
``inception`` (clean-fid's Inception pool features from a local weights file: FD exactly as
clean-fid's ``compute_fid``; KID on the same features).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nai3train.data import load_folder

from .disturbance import Disturbance, Distance, disturbance

SPACES = ("tagger", "inception")


@dataclass(frozen=True)
class FolderDistance:
    space: str
    n_real: int
    n_fake: int
    fd: float
    kid: float
    kid_std: float  # over KID's subsets: the interval is kid ± 1.96·kid_std

    def to_dict(self) -> dict:
        return asdict(self)


def _tagger_space(tagger_dir: str | Path) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    from .metrics.tagger import tagger_distance
    from .tagger import load_tagger

    tagger, _, _ = load_tagger(tagger_dir)
    return tagger.resolution, tagger_distance(tagger.eval())


def _inception_space(weights: str | Path) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    import numpy as np
    from cleanfid.fid import fid_from_feats

    from .metrics.tagger import FeatureDistances
    from .realdata import InceptionFeatures, InceptionReference

    extractor = InceptionFeatures(weights)

    def make(reference: torch.Tensor) -> Distance:
        ref = InceptionReference(extractor, reference.split(32))
        kid = FeatureDistances(torch.from_numpy(ref.real).double())

        def distance(images: torch.Tensor) -> tuple[float, float, float]:
            fake = np.concatenate([ref.features(b) for b in images.split(32)])
            return (float(fid_from_feats(ref.real, fake)), *kid.kernel(torch.from_numpy(fake).double()))
        return distance
    return 256, make


def feature_space(space: str, tagger: str | None = None, inception: str | None = None
                  ) -> tuple[int, Callable[[torch.Tensor], Distance]]:
    """(the side images are read at, reference images → distance) for a feature space."""
    if space == "tagger":
        if not tagger:
            raise ValueError("the tagger feature space needs --tagger DIR (a domain tagger folder: WORK_DIR/tagger-*)")
        return _tagger_space(tagger)
    if space == "inception":
        if not inception:
            raise ValueError("the inception feature space needs --inception FILE (torchvision inception_v3 weights)")
        return _inception_space(inception)
    raise ValueError(f"unknown feature space {space!r}; known: {SPACES}")


def _images(folder: str | Path, side: int) -> torch.Tensor:
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = load_folder(folder, side).images
    if len(images) < 4:
        raise ValueError(f"{folder} holds {len(images)} usable image(s); FD and KID need at least 4")
    return images


def folder_distance(real: str | Path, fake: str | Path, space: str, **weights: str | None) -> FolderDistance:
    """FD and KID between the images of two folders (centre squares at the space's side)."""
    side, make = feature_space(space, **weights)
    ref, gen = _images(real, side), _images(fake, side)
    return FolderDistance(space, len(ref), len(gen), *make(ref)(gen))


def folder_disturbance(real: str | Path, space: str, seed: int = 0, **weights: str | None) -> Disturbance:
    """The disturbance table of a feature space on a reference folder."""
    side, make = feature_space(space, **weights)
    return disturbance(space, _images(real, side), make, seed)
