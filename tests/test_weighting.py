"""Min-SNR-γ weights: the standard formulas where SNR > 0, finite everywhere, documented at SNR = 0."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from hypothesis import given, settings
from hypothesis import strategies as st

from nai3train.diffusion import Schedule, min_snr_weight, snr


def test_snr_from_our_table_matches_diffusers_compute_snr():
    sch = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    t = torch.tensor([0, 1, 100, 500, 998, 999])
    np.testing.assert_allclose(snr(Schedule.sdxl().sigmas[t]).numpy(), compute_snr(sch, t).double().numpy(), rtol=1e-4)


@pytest.mark.parametrize("prediction,formula", [
    ("eps", lambda s, g: np.minimum(s, g) / s),
    ("v", lambda s, g: np.minimum(s, g) / (s + 1)),
    ("x0", lambda s, g: np.minimum(s, g)),
])
def test_standard_formulas_where_snr_positive(prediction, formula):
    sigma = Schedule.sdxl(ztsnr=True).sigmas[:999]  # every finite σ of the ZTSNR table
    s = (1 / sigma**2).numpy()
    np.testing.assert_allclose(min_snr_weight(prediction, sigma, 5.0).numpy(), formula(s, 5.0), rtol=1e-10)


def test_weights_at_infinity_are_the_documented_choices():
    inf = torch.tensor([math.inf])
    assert float(min_snr_weight("eps", inf, 5.0)) == 1.0  # the limit of min(SNR,γ)/SNR, not 0/0
    assert float(min_snr_weight("v", inf, 5.0)) == 1.0  # our non-zero choice: an x0 regression
    assert float(min_snr_weight("v", inf, 5.0, v_weight_at_infinity=0.3)) == 0.3
    assert float(min_snr_weight("x0", inf, 5.0)) == 0.0


def test_no_gamma_means_uniform():
    s = torch.tensor([0.1, 10.0, math.inf])
    assert torch.equal(min_snr_weight("v", s, None), torch.ones(3, dtype=torch.float64))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(0, 1e300, allow_nan=False), st.just(math.inf)), st.sampled_from(["eps", "v", "x0"]),
       st.floats(0.1, 20))
def test_finite_everywhere(sigma, prediction, gamma):
    w = min_snr_weight(prediction, torch.tensor([sigma], dtype=torch.float64), gamma)
    assert torch.isfinite(w).all() and (w >= 0).all()
