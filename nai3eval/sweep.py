"""Evaluate a checkpoint over a sweep of (CFG scale × starting σ) with common random numbers.

Every point of every variant sees the same prompts and the same initial unit noise, so any
difference between two points is paired, not luck of the draw. σ are in SDXL units throughout;
the checkpoint's schedule maps them to model units.
"""
from __future__ import annotations

import csv
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from nai3train.checkpoint import load_meta, load_weights
from nai3train.config import EvalConfig, VariantConfig, from_dict
from nai3train.data import PAD, ChannelStats, Vocabulary
from nai3train.diffusion import PRACTICAL_INFINITY, Denoiser, sampling_sigmas
from nai3train.models import TinyTagUNet
from nai3train.tracking import Tracker
from nai3train.variant import build_denoiser

from . import metrics as M
from .grid import save_grid
from .samplers import GuidedDenoiser, get_sampler, initial_state
from .probes import PRACTICAL_STARTS, practical_infinity, x0_at_infinity
from .stats import resample_spread
from .tagger import Tagger


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalPoint:
    cfg_scale: float
    first_sigma: float  # SDXL units; may be +∞
    sampler: str = "euler"
    schedule: str = "native"
    steps: int = 28
    cfg_rescale: float = 0.0

    @property
    def name(self) -> str:
        s = "inf" if math.isinf(self.first_sigma) else f"{self.first_sigma:g}"
        return f"cfg{self.cfg_scale:g}-sigma{s}-{self.sampler}{self.steps}"


def sweep_points(ec: EvalConfig, top_sigma: float = math.inf) -> list[EvalPoint]:
    """CFG × starting σ; a start of +∞ only where the variant was trained on σ = ∞ (ZTSNR).

    Finite starts above the trained maximum are kept: an extrapolation, flagged as such per point."""
    return [EvalPoint(c, s, ec.sampler, ec.schedule, ec.steps, ec.cfg_rescale)
            for s in ec.first_sigmas if not (math.isinf(s) and math.isfinite(top_sigma)) for c in ec.cfg_scales]


class RealDataMetrics:
    """Inception FID (clean-fid) and CLIPScore (torchmetrics) when their local weights are configured.

    A missing file is reported once (logged and kept in ``problems``) and the sweep goes on without
    that metric."""

    def __init__(self, ec: EvalConfig):
        from . import realdata

        self.problems: list[str] = []
        self.inception = self.clip = None
        if ec.inception_weights:
            try:
                self.inception = realdata.InceptionFeatures(ec.inception_weights)
            except (FileNotFoundError, RuntimeError) as e:
                self._skip("Inception FID", e)
        if ec.clip_path:
            try:
                self.clip = realdata.load_clip(ec.clip_path)
            except (FileNotFoundError, OSError) as e:
                self._skip("CLIPScore", e)
        self.wd14 = None
        if ec.wd14_model or ec.wd14_tags:
            try:
                self.wd14 = realdata.WD14Tagger(ec.wd14_model, ec.wd14_tags)
            except (FileNotFoundError, OSError, RuntimeError) as e:
                self._skip("WD14 tag adherence", e)

    def _skip(self, what: str, e: Exception) -> None:
        msg = f"{what} skipped: {e}"
        log.warning(msg)
        self.problems.append(msg)

    def __call__(self, real: torch.Tensor, fake: torch.Tensor, prompts: list[list[str]]) -> dict:
        from . import realdata

        out = {}
        if self.inception is not None:
            out["fid_inception"] = realdata.inception_fid(real, fake, "", extractor=self.inception)
        if self.clip is not None:
            texts = [", ".join(p).replace("_", " ") for p in prompts]
            out["clip_score"] = realdata.clip_score(fake, texts, "", loaded=self.clip)
        if self.wd14 is not None:
            out.update(self.wd14.adherence(fake, prompts))
        return out


@dataclass
class PromptSet:
    """P prompts × S seeds, flattened: image i has prompt ``prompt_index[i]`` and noise ``noise[i]``."""

    prompts: list[list[str]]
    prompt_index: torch.Tensor
    noise: torch.Tensor

    @property
    def per_image(self) -> list[list[str]]:
        return [self.prompts[i] for i in self.prompt_index.tolist()]


def make_prompt_set(eval_tags: list[list[str]], n_prompts: int, seeds_per_prompt: int, shape: tuple[int, ...],
                    seed: int) -> PromptSet:
    """Held-out prompts, round-robin over backgrounds so black and white prompts are always
    present (claims C2/C3), and unit noise drawn once from ``seed``."""
    by_bg: dict[str, list[list[str]]] = {}
    for t in eval_tags:
        by_bg.setdefault(next((x for x in t if x.endswith("_background")), ""), []).append(t)
    order = sorted(by_bg, key=lambda k: (k not in ("black_background", "white_background"), k))
    prompts: list[list[str]] = []
    i = 0
    while len(prompts) < n_prompts and any(by_bg.values()):
        bucket = by_bg[order[i % len(order)]]
        if bucket:
            prompts.append(bucket.pop(0))
        i += 1
    index = torch.arange(len(prompts)).repeat_interleave(seeds_per_prompt)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(index), *shape), generator=gen)
    return PromptSet(prompts=prompts, prompt_index=index, noise=noise)


