"""Evaluate a checkpoint over a sweep of (CFG scale × starting σ) with common random numbers.

``run_sweep`` is pure: it samples each point through the checkpoint's model bundle, hands the
samples to the metric objects and returns typed results; it writes nothing. Whatever should
happen to a point's images (MLflow child runs, grids) is a sink the caller passes as
``on_point``. σ are in SDXL units throughout; the checkpoint's schedule maps them to model units.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from nai3train.checkpoint import load_meta
from nai3train.config import EvalConfig, VariantConfig, from_dict, to_dict
from nai3train.diffusion import PRACTICAL_INFINITY, Denoiser, sampling_sigmas
from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state
from nai3train.models import ModelBundle, load_bundle
from nai3train.variant import build_denoiser

from .metrics import PointMetric, Samples, nonfinite_count
from .prompts import PromptSet
from .results import EvalPoint, PointResult

log = logging.getLogger(__name__)


def sweep_points(ec: EvalConfig, top_sigma: float = math.inf) -> list[EvalPoint]:
    """CFG × starting σ; a start of +∞ only where the variant was trained on σ = ∞ (ZTSNR).

    Finite starts above the trained maximum are kept: an extrapolation, flagged as such per point."""
    return [EvalPoint(c, s, ec.sampler, ec.schedule, ec.steps, ec.cfg_rescale)
            for s in ec.first_sigmas if not (math.isinf(s) and math.isfinite(top_sigma)) for c in ec.cfg_scales]


@dataclass
class LoadedCheckpoint:
    """A model bundle with the denoiser of the variant it was trained as."""

    bundle: ModelBundle
    denoiser: Denoiser
    variant: VariantConfig
    size: tuple[int, int] | None = None  # (height, width) to sample at; None: the bundle's native size
    source: str = ""  # where the parameterisation came from (checkpoint metadata, scheduler config, user)
    _conditioning: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size or self.bundle.native_size

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.bundle.sample_shape(*self.image_size)

    def at_size(self, size: tuple[int, int]) -> "LoadedCheckpoint":
        """The same model sampled at ``size`` with the σ table scaled for that canvas (its own
        dimension scale, when the variant uses one), as the larger canvas would have been trained."""
        denoiser = build_denoiser(self.bundle.network, self.variant, self.bundle.sample_dim(size))
        return LoadedCheckpoint(self.bundle, denoiser, self.variant, size, self.source, self._conditioning)

    def conditioning(self, ps: PromptSet, rows: slice) -> tuple[dict, dict]:
        """(cond, uncond) for the prompts of ``rows``, encoded once per checkpoint: every point of the
        sweep and every probe reuses them (for SDXL that is two text encoders not run again)."""
        texts = tuple(ps.texts[rows])
        key = (texts, self.image_size)
        if key not in self._conditioning:
            sizes = [self.image_size] * len(texts)
            self._conditioning[key] = (self.bundle.encode(list(texts), sizes), self.bundle.uncond(len(texts), sizes))
        return self._conditioning[key]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint(folder: str | Path, ema: bool = True, device: torch.device | str | None = None,
                    overrides: dict | None = None) -> LoadedCheckpoint:
    """The bundle saved in a nai3 checkpoint folder (EMA weights by default), on the GPU when there
    is one, with the denoiser rebuilt from the variant and σ scale recorded at training time."""
    meta = load_meta(folder)
    bundle = load_bundle(folder, "ema.safetensors" if ema else "model.safetensors")
    bundle.to(device or default_device())
    variant = from_dict(VariantConfig, meta["variant"], "variant")
    source = f"{folder}/meta.json"
    if overrides:
        variant = from_dict(VariantConfig, {**to_dict(variant), **overrides}, "variant")
        source += " + user overrides"
    return LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, meta["sample_dim"]), variant,
                            source=source)


def load_model(ref: str | Path, prediction: str | None = None, ztsnr: bool | None = None,
               resolution: int | None = None, device: torch.device | str | None = None,
               model_config: str | None = None) -> LoadedCheckpoint:
    """Any model nai3 can evaluate: a nai3 checkpoint folder, or a model a researcher holds (a
    diffusers SDXL folder, or a single-file SDXL checkpoint with ``model_config``, the local diffusers
    folder for its configs and tokenizers). ``prediction`` ('eps'/'v') and ``ztsnr`` override what the model says
    about itself; the σ table is always nai3's own (SDXL betas, exact ∞ with ZTSNR), never a
    scheduler's clamp or spacing."""
    from nai3train.models import load_pretrained

    path = Path(ref)
    if (path / "meta.json").is_file():
        given = {k: v for k, v in (("prediction", prediction), ("ztsnr", ztsnr)) if v is not None}
        ck = load_checkpoint(path, device=device, overrides=given)
    else:
        bundle, found = load_pretrained(str(path), model_config)
        bundle.to(device or default_device())
        ck = pretrained_checkpoint(bundle, found, path.name, prediction, ztsnr)
    if resolution:
        ck.size = (resolution, resolution)
    return ck


