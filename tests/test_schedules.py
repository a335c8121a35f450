"""Schedules against diffusers' schedulers and the paper's quoted σ values."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale

from nai3train.diffusion import Schedule, dimension_scale, karras_sigmas, native_sigmas
from nai3train.diffusion.schedules import alphas_cumprod, rescale_zero_terminal_snr, sdxl_betas


def test_sdxl_table_matches_diffusers_euler():
    sch = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule="scaled_linear")
    # betas to float32 precision (diffusers builds them in float32)
    np.testing.assert_allclose(sdxl_betas().numpy(), sch.betas.double().numpy(), rtol=1e-6)
    ref = ((1 - sch.alphas_cumprod.double()) / sch.alphas_cumprod.double()).sqrt()
    ours = Schedule.sdxl().sdxl_sigmas
    # diffusers' float32 cumprod over 1000 factors drifts by ~1e-5 relative; ours is float64
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=5e-5)
    # and diffusers' own sigma list for a 1000-step inference schedule (descending, then 0)
    sch.set_timesteps(1000)
    np.testing.assert_allclose(ours.flip(0).numpy(), sch.sigmas[:-1].double().numpy(), rtol=5e-5)


def test_ztsnr_alphas_match_diffusers():
    betas = sdxl_betas()
    ref_betas = diffusers_rescale(betas.clone().float()).double()
    ref_ab = torch.cumprod(1 - ref_betas, 0)
    ours = rescale_zero_terminal_snr(alphas_cumprod(betas))
    np.testing.assert_allclose(ours.numpy(), ref_ab.numpy(), atol=2e-6)
    assert ours[-1] == 0


def test_ztsnr_sigmas_quoted_in_paper():
    s = Schedule.sdxl(ztsnr=True).sdxl_sigmas
    assert math.isinf(s[999])
    for t, want in [(998, 2254), (992, 317.7), (983, 136.2), (962, 56.18), (932, 29.04), (880, 14.64), (0, 0.0292)]:
        assert float(s[t]) == pytest.approx(want, rel=2e-3), t


def test_native_28_steps_from_20000():
    sig = native_sigmas(Schedule.sdxl(ztsnr=True), 28, 20000.0)
    head = [20000, 56.18, 25.90, 15.96, 11.09, 8.25, 6.40]
    np.testing.assert_allclose(sig[:7].numpy(), head, atol=0.01)
    assert float(sig[-2]) == pytest.approx(0.0292, abs=0.01)
    assert float(sig[-1]) == 0.0 and len(sig) == 29


def test_native_from_infinity_keeps_infinity():
    sig = native_sigmas(Schedule.sdxl(ztsnr=True), 10, math.inf)
    assert math.isinf(sig[0]) and torch.isfinite(sig[1:]).all()


def test_t_sigma_round_trip_and_infinity():
    s = Schedule.sdxl(ztsnr=True)
    t = torch.linspace(0, 998, 57, dtype=torch.float64)
    np.testing.assert_allclose(s.sigma_to_t(s.t_to_sigma(t)).numpy(), t.numpy(), atol=1e-6)
    assert float(s.sigma_to_t(math.inf)) == 999.0
    assert math.isinf(float(s.t_to_sigma(999.0)))
    # integer t hits the table exactly
    np.testing.assert_allclose(s.t_to_sigma(torch.arange(999.0)).numpy(), s.sigmas[:999].numpy(), rtol=1e-12)


def test_dimension_scale_applied_once():
    k = dimension_scale(3 * 16 * 16)
    assert k == pytest.approx(math.sqrt(768 / 65536))
    plain, scaled = Schedule.sdxl(ztsnr=True), Schedule.sdxl(ztsnr=True, scale=k)
    np.testing.assert_allclose(scaled.sigmas[:999].numpy(), (plain.sigmas[:999] * k).numpy(), rtol=1e-12)
    # same t for the same SDXL-unit sigma: the scale does not leak into the timestep
    np.testing.assert_allclose(scaled.sigma_to_t(scaled.to_model(136.2)).numpy(), plain.sigma_to_t(136.2).numpy())
    # sampling lists are in model units: SDXL-unit σ times k
    np.testing.assert_allclose(native_sigmas(scaled, 28, 20000).numpy(), (native_sigmas(plain, 28, 20000) * k).numpy(),
                               rtol=1e-9)


def test_sigma_max_clamp():
    s = Schedule.sdxl(ztsnr=True, sigma_max=20000)
    assert float(s.sdxl_sigmas[-1]) == 20000
    with pytest.raises(ValueError):
        Schedule.sdxl(ztsnr=True, sigma_max=100)


def test_karras_matches_formula_and_diffusers():
    s = Schedule.sdxl()
    ours = karras_sigmas(s, 10, s.sigma_max)
    sch = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 use_karras_sigmas=True)
    sch.set_timesteps(10)
    np.testing.assert_allclose(ours.numpy(), sch.sigmas.double().numpy(), rtol=1e-4)


def test_v_target_vs_ddpm_get_velocity():
    from nai3train.diffusion import training_target

    sch = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.manual_seed(0)
    x0, eps = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    ref = sch.get_velocity(x0, eps, t)
    sigma = Schedule.sdxl().sigmas[t]
    ours = training_target("v", x0, eps, sigma)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5)
