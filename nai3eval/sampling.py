"""The one sampling path: every image nai3 evaluates — sweep points and probes — is made here."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch

from nai3train.diffusion import PRACTICAL_INFINITY, Schedule, sampling_sigmas
from nai3train.diffusion.frontends import frontend_schedule, frontend_sigmas
from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state

from .checkpoint import LoadedCheckpoint
from .metrics import Samples
from .prompts import PromptSet
from .setting import Setting


def point_sigmas(schedule: Schedule, setting: Setting) -> torch.Tensor:
    """The σ list (model units, ending in 0) a point samples: a front-end's own schedule for a
    ``frontend`` point, else nai3's from the point's start, spacing and steps."""
    if setting.frontend:
        return frontend_sigmas(setting.frontend, schedule, setting.steps)
    return sampling_sigmas(schedule, setting.steps, setting.start, setting.schedule)


def first_sigma(schedule: Schedule, setting: Setting) -> float:
    """The first σ a point actually samples, in SDXL units (∞ where it starts at the exact ∞): what
    the point is recorded with, beside the start it asked for."""
    first = float(point_sigmas(schedule, setting)[0])
    # the asked start, exactly, where it is what was sampled (no unit round trip in the last digit)
    return setting.start if first == float(schedule.to_model(setting.start)) else float(schedule.to_sdxl(first))


@torch.no_grad()
def generate(ck: LoadedCheckpoint, setting: Setting, ps: PromptSet, batch: int = 64, seed: int = 0,
             on_step: Callable[[], None] | None = None) -> Samples:
    """Sample every image of the prompt set at ``setting`` (its CFG scale, start, sampler, steps);
    pixels in [−1, 1] on the CPU, with each image's starting-noise mean in pixel units."""
    schedule = ck.denoiser.schedule
    sigmas = point_sigmas(schedule, setting)
    first = float(sigmas[0])
    denoiser = ck.denoiser  # a front-end also feeds σ → t through its own table
    if setting.frontend:
        denoiser = replace(denoiser, schedule=frontend_schedule(setting.frontend, schedule))
    sampler = get_sampler(setting.sampler)
    gen = torch.Generator(device=ck.bundle.device).manual_seed(seed)
    outs = []
    for i in range(0, len(ps), batch):
        rows = slice(i, i + batch)
        cond, uncond = ck.conditioning(ps, rows)
        guided = GuidedDenoiser(denoiser, cond, uncond, setting.cfg_scale, setting.cfg_rescale)
        x = initial_state(ps.noise[rows].to(ck.bundle.device), first)
        x = sampler(guided, x, sigmas, generator=gen, callback=(lambda _i: on_step()) if on_step else None)
        outs.append(ck.bundle.to_pixels(x).float().cpu())
    start_sigma = schedule.to_model(PRACTICAL_INFINITY) if math.isinf(first) else first
    start_means = ps.noise.flatten(1).mean(1) * start_sigma
    norm = ck.bundle.normalization
    if norm is not None:  # the noise mean in pixel units, like the outputs
        start_means = start_means * float(torch.tensor(norm.std).mean())
    return Samples(torch.cat(outs), start_means, ps)
