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


def test_the_folder_command_equals_the_sweeps_own_computation(tmp_path):
    """`nai3 metrics REAL FAKE --tagger DIR` on two folders gives the FD and KID that the sweep's
    tagger metric measures for the same images against the same reference."""
    import json
    import subprocess
    import sys

    from nai3eval.metrics import Samples
    from nai3eval.metrics.tagger import TaggerMetrics
    from nai3eval.prompts import PromptSet
    from nai3eval.tagger import TaggerReport, load_tagger, save_tagger, train_tagger
    from nai3train.data import Vocabulary
    from tests.toys import measure

    synthesize(tmp_path / "b", 40, 24, 16, seed=5)
    train, ev = load_folder(tmp_path / "b" / "train", 16), load_folder(tmp_path / "b" / "eval", 16)
    vocab = Vocabulary.build(train.tags)
    tagger = train_tagger(train.images, vocab.multi_hot(train.tags), steps=20)
    folder = save_tagger(tagger, list(vocab.tags), TaggerReport(0.0, 0.0, 0.0, 0.0), tmp_path / "tagger")
    out = tmp_path / "m.json"
    p = subprocess.run([sys.executable, "-m", "flows.cli", "metrics", str(tmp_path / "b" / "eval"),
                        str(tmp_path / "b" / "train"), "--tagger", str(folder), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())[0]
    loaded, names, _ = load_tagger(folder)
    fake = train.images
    want = measure(TaggerMetrics(loaded, names, ev.images),
                   Samples(fake, torch.zeros(len(fake)), PromptSet([["a"]], torch.zeros(len(fake), dtype=torch.long),
                                                                    torch.zeros(len(fake), 1))))
    assert got["n_real"] == 24 and got["n_fake"] == 40
    assert got["fd"] == pytest.approx(want["fd_tagger"], rel=1e-9) and got["kid"] == pytest.approx(want["kid_tagger"],
                                                                                                    rel=1e-9)
    p = subprocess.run([sys.executable, "-m", "flows.cli", "metrics", str(tmp_path / "b" / "eval"), "--disturbance",
                        "--tagger", str(folder)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "pure noise" in p.stdout and "blur" in p.stdout, p.stderr[-2000:]


def test_the_benchmarks_domain_tagger_passes_its_disturbance_test(tmp_path):
    """The instrument the benchmark's set-level claims read: a tagger trained as the pipeline trains
    it, on the benchmark, passes on the held-out reference set — split ≈ 0, noise and blur
    monotone and measurable, pure noise the most."""
    from nai3eval.metrics.tagger import tagger_distance
    from nai3eval.tagger import train_tagger
    from nai3train.data import Vocabulary

    synthesize(tmp_path / "b", 512, 64, 16, seed=0)
    train, ev = load_folder(tmp_path / "b" / "train", 16), load_folder(tmp_path / "b" / "eval", 16)
    vocab = Vocabulary.build(train.tags)
    tagger = train_tagger(train.images, vocab.multi_hot(train.tags), steps=800, seed=0)  # eval.tagger_steps
    d = disturbance("domain tagger", ev.images, tagger_distance(tagger))
    assert d.passed, d.table()
    top = d._kind("pure noise")[0]
    assert all(top.fd > 2 * r.fd for r in d.rows if r.kind != "pure noise"), d.table()


def test_the_exact_folder_distance_counts_what_the_scorer_reads(tmp_path):
    """`--features exact`: per reading, ½ Σ |p − q| over what the scorer reads in each folder —
    0 for a folder against itself, larger against noise than against the benchmark's other split."""
    from collections import Counter

    from nai3eval.folders import folder_distance
    from nai3eval.realdata import write_pngs
    from nai3eval.scorer import read_tags

    synthesize(tmp_path / "b", 40, 24, 16, seed=5)
    real, fake = tmp_path / "b" / "eval", tmp_path / "b" / "train"
    got = folder_distance(real, fake, "exact")
    a, b = read_tags(load_folder(real, 16).images), read_tags(load_folder(fake, 16).images)
    for i, key in enumerate(("background", "count", "object")):
        ca, cb = Counter(t[i] for t in a), Counter(t[i] for t in b)
        want = sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb)) / 2
        assert got.tv_readings[key] == pytest.approx(want, abs=1e-12)
    assert got.tv == pytest.approx(sum(got.tv_readings.values()) / 3)
    assert folder_distance(real, real, "exact").tv == 0.0
    noise = write_pngs(torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                       tmp_path / "noise")
    assert folder_distance(real, noise, "exact").tv > got.tv + 0.3
    with pytest.raises(ValueError, match="reads labels"):
        from nai3eval.folders import folder_disturbance
        folder_disturbance(real, "exact")


def test_the_clip_folder_distance_is_clean_fids_fd_on_normalised_clip_embeddings(tmp_path):
    """`--features clip`: FD on a local CLIP model's L2-normalised image embeddings equals
    clean-fid's ``fid_from_feats`` on embeddings computed here with transformers directly."""
    from cleanfid.fid import fid_from_feats

    from nai3eval.folders import folder_distance
    from nai3eval.realdata import load_clip, write_pngs
    from tests.test_realdata import _tiny_clip

    clip = _tiny_clip(tmp_path)
    gen = torch.Generator().manual_seed(1)
    real = write_pngs(torch.rand(20, 3, 32, 32, generator=gen) * 2 - 1, tmp_path / "real")
    fake = write_pngs((torch.rand(16, 3, 32, 32, generator=gen) * 2 - 1) * 0.5, tmp_path / "fake")
    got = folder_distance(real, fake, "clip", clip=str(clip))
    model, processor = load_clip(clip)

    def embed(folder):
        images = [(load_folder(folder, 32, untagged=True).images[i] + 1) / 2 for i in range(len(list(folder.iterdir())))]
        pixels = processor(images=[(x * 255).round().to(torch.uint8) for x in images], return_tensors="pt")
        with torch.no_grad():
            z = model.get_image_features(**pixels)
        return (z / z.norm(dim=-1, keepdim=True)).double().numpy()

    assert got.n_real == 20 and got.n_fake == 16
    assert got.fd == pytest.approx(fid_from_feats(embed(real), embed(fake)), rel=1e-5)
    assert got.kid_std is not None and math.isfinite(got.kid)
