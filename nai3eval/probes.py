"""Pure-noise probes: the paper's core claims measured directly on the denoiser and sampler.

* x0 at infinity (C1): D(ε, σ) at σ = ∞ (and at the practical 20000) against the data mean for the
  prompt — here, each image's mean brightness against the real images with the same background.
  v-prediction has a finite exact limit; ε-prediction returns ∞·(ε − F): its non-finite fraction
  and magnitude are measured, never raised.
* Practical infinity (C9): samples started from 20000, 317, 136 and 56 (SDXL units) from the same
  unit noise; RMS distance of each to the 20000 one, and the scale: the distance between samples of
  the same prompt from independent noise.
* Count at twice the side (C4, benchmark): objects counted off the pixels of samples on a 2×
  canvas from starts 14.6, 29 and 20000 — a wrong count is the incoherence the paper's σ_max fixes.
* Mean leak (C3): a designed probe — per prompt, noise whose mean is set to {−2, −1, 0, 1, 2}/√D —
  sampled at the lowest and highest start; the output mean's slope on the unit noise mean.
"""
from __future__ import annotations

import math

import torch

from nai3train.diffusion import sampling_sigmas
from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state

from .counting import Counter, wrong_counts
from .metrics import to_unit
from .prompts import PromptSet
from .results import CountProbe, EvalPoint, MeanLeakProbe, PracticalInfinity, Probes, X0Probe
from .sweep import LoadedCheckpoint, generate

PRACTICAL_STARTS = (20000.0, 317.0, 136.0, 56.0)


def background_reference(prompts: list[list[str]], real_brightness: torch.Tensor, real_tags: list[list[str]]
                         ) -> torch.Tensor:
    """Per prompt, the mean brightness in [0, 1] of real images with the same background tag
    (``real_brightness``: each real image's, ``metrics.image_brightness``)."""
    out = []
    for p in prompts:
        bg = next((t for t in p if t.endswith("_background")), None)
        sel = torch.tensor([bg in t for t in real_tags]) if bg else torch.zeros(len(real_tags), dtype=torch.bool)
        out.append(float(real_brightness[sel].mean()) if sel.any() else float(real_brightness.mean()))
    return torch.tensor(out)


@torch.no_grad()
def x0_probe(ck: LoadedCheckpoint, ps: PromptSet, ref: torch.Tensor, sigma_sdxl: float) -> X0Probe:
    """Brightness error of D(ε, σ) per image against ``ref`` (per-image reference brightness)."""
    sigma = ck.denoiser.schedule.to_model(sigma_sdxl)
    cond, _ = ck.conditioning(ps, slice(None))
    x = initial_state(ps.noise.to(ck.bundle.device), sigma)
    d = ck.bundle.to_pixels(ck.denoiser(x, sigma, cond)).float().cpu()
    finite = torch.isfinite(d.flatten(1)).all(1)
    mean = torch.where(finite, ((d.flatten(1) + 1) / 2).mean(1), torch.full((len(d),), math.nan))
    err = (mean - ref).abs()
    return X0Probe(sigma=sigma_sdxl, nonfinite_frac=float((~finite).float().mean()),
                   max_abs=float(torch.nan_to_num(d.abs(), nan=math.inf).max()),
                   brightness_err=float(err[finite].mean()) if finite.any() else math.nan,
                   per_image_err=err.tolist())


@torch.no_grad()
def practical_infinity(ck: LoadedCheckpoint, ps: PromptSet, cfg_scale: float, steps: int, sampler: str = "euler",
                       schedule: str = "native", starts: tuple[float, ...] = PRACTICAL_STARTS) -> PracticalInfinity:
    """Claim C9 for one checkpoint: per-image RMS distance between samples started at ``starts[0]``
    and at each other start, from the same noise and sampler — on two images per prompt, which
    also give the scale (their distance to each other)."""
    keep = torch.cat([torch.nonzero(ps.prompt_index == p).flatten()[:2] for p in range(len(ps.prompts))])
    ps = PromptSet(ps.prompts, ps.prompt_index[keep], ps.noise[keep])  # two per prompt: d and its scale d_ref
    cond, uncond = ck.conditioning(ps, slice(None))
    guided = GuidedDenoiser(ck.denoiser, cond, uncond, cfg_scale)
    outs = {}
    noise = ps.noise.to(ck.bundle.device)
    for s in starts:
        gen = torch.Generator(device=ck.bundle.device).manual_seed(0)
        sig = sampling_sigmas(ck.denoiser.schedule, steps, s, schedule)
        x = get_sampler(sampler)(guided, initial_state(noise, float(sig[0])), sig, generator=gen)
        outs[s] = to_unit(ck.bundle.to_pixels(x).float().cpu())
    ref = outs[starts[0]]
    dist, per_image = {}, {}
    for s in starts[1:]:
        d = (outs[s] - ref).flatten(1).pow(2).mean(1).sqrt()
        dist[f"{s:g}"] = float(d.mean())
        per_image[f"{s:g}"] = d.tolist()
    return PracticalInfinity(cfg_scale=cfg_scale, reference_start=starts[0], distance=dist,
                             per_image_distance=per_image, per_image_reference=same_prompt_distance(ref, ps),
                             prompt_index=ps.prompt_index.tolist())


