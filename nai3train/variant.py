"""From a variant's config to its schedule and denoiser: the one place both are assembled."""
from __future__ import annotations

import logging
import math

from .config import VariantConfig
from .diffusion import Denoiser, Schedule, dimension_scale

log = logging.getLogger(__name__)


def build_schedule(variant: VariantConfig, sample_dim: int) -> Schedule:
    """The variant's training table; σ in SDXL units mapped by √(D/D_ref) if dimension_scale."""
    scale = dimension_scale(sample_dim) if variant.dimension_scale else 1.0
    return Schedule.sdxl(ztsnr=variant.ztsnr, sigma_max=variant.sigma_max, scale=scale)


def build_denoiser(network, variant: VariantConfig, sample_dim: int) -> Denoiser:
    return Denoiser(network=network, prediction=variant.prediction, schedule=build_schedule(variant, sample_dim))


def expected_failure(variant: VariantConfig) -> str | None:
    """The paper predicts ε-prediction cannot produce x0 at σ = ∞; say so instead of hiding it."""
    if variant.prediction == "eps" and math.isinf(variant.top_sigma):
        return (f"variant {variant.name}: ε-prediction with σ_max = ∞ is the paper's predicted failure — "
                "D(x, ∞) = ∞·(ε − F) has no finite limit; it trains, and evaluation reports the blow-up")
    return None
