"""Preconditioning, the exact σ = ∞ limits, and the denoiser against the closed-form Gaussian."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nai3train.diffusion import Denoiser, Schedule, dimension_scale, noise_sample, training_target

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


class _RecordingNetwork:
    """F that returns a fixed tensor and remembers what the Denoiser fed it."""

    def __init__(self, out: torch.Tensor):
        self.out = out
        self.x_in: torch.Tensor | None = None
        self.c_noise: torch.Tensor | None = None

    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
        self.x_in, self.c_noise = x_in.clone(), torch.as_tensor(c_noise).clone()
        return self.out


def _paper_denoiser(prediction: str, x: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor, sd: float):
    """(expected network input, expected D) from docs/diffusion.md, "Parameterisations", written out here, not from the module."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    x_in = x / (s**2 + sd**2).sqrt()
    if prediction == "v":
        d = sd**2 / (s**2 + sd**2) * x - s * sd / (s**2 + sd**2).sqrt() * f
    elif prediction == "eps":
        d = x - s * f
    else:
        d = f
    return x_in, d


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_denoiser_matches_paper_formulas(prediction, sigma_data):
    """D's observable behaviour (what F receives, what D returns) against the paper's formulas."""
    gen = torch.Generator().manual_seed(0)
    sched = Schedule.sdxl(ztsnr=True)
    sigma = torch.tensor([0.03, 0.7, 3.0, 14.6, 2254.0], dtype=torch.float64)
    x = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64) * (1 + sigma).reshape(-1, 1, 1, 1)
    f = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64)
    net = _RecordingNetwork(f)
    d = Denoiser(net, prediction, sched, sigma_data=sigma_data)(x, sigma, {})
    want_in, want_d = _paper_denoiser(prediction, x, sigma, f, sigma_data)
    np.testing.assert_allclose(net.x_in.numpy(), want_in.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d.numpy(), want_d.numpy(), rtol=1e-12, atol=1e-12)
    # a scalar σ is broadcast over the batch
    d1 = Denoiser(net, prediction, sched, sigma_data=sigma_data)(x, 3.0, {})
    want_in1, want_d1 = _paper_denoiser(prediction, x, torch.full((5,), 3.0, dtype=torch.float64), f, sigma_data)
    np.testing.assert_allclose(net.x_in.numpy(), want_in1.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d1.numpy(), want_d1.numpy(), rtol=1e-12, atol=1e-12)


def test_denoiser_c_noise_is_the_sdxl_timestep_of_sigma():
    """At the table's own σ_t the network is told t (integer timesteps read back exactly)."""
    sched = Schedule.sdxl(ztsnr=False)
    ts = torch.tensor([0, 1, 250, 500, 998, 999])
    net = _RecordingNetwork(torch.zeros(len(ts), 2, dtype=torch.float64))
    Denoiser(net, "v", sched)(torch.ones(len(ts), 2, dtype=torch.float64), sched.sigmas[ts], {})
    np.testing.assert_allclose(net.c_noise.numpy(), ts.double().numpy(), atol=1e-9)


@pytest.mark.parametrize("prediction", ["v", "x0", "eps"])
def test_denoiser_at_infinity_is_the_limit_of_the_paper_formulas(prediction):
    """With the state holding ε at σ = ∞, D and F's input equal the paper formula's large-σ limit
    (evaluated on x_σ = x0 + σ·ε at σ = 1e9): v → −σ_d·F, x0 → F, F's input → ε; ε blows up."""
    gen = torch.Generator().manual_seed(2)
    eps = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    f = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    net = _RecordingNetwork(f)
    d = Denoiser(net, prediction, Schedule.sdxl(ztsnr=True), sigma_data=0.5)(eps, math.inf, {})
    big = torch.full((3,), 1e9, dtype=torch.float64)
    want_in, want_d = _paper_denoiser(prediction, x0 + 1e9 * eps, big, f, 0.5)
    np.testing.assert_allclose(net.x_in.numpy(), want_in.numpy(), rtol=1e-6, atol=1e-8)
    assert float(net.c_noise.min()) == 999
    if prediction == "eps":
        assert not torch.isfinite(d).any()  # σ·(ε − F) with ε ≠ F: ±∞
    else:
        np.testing.assert_allclose(d.numpy(), want_d.numpy(), rtol=1e-6, atol=1e-8)