@dataclass
class LoadedCheckpoint:
    model: TinyTagUNet
    denoiser: Denoiser
    vocab: Vocabulary
    variant: VariantConfig
    meta: dict

    @property
    def denoiser_channels(self) -> int:
        return 3


def load_checkpoint(folder: str | Path, ema: bool = True) -> LoadedCheckpoint:
    meta = load_meta(folder)
    if meta.get("model_kind", "tiny") != "tiny":
        raise NotImplementedError(f"{folder}: evaluating {meta.get('model_kind')} checkpoints is not supported yet "
                                  "(the sweep samples the tiny benchmark model)")
    model = TinyTagUNet.from_config(meta["model"])
    model.load_state_dict(load_weights(folder, ema=ema))
    model.eval()
    variant = from_dict(VariantConfig, meta["variant"], "variant")
    dim = meta.get("sample_dim") or 3 * meta["resolution"] ** 2
    return LoadedCheckpoint(model, build_denoiser(model, variant, dim), Vocabulary(tuple(meta["vocab"])),
                            variant, meta)


def generate(ck: LoadedCheckpoint, point: EvalPoint, ps: PromptSet, batch: int = 64, seed: int = 0,
             on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (N, 3, R, R) in model space, and each sample's starting-noise mean (model units)."""
    schedule = ck.denoiser.schedule
    sigmas = sampling_sigmas(schedule, point.steps, point.first_sigma, point.schedule)
    first = float(sigmas[0])
    sampler = get_sampler(point.sampler)
    ids = ck.vocab.ids(ps.per_image, ck.model.config["max_tags"])
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(ids), batch):
        b_ids = ids[i:i + batch]
        cond = ck.model.cond(b_ids)
        uncond = ck.model.cond(torch.full_like(b_ids, PAD))
        guided = GuidedDenoiser(ck.denoiser, cond, uncond, point.cfg_scale, point.cfg_rescale)
        x = initial_state(ps.noise[i:i + batch], first)
        outs.append(sampler(guided, x, sigmas, generator=gen, callback=(lambda _i: on_step()) if on_step else None))
    start_sigma = schedule.to_model(PRACTICAL_INFINITY) if math.isinf(first) else first
    start_means = ps.noise.flatten(1).mean(1) * start_sigma
    images = torch.cat(outs)
    norm = ck.meta.get("normalization")
    if norm:  # back from the model's normalised space to pixels (the noise mean too)
        images = ChannelStats(tuple(norm["mean"]), tuple(norm["std"])).invert(images)
        start_means = start_means * float(torch.tensor(norm["std"]).mean())
    return images, start_means


def evaluate_checkpoint(checkpoint: str | Path, ec: EvalConfig, real_images: torch.Tensor, real_tags: list[list[str]],
                        tagger: Tagger, tagger_vocab: list[str], parent: Tracker | None = None,
                        experiment_id: str | None = None, variant_name: str | None = None,
                        progress: bool = True, tag_frequency: dict[str, float] | None = None,
                        grid_dir: str | Path | None = None) -> dict:
    """Run the sweep and the pure-noise probes for one checkpoint; one MLflow child run per point
    when ``parent`` is given.

    Returns {"variant", "variant_config", "prompt_index", "points": [row per point], "probes": {…}}:
    settings and metrics, all computed, with per-image lists for confidence intervals.
    """
    ck = load_checkpoint(checkpoint)
    name = variant_name or ck.variant.name
    r = ck.meta["resolution"]
    ps = make_prompt_set(real_tags, ec.prompts, ec.seeds_per_prompt, (ck.denoiser_channels, r, r), ec.seed)
    prompted = Vocabulary(tuple(tagger_vocab)).multi_hot(ps.per_image)
    rare, common = M.tag_groups(tag_frequency or {}, tagger_vocab) if tag_frequency else (None, None)
    points = sweep_points(ec, ck.variant.top_sigma)
    ztsnr = math.isinf(ck.variant.top_sigma)
    real_metrics = RealDataMetrics(ec)
    n_batches = math.ceil(len(ps.prompt_index) / 64)
    total = sum(p.steps for p in points) + (ec.steps * (len(PRACTICAL_STARTS)) if ztsnr else 0)
    bar = tqdm(total=total * n_batches, desc=f"eval {name}", disable=not progress, leave=False)
    rows = []
    for point in points:
        images, start_means = generate(ck, point, ps, seed=ec.seed, on_step=lambda: bar.update(1))
        row = {"variant": name, "point": point.name, "cfg_scale": point.cfg_scale, "first_sigma": point.first_sigma,
               "sampler": point.sampler, "steps": point.steps, "n_images": len(images),
               "extrapolated": point.first_sigma > ck.variant.top_sigma}
        row["nonfinite_samples"] = M.nonfinite_count(images)
        row["fd_tagger"] = M.frechet_distance(tagger, real_images, images)
        row["kid_tagger"], row["kid_tagger_std"] = M.kernel_distance(tagger, real_images, images)
        row.update(M.tag_adherence(tagger, images, prompted, rare, common))
        row.update(M.mean_leak(images, start_means, ps.prompt_index))
        row.update(M.brightness(images, ps.per_image, real_images, real_tags))
        row["fd_tagger_spread"] = fd_spread(tagger, real_images, images)
        row.update(real_metrics(real_images, images, ps.per_image))
        rows.append(row)
        if grid_dir is not None:
            save_grid(images[:16], Path(grid_dir) / f"{name}__{point.name}.png")
        if parent is not None and experiment_id is not None:
            _log_point(parent, experiment_id, name, ck, point, row, images, ps, tagger_vocab)
    probes = x0_at_infinity(ck, ps, real_images, real_tags)
    if ztsnr:
        probe_cfg = min(ec.cfg_scales, key=lambda c: abs(c - 5.0))
        probes.update(practical_infinity(ck, ps, probe_cfg, ec.steps, ec.sampler, ec.schedule))
        probes["practical_infinity_cfg"] = probe_cfg
        bar.update(ec.steps * len(PRACTICAL_STARTS) * n_batches)
    bar.close()
    return {"variant": name, "variant_config": ck.meta["variant"], "prompt_index": ps.prompt_index.tolist(),
            "prompts": ps.prompts, "points": rows, "probes": probes, "problems": real_metrics.problems}


