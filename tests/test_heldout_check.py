"""C8 from its sampling error: the cluster standard errors against their closed form, a correct
normalisation passing at the check's α over simulated splits whose images differ in brightness
(where the old fixed 0.05 failed correct code), and a wrong one failing."""
import numpy as np
import pytest
import torch

from nai3eval.claims import heldout
from nai3eval.claims.checks import HeldoutNormalised
from nai3eval.claims.estimands import Arms


def _images(rng, n: int, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(n, C=3, 8, 8) images whose channels share a per-image brightness (sd 0.8) plus pixel noise."""
    bright = rng.normal(0, 0.8, (n, 1, 1, 1))
    return offset + scale * (bright + rng.normal(0, 0.6, (n, 3, 8, 8)))


def _moments(x: np.ndarray) -> heldout.Moments:
    return heldout.moments(x.mean((2, 3)), (x * x).mean((2, 3)), np.full(len(x), 64))


def test_the_standard_errors_are_the_per_image_ones():
    rng = np.random.default_rng(0)
    x = _images(rng, 200)
    m = _moments(x)
    per = x.mean((2, 3))
    assert m.mean == pytest.approx(per.mean(0)) and m.images == 200
    assert m.se_mean == pytest.approx(per.std(0, ddof=1) / np.sqrt(200))  # equal pixel counts: the mean's SE
    assert m.std == pytest.approx(x.transpose(1, 0, 2, 3).reshape(3, -1).std(1))
    # the delta method's error of the pooled std against the spread of the std over resampled image sets
    boot = [_moments(x[rng.integers(0, 200, 200)]).std[0] for _ in range(400)]
    assert m.se_std[0] == pytest.approx(np.std(boot), rel=0.2)
    xs = torch.tensor(x[:5])
    got = heldout.per_image(iter(xs), lambda t: t)
    assert np.allclose(got[0], per[:5]) and list(got[2]) == [64] * 5


def _verdict(train: np.ndarray, held: np.ndarray, margin=None) -> bool:
    mu, sd = train.mean((0, 2, 3), keepdims=True), train.std((0, 2, 3), keepdims=True)
    t, h = (train - mu) / sd, (held - mu) / sd
    data = {"normalisation": {"heldout_mean_after": h.mean((0, 2, 3)).tolist(),
                              "heldout_std_after": h.transpose(1, 0, 2, 3).reshape(3, -1).std(1).tolist(),
                              "heldout_images": len(h), "heldout_moments": _moments(h).__dict__,
                              "train_moments": _moments(t).__dict__}}
    return HeldoutNormalised().run(margin, [Arms(5.0, None, None, None, data)])[0]


def test_a_correct_normalisation_passes_at_the_checks_alpha_and_a_wrong_one_fails():
    rng = np.random.default_rng(1)
    runs = [(_images(rng, 1024), _images(rng, n)) for n in (64, 128) for _ in range(300)]  # smoke's, paper's
    fixed = sum(not _verdict(t, h, margin=0.05) for t, h in runs)
    from_error = sum(not _verdict(t, h) for t, h in runs)
    assert fixed > 250  # the fixed tolerance fails correct code on most runs
    assert from_error <= 4  # α = 0.001 family-wise: 0.6 expected in 600
    with pytest.raises(Exception, match="needs ≥ 32"):  # too few images to trust the std's error
        _verdict(_images(rng, 1024), _images(rng, 16))
    # a held-out split that is not what the training statistics describe: caught
    shifted = sum(not _verdict(_images(rng, 1024), _images(rng, 64, offset=1.0)) for _ in range(50))
    stretched = sum(not _verdict(_images(rng, 1024), _images(rng, 64, scale=1.6)) for _ in range(50))
    assert shifted >= 45 and stretched >= 45