def _diffusers_euler(prediction_type: str, steps: int = 10):
    from diffusers import EulerDiscreteScheduler

    sch = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule="scaled_linear", prediction_type=prediction_type,
                                 timestep_spacing="trailing")  # integer t: σ = the table's σ_t exactly
    sch.set_timesteps(steps)
    return sch


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("prediction,diffusers_type", [("v", "v_prediction"), ("eps", "epsilon")])
def test_denoiser_matches_diffusers_euler_discrete(prediction, diffusers_type):
    """Same σ, same x, same network output: nai3's F input equals diffusers' scale_model_input and
    nai3's D equals diffusers' pred_original_sample (diffusers computes in float32 → rtol 1e-5)."""
    ref = _diffusers_euler(diffusers_type)
    sched = Schedule.sdxl(ztsnr=False)
    ts = ref.timesteps.long()
    assert [int(t) for t in ts] == list(range(999, 0, -100))
    # diffusers' own σ table (float32) is nai3's plain SDXL table
    np.testing.assert_allclose(ref.sigmas[:-1].double().numpy(), sched.sdxl_sigmas[ts].numpy(), rtol=1e-5)
    gen = torch.Generator().manual_seed(4)
    for i, t in enumerate(ref.timesteps):
        sch = _diffusers_euler(diffusers_type)  # fresh: step() advances the scheduler's index
        sigma = float(sch.sigmas[i])
        x = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64) * math.sqrt(sigma**2 + 1)
        f = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
        net = _RecordingNetwork(f)
        d = Denoiser(net, prediction, sched)(x, sigma, {})
        want_in = sch.scale_model_input(x, t)
        want_d = sch.step(f, t, x).pred_original_sample.double()
        np.testing.assert_allclose(net.x_in.numpy(), want_in.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(d.numpy(), want_d.numpy(), rtol=1e-5, atol=1e-5 * (1 + sigma))
        assert float(net.c_noise[0]) == pytest.approx(float(t), abs=1e-3)  # the UNet sees diffusers' timestep


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_v_target_matches_diffusers_get_velocity():
    """training_target('v') at σ_t equals diffusers' v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 at timestep t."""
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule="scaled_linear", prediction_type="v_prediction")
    sched = Schedule.sdxl(ztsnr=False)
    gen = torch.Generator().manual_seed(5)
    ts = torch.tensor([0, 10, 300, 700, 999])
    x0 = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    v = training_target("v", x0, eps, sched.sigmas[ts])
    want = ref.get_velocity(x0, eps, ts)
    np.testing.assert_allclose(v.numpy(), want.double().numpy(), rtol=1e-5, atol=1e-6)


def _paper_v_network(sched: Schedule):
    """The v-network that makes D the ideal Gaussian denoiser, inverted with the paper's v
    coefficients written here (σ_d = 1), so a wrong coefficient in the module cannot cancel out."""

    def net(x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
        s = sched.t_to_sigma(c_noise.double()).reshape(-1, 1)
        inf = torch.isinf(s)
        s_f = torch.where(inf, torch.ones_like(s), s)
        x = torch.where(inf, x_in, x_in * (s_f**2 + 1).sqrt())  # the state: x_σ, or ε at σ = ∞
        ex0 = G.ideal_x0(x, s.reshape(-1))
        f = (ex0 - x / (s_f**2 + 1)) / (-s_f / (s_f**2 + 1).sqrt())
        return torch.where(inf, -ex0, f)  # D = −F at ∞

    return net


@pytest.mark.parametrize("sigma_sdxl", [0.03, 1.0, 14.6, 2254.0, math.inf])
def test_v_denoiser_recovers_ideal_posterior_mean(sigma_sdxl):
    """F from the paper-formula inversion above → D must be E[x0 | x_σ] (closed form), σ = ∞ included."""
    sched = Schedule.sdxl(ztsnr=True, scale=dimension_scale(DIM))
    sigma = sched.to_model(sigma_sdxl)
    if math.isfinite(sigma_sdxl):  # use a table σ so the test network can read σ back from t exactly
        t = int(torch.argmin((sched.sdxl_sigmas[:999] - sigma_sdxl).abs()))
        sigma = float(sched.sigmas[t])
    gen = torch.Generator().manual_seed(1)
    x0 = G.sample(8, gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x = noise_sample(x0, eps, torch.full((8,), sigma, dtype=torch.float64))
    d = Denoiser(_paper_v_network(sched), "v", sched)(x, sigma, {})
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
