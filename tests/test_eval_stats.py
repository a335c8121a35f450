"""KID against numpy; tag groups and leakage."""
import numpy as np
import pytest
import torch

from tests.toys import measure
from nai3eval.metrics.adherence import adherence
from nai3eval.metrics.tagger import FeatureDistances


def _kid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_equals_numpy_unbiased_mmd():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6)) * 2
    b = rng.normal(size=(40, 6)) + 0.5
    dist = FeatureDistances(torch.from_numpy(a), kid_subsets=1)  # one subset of all N: no sampling
    for fake in (b, b * 0.5):  # the reference features are kept across points
        kid, _ = dist.kernel(torch.from_numpy(fake))
        assert kid == pytest.approx(_kid_numpy(a, fake), rel=1e-6, abs=1e-9)


def test_tag_groups_and_leakage():
    pred = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0.0]])  # always "common", never the others
    prompted = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1.0]])
    r = adherence(pred, prompted, (torch.tensor([False, False, True]), torch.tensor([True, False, False])))
    assert r["tag_recall_rare"] == 0.0 and r["tag_recall_common"] == 1.0
    assert r["tag_leakage_common"] == 1.0  # the common tag shows up in all 3 images that did not ask for it
    assert r["leakage_common"] == [1.0, 1.0, 0.0, 1.0]
    assert r["tag_precision"] == pytest.approx(1 / 4) and r["tag_recall"] == pytest.approx(1 / 5)


def test_unclamped_brightness_shows_overshoot_that_clipping_hides():
    """A black-background image at −1.5 (CFG overshoot below black): clipped brightness 0, the
    unclamped mean (x + 1)/2 = −0.25; a white one at 2.0: clipped 1, unclamped 1.5."""
    from nai3eval.metrics import Samples
    from nai3eval.metrics.brightness import Brightness
    from nai3eval.pixels import image_brightness
    from nai3eval.prompts import PromptSet

    tags = [["black_background"], ["white_background"]]
    real = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0)])
    images = torch.stack([torch.full((3, 4, 4), -1.5), torch.full((3, 4, 4), 2.0)])
    r = measure(Brightness(image_brightness(real), tags),
                Samples(images, torch.zeros(2), PromptSet(tags, torch.arange(2), torch.zeros(2, 1))))
    assert (r["brightness_black"], r["brightness_white"]) == (0.0, 1.0)
    assert r["brightness_unclamped_black"] == pytest.approx(-0.25)
    assert r["brightness_unclamped_white"] == pytest.approx(1.5)
    assert r["brightness_err"] == pytest.approx([0.0, 0.0])  # clipping hides the overshoot
    assert r["brightness_err_unclamped"] == pytest.approx([0.25, 0.5])


def test_rare_enriched_prompts_carry_rare_tags_and_keep_black_and_white():
    from nai3eval.prompts import make_prompt_set

    pool = [[bg, "1_object", obj] for bg in ("black_background", "white_background", "grey_background")
            for obj in ("red_circle", "blue_square", "orange_cross") for _ in range(3)]
    plain = make_prompt_set(pool, 6, 2, (1,), 0)
    rich = make_prompt_set(pool, 6, 2, (1,), 0, frozenset({"orange_cross"}), 0.5)
    assert sum("orange_cross" in p for p in plain.prompts) < 3
    assert sum("orange_cross" in p for p in rich.prompts) >= 3
    for ps in (plain, rich):
        assert len(ps.prompts) == 6 and len({id(p) for p in ps.prompts}) == 6
        assert any("black_background" in p for p in ps.prompts) and any("white_background" in p for p in ps.prompts)
    assert make_prompt_set(pool, 6, 2, (1,), 0, frozenset({"orange_cross"}), 0.0).prompts == plain.prompts


def test_kid_subsets_do_not_depend_on_the_global_generator():
    """KID draws its subsets from a generator seeded by the evaluation seed: what trained before in
    the process (the training seed sets torch's global state) does not move it; another seed does."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 5, generator=gen), torch.randn(40, 5, generator=gen) + 0.3
    got = []
    for state in (0, 123):
        torch.manual_seed(state)
        got.append(FeatureDistances(real, kid_subsets=10, seed=7).kernel(fake))
    assert got[0] == got[1]
    assert FeatureDistances(real, kid_subsets=10, seed=8).kernel(fake) != got[0]
