"""Samplers on the closed-form Gaussian: sampling from ∞ gives the data's mean distribution;
sampling from a finite start with pure noise leaks the noise mean by the closed-form factor —
the paper's mean-leak (C2/C3), shown with exact math before any training."""
import math

import numpy as np
import pytest
import torch

from nai3eval.metrics.mean_leak import within_group_slope
from nai3train.diffusion.samplers import GuidedDenoiser, ancestral_step, get_sampler, initial_state
from nai3train.diffusion import Denoiser, Schedule, dimension_scale, native_sigmas

from .gaussian import GaussianImages

DIM = 48
G = GaussianImages(dim=DIM, mu=-0.8, s_m=0.1, s_r=0.3)  # a "black" prompt: μ ≪ 0
N = 2000


def _denoiser(prediction="v"):
    sched = Schedule.sdxl(ztsnr=True, scale=dimension_scale(DIM))
    return Denoiser(G.ideal_network(prediction, sched), prediction, sched), sched


def _sample_from_infinity(sampler: str, steps: int):
    den, sched = _denoiser()
    sig = native_sigmas(sched, steps, math.inf)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    out = get_sampler(sampler)(lambda x, s: den(x, s, {}), initial_state(eps, float(sig[0])), sig, generator=gen)
    return eps, out.mean(1), [float(x) for x in sig]


def test_euler_from_infinity_matches_its_discrete_closed_form():
    """Along the mean direction each Euler step multiplies (a − √D·μ) by 1 + σ_n(σ_{n+1} − σ_n)/(v_a + σ_n²),
    and the exact first step from ∞ sets it to σ_1·(u·ε): the output std is known exactly."""
    eps, means, sig = _sample_from_infinity("euler", 28)
    g = 1.0
    for a, b in zip(sig[1:-1], sig[2:]):
        g *= 1 + a * (b - a) / (G.v_a + a * a)
    want_std = g * sig[1] / math.sqrt(DIM)
    assert float(means.std()) == pytest.approx(want_std, rel=0.04)
    assert float(means.mean()) == pytest.approx(G.mu, abs=4 * want_std / math.sqrt(N))


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_a"])
def test_sampling_from_infinity_matches_data_mean_distribution(sampler):
    """With enough steps every sampler's image mean follows N(μ, s_m² + s_r²/D): the prompt's
    brightness, whatever the noise (the Euler discretisation costs ≈ 3 % of the std at 200 steps)."""
    eps, means, _ = _sample_from_infinity(sampler, 200)
    want_std = math.sqrt(G.s_m**2 + G.s_r**2 / DIM)
    assert float(means.mean()) == pytest.approx(G.mu, abs=4 * want_std / math.sqrt(N))
    assert float(means.std()) == pytest.approx(want_std, rel=0.07)


@pytest.mark.parametrize("first", [14.6, 136.0, 20000.0])
def test_finite_start_leaks_noise_mean_by_closed_form(first):
    den, sched = _denoiser()
    sig = native_sigmas(sched, 28, first)
    s_t = float(sig[0])
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    out = get_sampler("euler")(lambda x, s: den(x, s, {}), initial_state(eps, s_t), sig)
    # along the mean direction the PF-ODE keeps (a − √D μ)/√(v_a + σ²) fixed, so from pure noise
    # the output image mean is μ(1 − k) + k·mean(x_T) with k = √(v_a / (v_a + σ_T²))
    # Euler's discrete version of the same map multiplies by Π(1 + σ_n(σ_{n+1} − σ_n)/(v_a + σ_n²)).
    k = math.sqrt(G.v_a / (G.v_a + s_t**2))
    sl = [float(x) for x in sig]
    g = math.prod(1 + a * (b - a) / (G.v_a + a * a) for a, b in zip(sl[:-1], sl[1:]))
    assert abs(g - k) < 0.05  # 28 Euler steps are close to the ODE
    start_mean = (eps * s_t).mean(1)
    slope, r = within_group_slope(start_mean.numpy(), out.mean(1).numpy(), np.zeros(N))
    assert slope == pytest.approx(g, rel=0.03, abs=0.005)
    assert float(out.mean()) == pytest.approx(G.mu * (1 - g), abs=0.02)
    if first == 14.6:  # SDXL's σ_max: the "black" prompt comes out much nearer mid-grey
        assert k > 0.8 and float(out.mean()) > G.mu / 2
    if first == 20000.0:  # the practical infinity: no leak left
        assert k < 0.01


def test_first_step_from_infinity_is_the_limit_of_large_sigma():
    den, sched = _denoiser()
    gen = torch.Generator().manual_seed(3)
    eps = torch.randn(4, DIM, generator=gen, dtype=torch.float64)
    nxt = float(sched.sigmas[900])
    exact = get_sampler("euler")(lambda x, s: den(x, s, {}), eps.clone(), torch.tensor([math.inf, nxt]))
    errors = []
    for t in (990, 995, 998):
        big = float(sched.sigmas[t])
        approx = get_sampler("euler")(lambda x, s: den(x, s, {}), eps * big, torch.tensor([big, nxt]))
        errors.append((float((exact - approx).abs().max()), big))
    # the finite-σ step converges to the exact limit like 1/σ: err·σ is the same constant at every σ.
    # σ grows ≈ 9× from t=990 to t=998, so an error that shrank more slowly (e.g. like 1/√σ, ratio ≈ 3)
    # or not at all (ratio ≈ 9) would move err·σ far outside the 10 % band.
    assert errors[-1][1] / errors[0][1] > 5
    assert errors[0][0] > errors[1][0] > errors[2][0]
    scaled = [err * big for err, big in errors]
    assert max(scaled) / min(scaled) < 1.1
    for err, big in errors:
        assert err < 2 * nxt / big * (abs(G.mu) + 4 * G.s_m) + 1e-3


def test_ancestral_step_limits():
    down, up = ancestral_step(math.inf, 2.0)
    assert (down, up) == (0.0, 2.0)
    down, up = ancestral_step(10.0, 2.0)
    assert down**2 + up**2 == pytest.approx(4.0)


def test_cfg_uses_one_batched_forward_and_the_guidance_formula():
    calls = []

    def den(x, sigma, cond):
        calls.append(x.shape[0])
        return x * 0 + cond["c"]

    cond, uncond = {"c": torch.full((2, 1), 3.0)}, {"c": torch.full((2, 1), 1.0)}
    out = GuidedDenoiser(den, cond, uncond, scale=5.0)(torch.zeros(2, 1), 1.0)
    assert calls == [4]
    np.testing.assert_allclose(out.numpy(), 1.0 + 5.0 * (3.0 - 1.0))


def test_cfg_rescale_restores_conditional_std():
    def den(x, sigma, cond):
        return cond["c"] * torch.linspace(-1, 1, x.shape[1]).expand_as(x)

    cond, uncond = {"c": torch.full((1, 1), 2.0)}, {"c": torch.full((1, 1), 1.0)}
    out = GuidedDenoiser(den, cond, uncond, scale=7.0, rescale=1.0)(torch.zeros(1, 9), 1.0)
    d_c = den(torch.zeros(1, 9), 1.0, cond)
    assert float(out.std()) == pytest.approx(float(d_c.std()), rel=1e-5)
