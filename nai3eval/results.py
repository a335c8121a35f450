"""Typed evaluation results: what a sweep point and a variant produced, read by field everywhere.

A point result holds the point's settings, its scalar metrics (``None`` where a metric was not
computed) and per-image arrays in the prompt set's image order, so any two points or variants
evaluated on the same prompt set pair image by image. ``scalars()`` is the one place that names
the MLflow metrics; ``to_dict``/``from_dict`` carry results through JSON (the stored evaluation
of a training run) without losing a field.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nai3train.config import to_dict


@dataclass(frozen=True)
class EvalPoint:
    """One setting of the sweep. ``first_sigma`` is in SDXL units and may be +∞."""

    cfg_scale: float
    first_sigma: float
    sampler: str = "euler"
    schedule: str = "native"
    steps: int = 28
    cfg_rescale: float = 0.0

    @property
    def name(self) -> str:
        s = "inf" if math.isinf(self.first_sigma) else f"{self.first_sigma:g}"
        return f"cfg{self.cfg_scale:g}-sigma{s}-{self.sampler}{self.steps}"


@dataclass(slots=True)
class PerImage:
    """Per-image values (index = image of the prompt set); NaN where undefined for that image."""

    out_mean: list[float] = field(default_factory=list)  # output mean in model-space pixel units
    start_mean: list[float] = field(default_factory=list)  # starting-noise mean, model units
    brightness: list[float] = field(default_factory=list)  # mean brightness in [0, 1]
    brightness_err: list[float] = field(default_factory=list)  # |brightness − reference|, black/white prompts only
    brightness_err_unclamped: list[float] = field(default_factory=list)  # … from (x + 1)/2 before clipping
    recall: list[float] = field(default_factory=list)
    recall_rare: list[float] = field(default_factory=list)
    leakage_common: list[float] = field(default_factory=list)
    found: list[list[int]] = field(default_factory=list)  # tag indices the instrument detected
    read: list[list[str]] = field(default_factory=list)  # the exact scorer's reading (benchmark only)
    scorer_recall_rare: list[float] = field(default_factory=list)  # … its rare-tag recall (NaN: no rare tag)
    scorer_leakage_common: list[float] = field(default_factory=list)  # … common tags read although not prompted
    finite: list[bool] = field(default_factory=list)


@dataclass(slots=True)
class PointResult:
    variant: str
    point: EvalPoint
    n_images: int
    extrapolated: bool  # the start lies above the variant's trained maximum σ
    nonfinite_samples: int = 0
    seconds: float | None = None  # wall time of sampling and measuring this point
    fd_tagger: float | None = None
    kid_tagger: float | None = None
    kid_tagger_std: float | None = None
    tag_precision: float | None = None
    tag_recall: float | None = None
    tag_recall_rare: float | None = None
    tag_recall_common: float | None = None
    tag_leakage_common: float | None = None
    mean_leak_slope: float | None = None
    mean_leak_r: float | None = None
    brightness_black: float | None = None
    brightness_white: float | None = None
    brightness_err_black: float | None = None
    brightness_err_white: float | None = None
    brightness_unclamped_black: float | None = None  # mean of (x + 1) / 2 before clipping: CFG overshoot shows here
    brightness_unclamped_white: float | None = None
    fid_inception: float | None = None
    clip_score: float | None = None
    wd14_precision: float | None = None
    wd14_recall: float | None = None
    scorer_background_acc: float | None = None  # exact scorer: fraction of images showing the prompted background
    scorer_count_acc: float | None = None  # … the prompted object count
    scorer_object_acc: float | None = None  # … the prompted colour and shape
    scorer_recall_rare: float | None = None  # … rare prompted tags read (C6 on the benchmark)
    scorer_leakage_common: float | None = None  # … common tags read although not prompted
    per_image: PerImage = field(default_factory=PerImage)

    # convenient reads of the settings
    @property
    def cfg_scale(self) -> float:
        return self.point.cfg_scale

    @property
    def first_sigma(self) -> float:
        return self.point.first_sigma

    @property
    def name(self) -> str:
        return self.point.name

    def scalars(self) -> dict[str, float]:
        """Every computed, finite scalar metric under its MLflow name (``eval/<field>``)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name not in ("variant", "point", "n_images", "extrapolated", "per_image") and v is not None \
                    and math.isfinite(float(v)):
                out[f"eval/{f.name}"] = float(v)
        return out

    def arr(self, name: str) -> np.ndarray:
        """A per-image field as a float array."""
        return np.asarray(getattr(self.per_image, name), dtype=float)


@dataclass(slots=True)
class X0Probe:
    """D(ε, σ) for pure noise at one σ (claim C1): how far x̂0's brightness is from the prompt's data."""

    sigma: float  # SDXL units
    nonfinite_frac: float
    max_abs: float
    brightness_err: float  # mean over finite images
    per_image_err: list[float]


@dataclass(slots=True)
class PracticalInfinity:
    """Samples from several starts with the same noise (claim C9): RMS distance to the first start."""

    cfg_scale: float
    reference_start: float
    distance: dict[str, float]  # start (formatted with :g) → mean distance
    per_image_distance: dict[str, list[float]]
    # the scale of a distance: per image, the mean RMS distance of its reference-start sample to the
    # other samples of the same prompt (independent noise); empty with one sample per prompt
    per_image_reference: list[float] = field(default_factory=list)
    prompt_index: list[int] = field(default_factory=list)  # the probe's images (empty: the variant's own)


