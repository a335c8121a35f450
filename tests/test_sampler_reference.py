"""The samplers pinned step by step to references that share no code with them.

* DPM++ 2M (second order, multistep) against diffusers' ``DPMSolverMultistepScheduler``
  (``algorithm_type="dpmsolver++"``, order 2, midpoint), which integrates in the VP
  parameterisation x_vp = x_ve/√(σ²+1) with its own σ table; and against Lu et al. (2022)
  DPM-Solver++(2M), Algorithm 2, written out below in VP (α_t, σ_t, λ_t) form in float64.
* Euler against diffusers' ``EulerDiscreteScheduler`` on the same σ list.
* Both against the exact probability-flow ODE solution of the closed-form Gaussian: the observed
  convergence order must be 2 for DPM++ 2M and 1 for Euler.

diffusers keeps σ and the state in float32, so comparisons with it use a float32 tolerance; each
test also checks that a first-order update differs from the second-order one by far more than that
tolerance, so a solver that silently fell back to first order would fail.
"""
import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

from nai3train.diffusion import Schedule
from nai3train.diffusion.samplers import get_sampler

from .gaussian import GaussianImages

# diffusers builds its σ table with np.array(torch tensor), which numpy 2 flags; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
DIM = 16
G = GaussianImages(dim=DIM, mu=-0.7, s_m=0.15, s_r=0.4)
SDXL_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# integer SDXL timesteps, unevenly spaced in log σ so the multistep ratio r = h_last/h is never 1
TIMESTEPS = [999, 750, 500, 300, 120, 40]
F32_TOL = 2e-6  # relative to the state's scale: diffusers computes in float32 (observed ≤ 2e-7)


def _denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Deterministic, nonlinear in σ: the closed-form ideal denoiser E[x0 | x_σ] of the Gaussian."""
    return G.ideal_x0(x, sigma)


def _x_T(sigma_max: float, n: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    return sigma_max * torch.randn(n, DIM, generator=gen, dtype=torch.float64)


def _nai3_trajectory(sampler: str, x_T: torch.Tensor, sigmas: list[float]) -> list[torch.Tensor]:
    """State after each step (a prefix of the σ list gives the state after that many steps)."""
    fn = get_sampler(sampler)
    return [fn(_denoise, x_T.clone(), torch.tensor(sigmas[: k + 1], dtype=torch.float64))
            for k in range(1, len(sigmas))]


def _diffusers_dpmpp(solver_order: int = 2) -> DPMSolverMultistepScheduler:
    sch = DPMSolverMultistepScheduler(**SDXL_BETAS, algorithm_type="dpmsolver++", solver_order=solver_order,
                                      solver_type="midpoint", prediction_type="sample",  # model output = x̂0
                                      lower_order_final=False, euler_at_final=False,
                                      final_sigmas_type="sigma_min")  # ends at σ_0 > 0: no special last step
    sch.set_timesteps(timesteps=TIMESTEPS)
    return sch


def _diffusers_dpmpp_trajectory(x_T: torch.Tensor, solver_order: int = 2):
    sch = _diffusers_dpmpp(solver_order)
    sig = [float(s) for s in sch.sigmas]
    sample = x_T / math.sqrt(sig[0] ** 2 + 1)  # VE → VP
    states = []
    for i, t in enumerate(sch.timesteps):
        d = _denoise(sample * math.sqrt(sig[i] ** 2 + 1), sig[i])  # the model sees the VE state
        sample = sch.step(d, t, sample).prev_sample
        states.append(sample.double() * math.sqrt(sig[i + 1] ** 2 + 1))  # VP → VE
    return sig, states


def test_diffusers_sigma_list_is_nai3_sdxl_table():
    sch = _diffusers_dpmpp()
    table = Schedule.sdxl(ztsnr=False).sdxl_sigmas
    assert [int(t) for t in sch.timesteps] == TIMESTEPS
    want = table[TIMESTEPS + [0]]  # the scheduler appends σ_min = σ_0
    # float32 ᾱ: σ_0 = √β_0 (≈ 0.029) loses ~1e-5 to the cancellation in 1 − ᾱ_0
    np.testing.assert_allclose(sch.sigmas.double().numpy(), want.numpy(), rtol=1e-4)


def test_dpmpp_2m_matches_diffusers_dpmsolver_plus_plus_2m():
    sig = [float(s) for s in _diffusers_dpmpp().sigmas]  # diffusers' own σ list, float32 values
    x_T = _x_T(sig[0])
    sig_ref, ref = _diffusers_dpmpp_trajectory(x_T)
    assert sig_ref == sig
    ours = _nai3_trajectory("dpmpp_2m", x_T, sig)
    _, first_order = _diffusers_dpmpp_trajectory(x_T, solver_order=1)
    assert len(ours) == len(ref) == len(TIMESTEPS)
    for k, (a, b, b1) in enumerate(zip(ours, ref, first_order)):
        scale = float(b.abs().max())
        assert float((a - b).abs().max()) < F32_TOL * scale, f"step {k}"
        if k >= 1:  # from the second step on the multistep correction is on and clearly visible
            assert float((b - b1).abs().max()) > 100 * F32_TOL * scale, f"step {k}"


def _lu_dpmpp_2m(x_T: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Lu et al. 2022, DPM-Solver++(2M) (Algorithm 2) in the VP form x̃ = α_t·x0 + σ_t·ε, with
    α_t = 1/√(1+σ²), σ_t = σ/√(1+σ²), λ_t = log(α_t/σ_t), data prediction x_θ; float64."""
    def alpha(s): return 1 / math.sqrt(1 + s * s)
    def sig_t(s): return s / math.sqrt(1 + s * s)
    def lam(s): return math.log(alpha(s) / sig_t(s))

    x = x_T * alpha(sigmas[0])
    prev = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _denoise(x / alpha(s), s)
        h = lam(s_next) - lam(s)
        if prev is None:
            d = x0
        else:
            r = (lam(s) - lam(sigmas[i - 1])) / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev
        x = sig_t(s_next) / sig_t(s) * x - alpha(s_next) * (math.exp(-h) - 1) * d
        prev = x0
    return x / alpha(sigmas[-1])


