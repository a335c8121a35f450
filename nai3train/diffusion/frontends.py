"""How each front-end samples a model: its σ schedule, rebuilt here from its conventions.

A v-prediction ZTSNR model looks washed out or burnt depending on the UI, because each UI starts
sampling from a different first σ. The facts below were read in the front-ends' code and issue
trackers (docs/frontends.md). They are rebuilt on nai3's own tables (``schedules.py``), never copied:

* **nai** — NovelAI: native ZTSNR, sampling starts at the practical infinity 20000 at t = 999.
* **comfyui** — ComfyUI, A1111 ≥ 1.8 and reForge: ZTSNR rescale, then ᾱ_T clamped to
  4.8973451890853435e-08 (σ_T ≈ 4518.76); the "normal" scheduler, evenly spaced in t from 999.
* **diffusers-trailing** / **diffusers-leading** — ``rescale_betas_zero_snr=True`` clamps ᾱ_T to
  2⁻²⁴ (σ_T ≈ 4096); σ read off the table at the integer timesteps of each spacing (SDXL's
  ``steps_offset=1`` for leading: the first t is 946 at 28 steps, σ ≈ 38).
* **forge**, **kohya-preview** — the ZTSNR switch has no effect (Forge) or previews ignore it
  (kohya sd-scripts): the plain SDXL table, first σ 14.61, evenly spaced in t.

A clamp applies to a ZTSNR model only; a model trained without ZTSNR is sampled on the plain table
by every front-end but NovelAI, whose start stays 20000. Values are returned in model units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .schedules import (NUM_TRAIN_TIMESTEPS, PRACTICAL_INFINITY, Schedule, alphas_cumprod, native_sigmas,
                        rescale_zero_terminal_snr, sdxl_betas, sigmas_from_alphas_cumprod)

COMFYUI_ALPHA_BAR_T = 4.8973451890853435e-08
DIFFUSERS_ALPHA_BAR_T = 2.0 ** -24
LEADING_STEPS_OFFSET = 1  # SDXL's scheduler_config.json


@dataclass(frozen=True)
class Frontend:
    """One front-end's sampling convention for a model's table."""

    name: str
    terminal: Literal["native", "clamp", "plain"]  # ZTSNR kept (start given), ᾱ_T clamped, or ZTSNR ignored
    spacing: Literal["native", "trailing", "leading"]
    alpha_bar_t: float | None = None  # the clamp, for terminal 'clamp'
    start: float | None = None  # the first σ (SDXL units), for terminal 'native'
    who: str = ""


FRONTENDS: dict[str, Frontend] = {f.name: f for f in (
    Frontend("nai", "native", "native", start=PRACTICAL_INFINITY, who="NovelAI"),
    Frontend("comfyui", "clamp", "native", alpha_bar_t=COMFYUI_ALPHA_BAR_T, who="ComfyUI, A1111 ≥ 1.8, reForge"),
    Frontend("diffusers-trailing", "clamp", "trailing", alpha_bar_t=DIFFUSERS_ALPHA_BAR_T,
             who="diffusers, rescale_betas_zero_snr, trailing spacing"),
    Frontend("diffusers-leading", "clamp", "leading", alpha_bar_t=DIFFUSERS_ALPHA_BAR_T,
             who="diffusers, rescale_betas_zero_snr, SDXL's default leading spacing"),
    Frontend("forge", "plain", "native", who="Forge (its ZTSNR setting had no effect)"),
    Frontend("kohya-preview", "plain", "native", who="kohya sd-scripts' sample previews"),
)}


def frontend_table(frontend: Frontend, ztsnr: bool) -> torch.Tensor:
    """The 1000-entry σ table (SDXL units, float64) the front-end samples a model with."""
    ab = alphas_cumprod(sdxl_betas())
    if frontend.terminal == "clamp" and ztsnr:
        ab = rescale_zero_terminal_snr(ab)
        ab[-1] = frontend.alpha_bar_t
    return sigmas_from_alphas_cumprod(ab)


def frontend_timesteps(spacing: str, steps: int) -> list[int]:
    """The integer timesteps of diffusers' ``trailing`` and ``leading`` spacings, first to last."""
    if spacing == "trailing":
        ratio = NUM_TRAIN_TIMESTEPS / steps
        return [round(NUM_TRAIN_TIMESTEPS - k * ratio) - 1 for k in range(steps)]
    ratio = NUM_TRAIN_TIMESTEPS // steps
    return [k * ratio + LEADING_STEPS_OFFSET for k in reversed(range(steps))]


def _preset(name: str) -> Frontend:
    try:
        return FRONTENDS[name]
    except KeyError:
        raise ValueError(f"unknown front-end {name!r}; choose from {', '.join(FRONTENDS)}") from None


def frontend_schedule(name: str, schedule: Schedule) -> Schedule:
    """The table the front-end ``name`` reads its σ from, and σ → t through, for ``schedule``'s
    model (same units): the model's own for ``nai``; the clamped or plain 1000-entry table otherwise,
    so that a clamped first σ is fed as the timestep that front-end feeds (999), not as the point it
    would interpolate to on the model's ZTSNR table."""
    f = _preset(name)
    if f.terminal == "native":
        return schedule
    return Schedule(sdxl_sigmas=frontend_table(f, schedule.ztsnr), scale=schedule.scale, ztsnr=False)


def frontend_sigmas(name: str, schedule: Schedule, steps: int) -> torch.Tensor:
    """The σ list (model units, then a final 0) the front-end ``name`` samples ``schedule``'s model with."""
    f = _preset(name)
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    own = frontend_schedule(name, schedule)
    if f.terminal == "native":
        return native_sigmas(own, steps, f.start)
    if f.spacing == "native":
        return native_sigmas(own, steps, float(own.sdxl_sigmas[-1]))
    sig = own.sdxl_sigmas[frontend_timesteps(f.spacing, steps)]
    return torch.cat([sig, sig.new_zeros(1)]) * schedule.scale


def first_sigma(name: str, ztsnr: bool = True, steps: int = 28) -> float:
    """The first σ (SDXL units) the front-end samples from: the number users compare."""
    return float(frontend_sigmas(name, Schedule.sdxl(ztsnr=ztsnr), steps)[0])
