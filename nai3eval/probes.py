"""Pure-noise probes: the paper's core claims measured directly on the denoiser and sampler.

* x0 at infinity (C1): D(ε, σ) at σ = ∞ (and at the practical 20000) against the data mean for the
  prompt — here, each image's mean brightness against the real images with the same background.
  v-prediction has a finite exact limit; ε-prediction returns ∞·(ε − F): its non-finite fraction
  and magnitude are measured, never raised.
* Practical infinity (C9): samples started from 20000, 317, 136 and 56 (SDXL units) from the same
  unit noise; RMS distance of each to the 20000 one.
"""
from __future__ import annotations

import math

import torch

from nai3train.diffusion import sampling_sigmas

from .metrics import to_unit
from .samplers import GuidedDenoiser, get_sampler, initial_state

PRACTICAL_STARTS = (20000.0, 317.0, 136.0, 56.0)


def background_reference(prompts: list[list[str]], real_images: torch.Tensor, real_tags: list[list[str]]
                         ) -> torch.Tensor:
    """Per prompt, the mean brightness in [0, 1] of real images with the same background tag."""
    bright = to_unit(real_images).flatten(1).mean(1)
    out = []
    for p in prompts:
        bg = next((t for t in p if t.endswith("_background")), None)
        sel = torch.tensor([bg in t for t in real_tags]) if bg else torch.zeros(len(real_tags), dtype=torch.bool)
        out.append(float(bright[sel].mean()) if sel.any() else float(bright.mean()))
    return torch.tensor(out)


@torch.no_grad()
def x0_at_infinity(ck, ps, real_images: torch.Tensor, real_tags: list[list[str]]) -> dict:
    """Claim C1 for one checkpoint: brightness error of D(ε, σ) for σ ∈ {∞, 20000}, per image."""
    ids = ck.vocab.ids(ps.per_image, ck.model.config["max_tags"])
    ref = background_reference(ps.per_image, real_images, real_tags)
    norm = ck.meta.get("normalization")
    out: dict = {}
    for label, sigma_sdxl in (("inf", math.inf), ("20000", 20000.0)):
        sigma = ck.denoiser.schedule.to_model(sigma_sdxl)
        x = initial_state(ps.noise, sigma)
        d = ck.denoiser(x, sigma, ck.model.cond(ids))
        if norm:
            from nai3train.data import ChannelStats

            d = ChannelStats(tuple(norm["mean"]), tuple(norm["std"])).invert(d)
        finite = torch.isfinite(d.flatten(1)).all(1)
        mean = torch.where(finite, ((d.flatten(1) + 1) / 2).mean(1), torch.full((len(d),), float("nan")))
        err = (mean - ref).abs()
        out[f"x0_{label}_nonfinite_frac"] = float((~finite).float().mean())
        out[f"x0_{label}_max_abs"] = float(torch.nan_to_num(d.abs(), nan=math.inf).max())
        out[f"x0_{label}_brightness_err"] = float(err[finite].mean()) if finite.any() else float("nan")
        out[f"per_image_x0_{label}_err"] = err.tolist()
    return out


@torch.no_grad()
def practical_infinity(ck, ps, cfg_scale: float, steps: int, sampler: str = "euler", schedule: str = "native",
                       starts: tuple[float, ...] = PRACTICAL_STARTS) -> dict:
    """Claim C9 for one checkpoint: per-image RMS distance between samples started at ``starts[0]``
    and at each other start, from the same noise and sampler."""
    ids = ck.vocab.ids(ps.per_image, ck.model.config["max_tags"])
    guided = GuidedDenoiser(ck.denoiser, ck.model.cond(ids), ck.model.cond(torch.zeros_like(ids)), cfg_scale)
    outs = {}
    gen = torch.Generator().manual_seed(0)
    for s in starts:
        sig = sampling_sigmas(ck.denoiser.schedule, steps, s, schedule)
        outs[s] = get_sampler(sampler)(guided, initial_state(ps.noise, float(sig[0])), sig, generator=gen)
    ref = to_unit(outs[starts[0]])
    result: dict = {}
    for s in starts[1:]:
        d = (to_unit(outs[s]) - ref).flatten(1).pow(2).mean(1).sqrt()
        result[f"start_dist_{s:g}"] = float(d.mean())
        result[f"per_image_start_dist_{s:g}"] = d.tolist()
    return result
