"""Metrics against independent computations."""
import numpy as np
import pytest
import torch
from scipy import linalg

from nai3eval.metrics import Samples
from nai3eval.metrics.brightness import Brightness
from nai3eval.metrics.mean_leak import MeanLeak, within_group_slope
from nai3eval.metrics.tagger import FeatureDistances
from nai3eval.pixels import image_brightness
from nai3eval.prompts import PromptSet
from tests.toys import measure


def _fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))




def _samples(images: torch.Tensor, start: torch.Tensor, prompts: list[list[str]], index: torch.Tensor) -> Samples:
    return Samples(images, start, PromptSet(prompts, index, torch.zeros(len(index), 1)))


def test_streaming_fd_equals_scipy_point_after_point():
    """One FID object for the whole sweep: the reference statistics survive each point's reset."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(80, 6))
    dist = FeatureDistances(torch.from_numpy(real))
    for shift in (0.0, 0.7, 2.0):
        fake = rng.normal(size=(70, 6)) * 0.8 + shift
        assert dist.frechet(torch.from_numpy(fake)) == pytest.approx(_fd_scipy(real, fake), rel=1e-6)


def test_mean_leak_slope_one_for_copier_zero_for_ignorer():
    gen = torch.Generator().manual_seed(0)
    n, prompts = 200, torch.arange(20).repeat_interleave(10)
    prompt_bright = torch.randn(20, generator=gen)[prompts]
    start = torch.randn(n, generator=gen) * 0.3
    copier = (prompt_bright + start).reshape(n, 1, 1, 1).expand(n, 3, 4, 4)
    ignorer = (prompt_bright + 0.05 * torch.randn(n, generator=gen)).reshape(n, 1, 1, 1).expand(n, 3, 4, 4)
    names = [[f"p{i}"] for i in range(20)]
    r1 = measure(MeanLeak(), _samples(copier, start, names, prompts))
    r2 = measure(MeanLeak(), _samples(ignorer, start, names, prompts))
    assert r1["mean_leak_slope"] == pytest.approx(1.0, abs=1e-5)
    assert abs(r2["mean_leak_slope"]) < 0.1


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
    real = torch.cat([torch.full((1, 3, 4, 4), -1.0), torch.full((1, 3, 4, 4), 1.0)])
    r = measure(Brightness(image_brightness(real), [["black_background"], ["white_background"]]),
                _samples(imgs, torch.zeros(4), [["black_background"], ["white_background"]], torch.tensor([0, 0, 1, 1])))
    assert r["brightness_black"] == 0.0 and r["brightness_err_black"] == 0.0
    assert r["brightness_white"] == 0.5 and r["brightness_err_white"] == 0.5
    assert r["brightness_err"] == [0.0, 0.0, 0.5, 0.5]


def test_tagger_fd_and_kid_do_not_depend_on_the_unit_of_its_features():
    """A tagger whose features are 1000× another's measures the same FD and KID (its features are
    scaled by the reference set), and after it no reference dimension is wider than 1, the wider half exactly 1."""
    from nai3eval.metrics.tagger import TaggerMetrics
    from nai3eval.tagger import Tagger

    class Scaled(Tagger):
        def features(self, x):
            return 1000.0 * super().features(x)

    torch.manual_seed(0)
    base = Tagger(num_tags=3, resolution=8)
    scaled = Scaled(num_tags=3, resolution=8)
    scaled.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(40, 3, 8, 8, generator=gen) * 2 - 1
    fake = torch.rand(24, 3, 8, 8, generator=gen) * 1.2 - 0.9
    tags = [["a"]] * 24
    out = []
    for tagger in (base, scaled):
        m = TaggerMetrics(tagger, ["a", "b", "c"], real)
        z = m.reference.distances.real_features
        wide = m.reference.scale == m.reference.scale.median()  # at the floor: the dimensions at most as wide as the median
        torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)
        assert bool((z.std(0) <= 1 + 1e-4).all())  # no dimension weighs more than a typical one …
        torch.testing.assert_close(z.std(0)[~wide], torch.ones(int((~wide).sum())), atol=1e-4, rtol=0)  # … the rest unit
        torch.manual_seed(5)  # KID's random subsets
        r = measure(m, _samples(fake, torch.zeros(24), tags, torch.arange(24)))
        out.append((r["fd_tagger"], r["kid_tagger"]))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-4) and out[0][1] == pytest.approx(out[1][1], rel=1e-3, abs=1e-6)
    assert out[0][0] > 0


def test_every_metric_returns_exactly_what_it_declares():
    """The declarations are the one list of names: no two outputs share a name, and a metric that
    returns an undeclared name is refused."""
    from nai3eval.metrics import declared_outputs, metric_classes

    names = [o.name for o in declared_outputs()]
    assert len(names) == len(set(names)) and "kid_tagger" in names and "mean_leak_slope" in names
    assert {c.__name__ for c in metric_classes()} >= {"Brightness", "MeanLeak", "TaggerMetrics", "ExactScorer"}

    class Rogue(MeanLeak):
        outputs = MeanLeak.outputs[:1]

    gen = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="undeclared"):
        measure(Rogue(), _samples(torch.randn(8, 3, 4, 4, generator=gen), torch.randn(8, generator=gen),
                                  [["a"], ["b"]], torch.arange(2).repeat_interleave(4)))


def test_a_nearly_constant_feature_cannot_dominate_the_distance():
    """A dimension almost constant on the reference set (std 1e-6) that varies on the generated set
    is scaled by the median std, not its own: the distance stays on the scale of the others."""
    from nai3eval.metrics.tagger import scale_with_floor

    gen = torch.Generator().manual_seed(0)
    std = torch.tensor([1e-6, 0.5, 1.0, 2.0, 4.0])
    assert scale_with_floor(std).tolist() == pytest.approx([1.0, 1.0, 1.0, 2.0, 4.0])
    assert scale_with_floor(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    real = torch.randn(200, 5, generator=gen) * std
    fake = torch.randn(200, 5, generator=gen) * torch.tensor([1.0, 0.5, 1.0, 2.0, 4.0])  # the dead one wakes up
    scale = scale_with_floor(real.std(0))
    fd = FeatureDistances(real / scale).frechet(fake / scale)
    assert 0.5 < fd < 5  # divided by its own std (1e-6) the same shift would measure ~1e12
