"""Disturbance tests of a set-level instrument: the machinery passes an instrument that sees noise
and blur, and fails one that is blind to blur or that ranks noise best — on benchmark images."""
import math

import pytest
import torch

from nai3eval.disturbance import Disturbance, Row, disturbance, gaussian_blur
from nai3eval.metrics.tagger import ScaledDistances
from nai3train.data import load_folder, synthesize


@pytest.fixture(scope="module")
def bench_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    synthesize(root, 8, 96, 16, seed=3)
    return load_folder(root / "eval", 16).images


def _features(images: torch.Tensor, with_edges: bool = True) -> torch.Tensor:
    """Per channel its mean, and (``with_edges``) its std and mean absolute neighbour difference —
    what blur removes. Channel means alone are blind to blur (a blur keeps them)."""
    x = images.float()
    cols = [x.mean((2, 3))]
    if with_edges:
        cols += [x.std((2, 3)), (x[..., 1:] - x[..., :-1]).abs().mean((2, 3))]
    return torch.cat(cols, 1)


def _distance(with_edges: bool):
    def make(reference: torch.Tensor):
        ref = ScaledDistances(_features(reference, with_edges), kid_subsets=20, seed=0)
        return lambda images: ref(_features(images, with_edges))
    return make


def test_blur_is_a_normalised_gaussian_and_keeps_the_size():
    x = torch.zeros(1, 3, 9, 9)
    x[..., 4, 4] = 1.0
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert y[0, 0, 4, 4] == pytest.approx(1 / (2 * math.pi), rel=0.05)  # the 2-D Gaussian's peak at σ = 1
    flat = torch.full((2, 3, 5, 5), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)


def test_an_instrument_that_sees_noise_and_blur_passes(bench_images):
    d = disturbance("edges", bench_images, _distance(True))
    assert d.passed, d.table()
    assert d.summary()["passed"] is True and d.split_covers_zero and d.monotone("noise") and d.monotone("blur")


def test_an_instrument_blind_to_blur_fails_and_says_why(bench_images):
    d = disturbance("no edges", bench_images, _distance(False))
    assert not d.passed and "blur is not monotone" in d.failures, d.table()


def test_an_instrument_that_ranks_noise_best_fails():
    """The defect this test exists for: pure noise measuring less than a mild corruption."""
    rows = [Row("split", 0, 1.0, 0.0, 0.1)] + [Row(k, s, 2.0 + s, 0.1 + s, 0.1) for k in ("noise", "blur")
                                                for s in (1.0, 2.0, 3.0)] + [Row("pure noise", 1, 1.5, 0.05, 0.1)]
    d = Disturbance("inverted", rows)
    assert d.failures == ["pure noise does not measure the most"]
    d.rows[0] = Row("split", 0, 1.0, 0.5, 0.1)  # a second split far from 0
    assert "the split's KID interval excludes 0" in d.failures