def fd_spread(tagger: Tagger, real: torch.Tensor, fake: torch.Tensor, repeats: int = 20) -> list[float]:
    """FD's 95 % bootstrap spread over resampled generated sets of the same N (same reference)."""
    est = resample_spread(len(fake), lambda idx: M.frechet_distance(tagger, real, fake[torch.as_tensor(idx)]),
                          repeats=repeats)
    return [est.low, est.high]


METRIC_KEYS = ("fd_tagger", "fid_inception", "clip_score", "wd14_precision", "wd14_recall", "kid_tagger", "kid_tagger_std", "tag_precision", "tag_recall", "tag_recall_rare",
               "tag_recall_common", "tag_leakage_common", "mean_leak_slope", "mean_leak_r", "brightness_black",
               "brightness_white", "brightness_err_black", "brightness_err_white", "nonfinite_samples")


def _log_point(parent: Tracker, experiment_id: str, name: str, ck: LoadedCheckpoint, point: EvalPoint, row: dict,
               images: torch.Tensor, ps: PromptSet, tagger_vocab: list[str]) -> None:
    child = Tracker.start(parent.uri, experiment_id, f"eval/{name}/{point.name}", parent=parent,
                          tags={"nai3.kind": "eval", "nai3.variant": name, "nai3.variant_hash": ck.meta["variant_hash"]})
    try:
        child.log_params({"variant.name": name, "eval.cfg_scale": point.cfg_scale,
                          "eval.first_sigma": point.first_sigma, "eval.sampler": point.sampler,
                          "eval.schedule": point.schedule, "eval.steps": point.steps,
                          "eval.cfg_rescale": point.cfg_rescale, "eval.n_images": len(images),
                          "eval.extrapolated": row["extrapolated"]})
        settings = {"eval/cfg_scale": point.cfg_scale, "eval/cfg_rescale": point.cfg_rescale,
                    "eval/first_sigma": point.first_sigma if math.isfinite(point.first_sigma) else 1e300,
                    "eval/log10_first_sigma": math.log10(point.first_sigma) if math.isfinite(point.first_sigma)
                    else 300.0}
        settings.update({f"eval/{k}": row[k] for k in METRIC_KEYS if k in row and row[k] == row[k]})
        child.log_metrics(settings)
        with tempfile.TemporaryDirectory() as d:
            save_grid(images[:32], Path(d) / "samples.png")
            with open(Path(d) / "per_image.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["index", "variant", "cfg_scale", "first_sigma", "prompt", "prompt_index", "seed_index",
                            "mean", "brightness", "tags_found", "recall", "finite"])
                seen: dict[int, int] = {}
                for i, p in enumerate(ps.prompt_index.tolist()):
                    seen[p] = seen.get(p, -1) + 1
                    w.writerow([i, name, point.cfg_scale, point.first_sigma, ", ".join(ps.prompts[p]), p, seen[p],
                                f"{row['per_image_out_mean'][i]:.5f}", f"{row['per_image_brightness'][i]:.5f}",
                                ", ".join(tagger_vocab[k] for k in row["per_image_found"][i]),
                                f"{row['per_image_recall'][i]:.3f}", bool(torch.isfinite(images[i]).all())])
            child.log_artifact(d)
        child.finish(True)
    except Exception:
        child.finish(False)
        raise
