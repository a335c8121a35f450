"""Front-end conventions as σ tables: each diffusers preset against diffusers' own scheduler, the
ComfyUI and diffusers clamps against their closed forms, and the first σ of every preset."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nai3train.diffusion import Schedule
from nai3train.diffusion.frontends import (COMFYUI_ALPHA_BAR_T, DIFFUSERS_ALPHA_BAR_T, FRONTENDS, first_sigma,
                                           frontend_sigmas)


def _diffusers_sigmas(spacing: str, steps: int, ztsnr: bool) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler

    s = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                               rescale_betas_zero_snr=ztsnr, timestep_spacing=spacing, steps_offset=1)
    s.set_timesteps(steps)
    return s.sigmas.double().numpy()


@pytest.mark.parametrize("steps", [1, 7, 28, 50])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("ztsnr", [True, False])
def test_diffusers_presets_equal_the_installed_scheduler(spacing, steps, ztsnr):
    """Same σ list as diffusers' EulerDiscreteScheduler (its float32 ᾱ: to 1e-4 relative)."""
    ours = frontend_sigmas(f"diffusers-{spacing}", Schedule.sdxl(ztsnr=ztsnr), steps).numpy()
    theirs = _diffusers_sigmas(spacing, steps, ztsnr)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_the_first_sigma_of_each_preset():
    """The numbers users compare, from closed forms: σ_T = √((1 − ᾱ_T)/ᾱ_T) for the clamps."""
    comfy = math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08)
    assert comfy == pytest.approx(4518.76, abs=0.01)
    assert first_sigma("comfyui") == pytest.approx(comfy, rel=1e-9)
    assert first_sigma("diffusers-trailing") == pytest.approx(math.sqrt(2.0**24 - 1), rel=1e-9)  # ≈ 4096
    assert first_sigma("nai") == 20000.0
    assert first_sigma("forge") == pytest.approx(14.6146, abs=1e-3)
    assert first_sigma("kohya-preview") == pytest.approx(14.6146, abs=1e-3)
    leading = first_sigma("diffusers-leading", steps=28)  # t = 946 on the rescaled table
    assert leading == pytest.approx(float(_diffusers_sigmas("leading", 28, True)[0]), rel=1e-4)
    assert 30 < leading < 50


def test_a_changed_clamp_is_caught():
    """The clamps are the front-ends' constants: changing one changes the first σ the tests pin."""
    assert FRONTENDS["comfyui"].alpha_bar_t == COMFYUI_ALPHA_BAR_T == 4.8973451890853435e-08
    assert FRONTENDS["diffusers-trailing"].alpha_bar_t == DIFFUSERS_ALPHA_BAR_T == 2.0 ** -24
    from dataclasses import replace

    import nai3train.diffusion.frontends as fe

    shifted = replace(FRONTENDS["comfyui"], alpha_bar_t=2.0 ** -24)
    table = fe.frontend_table(shifted, ztsnr=True)
    assert float(table[-1]) != pytest.approx(4518.76, abs=1.0)


def test_model_units_and_a_model_without_ztsnr():
    """A tiny model's table is scaled (dimension scale); a model trained without ZTSNR is sampled on
    the plain table by every front-end but NovelAI."""
    small = Schedule.sdxl(ztsnr=True, scale=0.25)
    assert torch.allclose(frontend_sigmas("comfyui", small, 28), frontend_sigmas("comfyui", Schedule.sdxl(ztsnr=True), 28) * 0.25)
    plain = Schedule.sdxl(ztsnr=False)
    for name in ("comfyui", "diffusers-trailing", "forge"):
        assert float(frontend_sigmas(name, plain, 28)[0]) == pytest.approx(14.6146, abs=1e-3)
    assert float(frontend_sigmas("nai", plain, 28)[0]) == 20000.0
    with pytest.raises(ValueError, match="comfyui"):
        frontend_sigmas("a1111", plain, 28)