def same_prompt_distance(images: torch.Tensor, ps: PromptSet) -> list[float]:
    """Per image, the mean RMS distance to the other images of its prompt (independent noise): what
    "different" means for this model and prompt, the scale that makes C9's distances comparable."""
    flat = images.flatten(1)
    pid = ps.prompt_index
    out = []
    for i in range(len(flat)):
        others = torch.nonzero((pid == pid[i]) & (torch.arange(len(pid)) != i)).flatten()
        if len(others) == 0:
            return []
        out.append(float((flat[others] - flat[i]).pow(2).mean(1).sqrt().mean()))
    return out


LEAK_LEVELS = (-2.0, -1.0, 0.0, 1.0, 2.0)


@torch.no_grad()
def mean_leak_probe(ck: LoadedCheckpoint, ps: PromptSet, cfg_scale: float, start: float, steps: int,
                    sampler: str = "euler", schedule: str = "native", levels: tuple[float, ...] = LEAK_LEVELS,
                    batch: int = 64) -> MeanLeakProbe:
    """Claim C3's designed probe: each prompt's first noise with its mean removed, then set to
    level/√D for every level; sampled at (``cfg_scale``, ``start``). Exact balance across prompts
    and a dose-response, with a regressor of the same unit at every start."""

    first = [int(torch.nonzero(ps.prompt_index == p)[0]) for p in range(len(ps.prompts))]
    base = ps.noise[first]
    dim = base[0].numel()
    centred = base - base.flatten(1).mean(1).view(-1, *([1] * (base.dim() - 1)))
    noise = torch.cat([centred + lv / math.sqrt(dim) for lv in levels])
    index = torch.arange(len(first)).repeat(len(levels))
    designed = PromptSet(ps.prompts, index, noise)
    point = EvalPoint(cfg_scale=cfg_scale, first_sigma=start, sampler=sampler, schedule=schedule, steps=steps)
    images = generate(ck, point, designed, batch=batch).images
    out = images.flatten(1).mean(1)
    return MeanLeakProbe(cfg_scale=cfg_scale, start=start, dim=dim, prompt_index=index.tolist(),
                         level=[lv for lv in levels for _ in first], out_mean=out.tolist())


COUNT_STARTS = (14.6, 20000.0)


def canvas(ck: LoadedCheckpoint, scale: float) -> tuple[int, int]:
    """``scale``× the native side, rounded to a size the model can sample."""
    m = ck.bundle.size_multiple
    return tuple(max(m, round(scale * side / m) * m) for side in ck.image_size)


@torch.no_grad()
def count_probe(ck: LoadedCheckpoint, ps: PromptSet, cfg_scale: float, steps: int, counter: Counter,
                sampler: str = "euler", schedule: str = "native", seed: int = 0, scale: float = 2.0,
                starts: tuple[float, ...] = COUNT_STARTS) -> CountProbe:
    """Claim C4: one image per prompt sampled at ``scale``× the native side (its own dimension
    scale) from each start on the same fresh noise (drawn from ``seed``: shared by the arms of a
    replicate), objects counted by ``counter`` against the prompt's number."""
    big = ck.at_size(canvas(ck, scale))
    gen = torch.Generator().manual_seed(seed + 7919)
    index = torch.arange(len(ps.prompts))  # one image per prompt: the canvas costs scale² of the sweep's
    noise = torch.randn((len(index), *big.sample_shape), generator=gen)
    wide = PromptSet(ps.prompts, index, noise)
    wrong = {}
    for s in starts:
        point = EvalPoint(cfg_scale=cfg_scale, first_sigma=s, sampler=sampler, schedule=schedule, steps=steps)
        wrong[f"{s:g}"] = wrong_counts(counter, wide.per_image, generate(big, point, wide).images)
    return CountProbe(cfg_scale=cfg_scale, scale=scale, size=list(big.image_size), wrong=wrong,
                      prompt_index=index.tolist())


def run_probes(ck: LoadedCheckpoint, ps: PromptSet, real_brightness: torch.Tensor, real_tags: list[list[str]],
               cfg_scales: tuple[float, ...], steps: int, sampler: str, schedule: str,
               starts: tuple[float, ...] = (), counter: Counter | None = None, seed: int = 0,
               count_scales: tuple[float, ...] = (2.0,)) -> Probes:
    """Both x̂0 probes for every checkpoint; the designed mean-leak probe from the highest swept start
    the variant was trained for (14.6 without ZTSNR, the top start with it: C3 compares exactly
    these); for ZTSNR variants the practical-infinity probe and, with a ``counter`` (the exact
    scorer on the benchmark, a WD14 tagger for anime models), the count probe at each of
    ``count_scales`` × the side (C4 compares starts of the ZTSNR model at 2×). Sampled probes run
    at the swept CFG nearest 5, the paper's recommendation."""
    ref = background_reference(ps.per_image, real_brightness, real_tags)
    probes = Probes(x0_probe(ck, ps, ref, math.inf), x0_probe(ck, ps, ref, 20000.0))
    cfg = min(cfg_scales, key=lambda c: abs(c - 5.0))
    top = ck.variant.top_sigma
    trained = [s for s in starts if s <= top * 1.001]  # the starts this variant was trained to begin from
    if trained:
        s = max(trained)
        probes.mean_leak[f"{s:g}"] = mean_leak_probe(ck, ps, cfg, s, steps, sampler, schedule)
    if math.isinf(top):
        probes.practical_infinity = practical_infinity(ck, ps, cfg, steps, sampler, schedule)
        if counter is not None:
            probes.counter = counter.name
            for scale in count_scales:
                probe = count_probe(ck, ps, cfg, steps, counter, sampler, schedule, seed, scale)
                if scale == 2.0:
                    probes.count = probe
                else:
                    probes.count_scales[f"{scale:g}"] = probe
    return probes
