"""Metrics against independent computations."""
import numpy as np
import pytest
import torch
from scipy import linalg

from nai3eval.metrics import brightness, frechet_distance, mean_leak, to_unit, within_group_slope
from nai3eval.tagger import Tagger, TaggerFeatures


def _fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def test_fd_equals_scipy_on_the_same_features():
    torch.manual_seed(0)
    tagger = Tagger(num_tags=5, resolution=8, feature_dim=6).eval()
    real = torch.rand(80, 3, 8, 8) * 2 - 1
    fake = (torch.rand(70, 3, 8, 8) * 2 - 1) * 0.7 + 0.2
    feats = TaggerFeatures(tagger)
    a = feats(to_unit(real)).double().numpy()
    b = feats(to_unit(fake)).double().numpy()
    assert frechet_distance(tagger, real, fake) == pytest.approx(_fd_scipy(a, b), rel=1e-4)


def test_mean_leak_slope_one_for_copier_zero_for_ignorer():
    gen = torch.Generator().manual_seed(0)
    n, prompts = 200, torch.arange(20).repeat_interleave(10)
    prompt_bright = torch.randn(20, generator=gen)[prompts]
    start = torch.randn(n, generator=gen) * 0.3
    copier = (prompt_bright + start).reshape(n, 1, 1, 1).expand(n, 3, 4, 4)
    ignorer = (prompt_bright + 0.05 * torch.randn(n, generator=gen)).reshape(n, 1, 1, 1).expand(n, 3, 4, 4)
    assert mean_leak(copier, start, prompts)["mean_leak_slope"] == pytest.approx(1.0, abs=1e-5)
    assert abs(mean_leak(ignorer, start, prompts)["mean_leak_slope"]) < 0.1


def test_within_group_slope_matches_numpy_lstsq_with_fixed_effects():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(5), 8)
    x = rng.normal(size=40)
    y = 0.7 * x + g * 3.0 + rng.normal(scale=0.1, size=40)
    design = np.column_stack([x, (g[:, None] == np.arange(5)).astype(float)])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    assert within_group_slope(x, y, g)[0] == pytest.approx(coef[0], rel=1e-10)


def test_brightness_error():
    imgs = torch.cat([torch.full((2, 3, 4, 4), -1.0), torch.full((2, 3, 4, 4), 0.0)])
    prompts = [["black_background"]] * 2 + [["white_background"]] * 2
    real = torch.cat([torch.full((1, 3, 4, 4), -1.0), torch.full((1, 3, 4, 4), 1.0)])
    out = brightness(imgs, prompts, real, [["black_background"], ["white_background"]])
    assert out["brightness_black"] == 0.0 and out["brightness_err_black"] == 0.0
    assert out["brightness_white"] == 0.5 and out["brightness_err_white"] == 0.5