def test_dpmpp_2m_matches_lu_et_al_formula_in_float64():
    table = Schedule.sdxl(ztsnr=False).sdxl_sigmas
    sig = [float(table[t]) for t in TIMESTEPS + [0]]
    x_T = _x_T(sig[0])
    ours = _nai3_trajectory("dpmpp_2m", x_T, sig)
    euler = _nai3_trajectory("euler", x_T, sig)
    for k in range(len(ours)):
        want = _lu_dpmpp_2m(x_T, sig[: k + 2])
        scale = float(want.abs().max())
        assert float((ours[k] - want).abs().max()) < 1e-10 * scale, f"step {k}"
    # the second-order result is far from a first-order one (Euler), so the pin above is not vacuous
    assert float((ours[-1] - euler[-1]).abs().max()) > 1e6 * 1e-10 * float(ours[-1].abs().max())


def _diffusers_euler_trajectory(x_T: torch.Tensor):
    sch = EulerDiscreteScheduler(**SDXL_BETAS, prediction_type="sample", final_sigmas_type="zero")
    sch.set_timesteps(timesteps=TIMESTEPS)
    sig = [float(s) for s in sch.sigmas]
    sample, states = x_T.clone(), []
    for i, t in enumerate(sch.timesteps):
        sch.scale_model_input(sample, t)  # only marks the input as scaled; our D takes the VE state
        sample = sch.step(_denoise(sample, sig[i]), t, sample).prev_sample.double()
        states.append(sample)
    return sig, states


def test_euler_matches_diffusers_euler_discrete():
    x_T = _x_T(float(Schedule.sdxl(ztsnr=False).sdxl_sigmas[-1]))
    sig, ref = _diffusers_euler_trajectory(x_T)
    assert sig[-1] == 0.0 and len(sig) == len(TIMESTEPS) + 1
    ours = _nai3_trajectory("euler", x_T, sig)
    dpm = _nai3_trajectory("dpmpp_2m", x_T, sig)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert float((a - b).abs().max()) < F32_TOL * float(b.abs().max()), f"step {k}"
    k = len(TIMESTEPS) - 2  # the last step to σ > 0: Euler and DPM++ 2M differ there by ≫ the tolerance
    assert float((ours[k] - dpm[k]).abs().max()) > 100 * F32_TOL * float(ours[k].abs().max())


def _exact_ode_solution(x: torch.Tensor, s0: float, s1: float) -> torch.Tensor:
    """The Gaussian's probability-flow ODE dx/dσ = (x − D)/σ, solved exactly: along the mean
    direction (mean(x) − μ)/√(v_a/D + σ²/D) is conserved, orthogonal to it x_⊥/√(s_r² + σ²)."""
    m = x.mean(1, keepdim=True)
    along = (m - G.mu) * math.sqrt((G.v_a + s1**2) / (G.v_a + s0**2)) + G.mu
    perp = (x - m) * math.sqrt((G.s_r**2 + s1**2) / (G.s_r**2 + s0**2))
    return along + perp


@pytest.mark.parametrize("sampler,order", [("dpmpp_2m", 2.0), ("euler", 1.0)])
def test_global_convergence_order_against_exact_ode_solution(sampler, order):
    s_hi, s_lo = 14.6, 0.1
    x_T = _x_T(s_hi)
    exact = _exact_ode_solution(x_T, s_hi, s_lo)
    errs = []
    for n in (32, 64, 128):  # fewer steps are still pre-asymptotic for DPM++ 2M down to σ = 0.1
        sig = torch.exp(torch.linspace(math.log(s_hi), math.log(s_lo), n + 1, dtype=torch.float64))
        out = get_sampler(sampler)(_denoise, x_T.clone(), sig)
        errs.append(float((out - exact).abs().max()))
    observed = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(p - order) < 0.15 for p in observed), observed