def pretrained_checkpoint(bundle: ModelBundle, found: dict, name: str, prediction: str | None = None,
                          ztsnr: bool | None = None) -> LoadedCheckpoint:
    """A pretrained model's bundle with the parameterisation it declares (``found``: prediction,
    ztsnr, source), unless the user overrides it; the σ table is SDXL's own at any resolution."""
    chosen = {"prediction": prediction or found["prediction"], "ztsnr": found["ztsnr"] if ztsnr is None else ztsnr}
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"
    variant = VariantConfig(name=name, dimension_scale=False, **chosen)
    source = found["source"] + ("" if prediction is None and ztsnr is None else " + user overrides")
    return LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, bundle.sample_dim()), variant,
                            source=source)


@torch.no_grad()
def generate(ck: LoadedCheckpoint, point: EvalPoint, ps: PromptSet, batch: int = 64, seed: int = 0,
             on_step: Callable[[], None] | None = None) -> Samples:
    """Sample every image of the prompt set at ``point``; pixels in [−1, 1] on the CPU."""
    schedule = ck.denoiser.schedule
    sigmas = sampling_sigmas(schedule, point.steps, point.first_sigma, point.schedule)
    first = float(sigmas[0])
    sampler = get_sampler(point.sampler)
    gen = torch.Generator(device=ck.bundle.device).manual_seed(seed)
    outs = []
    for i in range(0, len(ps), batch):
        rows = slice(i, i + batch)
        cond, uncond = ck.conditioning(ps, rows)
        guided = GuidedDenoiser(ck.denoiser, cond, uncond, point.cfg_scale, point.cfg_rescale)
        x = initial_state(ps.noise[rows].to(ck.bundle.device), first)
        x = sampler(guided, x, sigmas, generator=gen, callback=(lambda _i: on_step()) if on_step else None)
        outs.append(ck.bundle.to_pixels(x).float().cpu())
    start_sigma = schedule.to_model(PRACTICAL_INFINITY) if math.isinf(first) else first
    start_means = ps.noise.flatten(1).mean(1) * start_sigma
    norm = ck.bundle.normalization
    if norm is not None:  # the noise mean in pixel units, like the outputs
        start_means = start_means * float(torch.tensor(norm.std).mean())
    return Samples(torch.cat(outs), start_means, ps)


PointSink = Callable[[PointResult, Samples], None]


def run_sweep(ck: LoadedCheckpoint, points: Sequence[EvalPoint], ps: PromptSet, metrics: Sequence[PointMetric],
              seed: int = 0, on_point: PointSink | None = None, progress: bool = True, batch: int = 64
              ) -> list[PointResult]:
    """Sample each point and measure it with every metric; no I/O (``on_point`` may do some)."""
    n_batches = math.ceil(len(ps) / batch)
    bar = tqdm(total=sum(p.steps for p in points) * n_batches, desc=f"eval {ck.name}", disable=not progress,
               leave=False)
    results = []
    try:
        for point in points:
            t0 = time.perf_counter()
            samples = generate(ck, point, ps, batch=batch, seed=seed, on_step=lambda: bar.update(1))
            result = PointResult(variant=ck.name, point=point, n_images=len(samples.images),
                                 extrapolated=point.first_sigma > ck.variant.top_sigma,
                                 nonfinite_samples=nonfinite_count(samples.images))
            result.per_image.finite = torch.isfinite(samples.images.flatten(1)).all(1).tolist()
            for metric in metrics:
                metric(samples, result)
            result.seconds = time.perf_counter() - t0
            results.append(result)
            if on_point is not None:
                on_point(result, samples)
    finally:
        bar.close()
    return results
