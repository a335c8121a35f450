"""Preconditioning, the exact σ = ∞ limits, and the denoiser against the closed-form Gaussian."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nai3train.diffusion import Denoiser, Schedule, dimension_scale, noise_sample, training_target
from nai3train.diffusion.parameterization import c_in, c_out, c_skip

from .gaussian import GaussianImages

DIM = 48
G = GaussianImages(dim=DIM, mu=-0.7, s_m=0.15, s_r=0.4)


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_target_is_what_makes_d_exact(prediction):
    """D(x_σ) with F = target must return x0 exactly (the definition of the target)."""
    torch.manual_seed(0)
    x0, eps = torch.randn(5, DIM).double(), torch.randn(5, DIM).double()
    sigma = torch.tensor([0.03, 1.0, 14.6, 2254.0, math.inf], dtype=torch.float64)
    x = noise_sample(x0, eps, sigma)
    f = training_target(prediction, x0, eps, sigma)
    d = Denoiser(lambda *_: None, prediction, Schedule.sdxl(ztsnr=True)).combine(x, sigma, f)
    if prediction == "eps":  # at ∞ the ε parameterisation cannot recover x0: ∞·(ε − ε) = NaN
        np.testing.assert_allclose(d[:4].numpy(), x0[:4].numpy(), rtol=1e-6, atol=1e-6)
        assert not torch.isfinite(d[4]).all()
    else:
        np.testing.assert_allclose(d.numpy(), x0.numpy(), rtol=1e-9, atol=1e-9)


def test_preconditioning_matches_paper_formulas():
    s = torch.tensor([0.5, 3.0], dtype=torch.float64)
    np.testing.assert_allclose(c_skip("v", s).numpy(), (1 / (s**2 + 1)).numpy())
    np.testing.assert_allclose(c_out("v", s).numpy(), (-s / (s**2 + 1).sqrt()).numpy())
    np.testing.assert_allclose(c_in(s).numpy(), (1 / (s**2 + 1).sqrt()).numpy())
    np.testing.assert_allclose(c_out("eps", s).numpy(), (-s).numpy())
    inf = torch.tensor([math.inf], dtype=torch.float64)
    assert float(c_skip("v", inf)) == 0 and float(c_out("v", inf)) == -1 and float(c_in(inf)) == 1


@pytest.mark.parametrize("sigma_sdxl", [0.03, 1.0, 14.6, 2254.0, math.inf])
def test_v_denoiser_recovers_ideal_posterior_mean(sigma_sdxl):
    sched = Schedule.sdxl(ztsnr=True, scale=dimension_scale(DIM))
    sigma = sched.to_model(sigma_sdxl)
    if math.isfinite(sigma_sdxl):  # use a table σ so the test network can read σ back from t exactly
        t = int(torch.argmin((sched.sdxl_sigmas[:999] - sigma_sdxl).abs()))
        sigma = float(sched.sigmas[t])
    gen = torch.Generator().manual_seed(1)
    x0 = G.sample(8, gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x = noise_sample(x0, eps, torch.full((8,), sigma, dtype=torch.float64))
    d = Denoiser(G.ideal_network("v", sched), "v", sched)(x, sigma, {})
    want = G.ideal_x0(x, sigma)
    assert torch.isfinite(d).all()
    np.testing.assert_allclose(d.numpy(), want.numpy(), rtol=1e-6, atol=1e-8)


def test_eps_at_infinity_returns_the_blow_up_not_an_exception():
    sched = Schedule.sdxl(ztsnr=True)
    net = lambda x, t, c: x + 1e-3  # noqa: E731  an ε-network that is slightly wrong
    d = Denoiser(net, "eps", sched)(torch.randn(2, 4), math.inf, {})
    assert torch.isinf(d).all()
    d20k = Denoiser(net, "eps", sched)(torch.randn(2, 4) * 20000, 20000.0, {})
    assert d20k.abs().min() > 10  # σ·δ = 20000·1e-3: the error is amplified, as the paper predicts


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(0, 1e12, allow_nan=False), st.just(math.inf)),
       st.sampled_from(["v", "x0"]))
def test_v_and_x0_targets_and_denoiser_finite_on_whole_range(sigma, prediction):
    s = torch.tensor([sigma], dtype=torch.float64)
    x0, eps = torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    assert torch.isfinite(training_target(prediction, x0, eps, s)).all()
    x = noise_sample(x0, eps, s)
    d = Denoiser(lambda xi, t, c: xi, prediction, Schedule.sdxl(ztsnr=True))(x, s, {})
    assert torch.isfinite(d).all()