@dataclass(slots=True)
class CountProbe:
    """Claim C4: samples at ``scale``× the native side (each canvas with its own dimension scale)
    from each start on the same noise; per image 1 if the number of objects differs from the
    prompt's count, 0 if it matches, NaN for a prompt without a count."""

    cfg_scale: float
    scale: float
    size: list[int]
    wrong: dict[str, list[float]]  # start (":g") → per image
    prompt_index: list[int] = field(default_factory=list)  # the probe's images (empty: the variant's own)


@dataclass(slots=True)
class MeanLeakProbe:
    """The designed mean-leak probe (claim C3) at one start: per prompt, its noise with the mean set
    to ``level``/√D (level ∈ {−2, −1, 0, 1, 2}), sampled; the output mean per image. The regressor,
    the unit noise mean ``level``/√D, has the same unit at every start."""

    cfg_scale: float
    start: float  # SDXL units
    dim: int  # D, elements of one noise sample
    prompt_index: list[int]
    level: list[float]
    out_mean: list[float]

    @property
    def noise_mean(self) -> np.ndarray:
        return np.asarray(self.level, dtype=float) / math.sqrt(self.dim)


@dataclass(slots=True)
class Probes:
    x0_inf: X0Probe
    x0_20000: X0Probe
    practical_infinity: PracticalInfinity | None = None
    mean_leak: dict[str, MeanLeakProbe] = field(default_factory=dict)  # start (":g", "inf") → probe
    count: CountProbe | None = None  # at 2× the side: what C4 compares
    count_scales: dict[str, CountProbe] = field(default_factory=dict)  # other scales (":g" → probe), descriptive
    counter: str = ""  # the instrument that counted ("exact scorer", "WD14 tagger")

    def leak_at(self, start: str) -> MeanLeakProbe | None:
        """The mean-leak probe nearest ``start`` (a σ), or at the highest start for "max"."""
        if not self.mean_leak:
            return None
        key = (lambda k: float(k))
        if start == "max":
            return self.mean_leak[max(self.mean_leak, key=key)]
        return self.mean_leak[min(self.mean_leak, key=lambda k: abs(float(k) - float(start)))]


@dataclass(slots=True)
class VariantResult:
    """One checkpoint evaluated over the sweep, with the prompt set that pairs it with others."""

    variant: str
    variant_config: dict[str, Any]  # the resolved VariantConfig (to_dict form)
    prompts: list[list[str]]
    prompt_index: list[int]
    points: list[PointResult]
    probes: Probes | None = None
    problems: list[str] = field(default_factory=list)
    seed: int = 0  # the training seed of this replicate
    instruments: dict[str, dict[str, float]] = field(default_factory=dict)  # accuracy on held-out real images

    @property
    def prediction(self) -> str:
        return self.variant_config["prediction"]

    @property
    def ztsnr(self) -> bool:
        return bool(self.variant_config.get("ztsnr"))

    @property
    def top_sigma(self) -> float:
        """Trained maximum σ in SDXL units (∞ for ZTSNR without a finite clamp)."""
        s = self.variant_config.get("sigma_max")
        if s in (None, "inf"):
            return math.inf if self.ztsnr else 14.6146
        return float(s)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VariantResult":
        points = [point_from_dict(p) for p in d["points"]]
        probes = None
        if d.get("probes"):
            pr = d["probes"]
            pi = pr.get("practical_infinity")
            leak = {k: MeanLeakProbe(**_floats(v)) for k, v in (pr.get("mean_leak") or {}).items()}
            count = CountProbe(**pr["count"]) if pr.get("count") else None
            scales = {k: CountProbe(**v) for k, v in (pr.get("count_scales") or {}).items()}
            probes = Probes(X0Probe(**_floats(pr["x0_inf"])), X0Probe(**_floats(pr["x0_20000"])),
                            PracticalInfinity(**pi) if pi else None, leak, count, scales, pr.get("counter", ""))
        return cls(**{**d, "points": points, "probes": probes})


def baseline_and_nai(results: list[VariantResult]) -> tuple[VariantResult | None, VariantResult | None]:
    """(the SDXL baseline: ε without ZTSNR, NAI v3: v with ZTSNR and σ_max = ∞) among ``results``."""
    base = next((r for r in results if r.prediction == "eps" and not r.ztsnr), None)
    nai = next((r for r in results if r.prediction == "v" and math.isinf(r.top_sigma)), None)
    return base, nai


def point_at(r: VariantResult, cfg: float, first: str) -> PointResult | None:
    """The point of ``r`` at CFG ``cfg`` whose start is nearest ``first`` (a σ) — or the highest
    start when ``first`` is "max"."""
    pts = [p for p in r.points if p.cfg_scale == cfg]
    if not pts:
        return None
    if first == "max":
        return max(pts, key=lambda p: p.first_sigma)
    return min(pts, key=lambda p: abs(p.first_sigma - float(first)))


def point_from_dict(d: dict) -> PointResult:
    """A ``PointResult`` back from ``to_dict`` form (JSON)."""
    return PointResult(**{**d, "point": EvalPoint(**_floats(d["point"])), "per_image": PerImage(**d["per_image"])})


def _floats(d: dict) -> dict:
    return {k: (math.inf if v == "inf" else -math.inf if v == "-inf" else v) for k, v in d.items()}
