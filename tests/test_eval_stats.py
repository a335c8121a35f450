"""KID against numpy, bootstrap coverage, and the claims report's verdicts against its CIs."""
import math

import numpy as np
import pytest
import torch

from nai3eval import report as R
from nai3eval.metrics import kernel_distance, tag_adherence, to_unit
from nai3eval.stats import Estimate, cluster_ci, mean_ci, paired_diff_ci
from nai3eval.tagger import Tagger, TaggerFeatures


def _kid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_equals_numpy_unbiased_mmd():
    torch.manual_seed(0)
    tagger = Tagger(num_tags=4, resolution=8, feature_dim=6).eval()
    with torch.no_grad():
        for p in tagger.parameters():
            p.mul_(3.0)  # larger features: KID well above float32 round-off
    real = torch.rand(40, 3, 8, 8) * 2 - 1
    fake = torch.rand(40, 3, 8, 8) * 0.5 + 0.3
    feats = TaggerFeatures(tagger)
    a, b = feats(to_unit(real)).double().numpy(), feats(to_unit(fake)).double().numpy()
    kid, _ = kernel_distance(tagger, real, fake, subsets=1)  # one subset of all N: no sampling
    assert kid == pytest.approx(_kid_numpy(a, b), rel=1e-4, abs=1e-7)


def test_bootstrap_ci_covers_the_true_mean_at_roughly_the_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for t in range(trials):
        x = rng.exponential(2.0, size=60)  # skewed, true mean 2
        est = mean_ci(x, seed=t)
        hits += est.low <= 2.0 <= est.high
    assert 0.88 <= hits / trials <= 0.99


def test_paired_and_cluster_intervals():
    rng = np.random.default_rng(1)
    base = rng.normal(size=200)
    est = paired_diff_ci(base + 0.5 + rng.normal(scale=0.1, size=200), base)
    assert est.low > 0.45 and est.high < 0.55  # pairing removes the shared noise
    groups = np.repeat(np.arange(20), 5)
    vals = rng.normal(size=100) + groups * 0.0
    est = cluster_ci(groups, lambda labels: float(np.mean([vals[groups == g].mean() for g in labels])))
    assert est.low < est.value < est.high


def test_tag_groups_and_leakage():
    tagger = Tagger(num_tags=3, resolution=4)
    with torch.no_grad():  # a tagger that always says "common" and never the others
        for p in tagger.parameters():
            p.zero_()
        tagger.head.bias.copy_(torch.tensor([10.0, -10.0, -10.0]))
    images = torch.zeros(4, 3, 4, 4)
    prompted = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1.0]])
    out = tag_adherence(tagger, images, prompted, rare=torch.tensor([False, False, True]),
                        common=torch.tensor([True, False, False]))
    assert out["tag_recall_rare"] == 0.0 and out["tag_recall_common"] == 1.0
    assert out["tag_leakage_common"] == 1.0  # the common tag shows up in all 3 images that did not ask for it
    assert out["per_image_leakage_common"] == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("est,expect_positive,verdict", [
    (Estimate(1.0, 0.2, 1.8), True, R.SUPPORTED), (Estimate(-1.0, -1.8, -0.2), True, R.NOT_SUPPORTED),
    (Estimate(0.1, -0.3, 0.5), True, R.INCONCLUSIVE), (Estimate(-1.0, -1.8, -0.2), False, R.SUPPORTED),
    (Estimate(1.0, -math.inf, math.inf), True, R.INCONCLUSIVE)])
def test_verdict_follows_the_interval(est, expect_positive, verdict):
    assert R.verdict_from(est, expect_positive) == verdict


def _fake_results(rng, leak_base=0.95, bright_gap=0.3):
    n, prompts = 32, np.repeat(np.arange(8), 4)
    start = rng.normal(size=n)

    def point(variant, cfg, first, slope, bright_err, fd):
        out = np.sin(prompts) + slope * start + rng.normal(scale=0.01, size=n)
        return {"variant": variant, "point": f"cfg{cfg}-sigma{first}", "cfg_scale": cfg, "first_sigma": first,
                "fd_tagger": fd, "fd_tagger_spread": [fd * 0.9, fd * 1.1], "kid_tagger": 0.01, "tag_recall": 0.5,
                "tag_recall_rare": 0.2, "tag_leakage_common": 0.1, "mean_leak_slope": slope, "nonfinite_samples": 0,
                "per_image_start_mean": start.tolist(), "per_image_out_mean": out.tolist(),
                "per_image_brightness_err": (bright_err + rng.normal(scale=0.02, size=n)).tolist(),
                "per_image_brightness": rng.uniform(size=n).tolist(), "brightness_black": 0.4, "brightness_white": 0.6,
                "per_image_recall_rare": rng.uniform(size=n).tolist(),
                "per_image_leakage_common": rng.uniform(size=n).tolist()}

    base = {"variant": "sdxl-eps", "variant_config": {"prediction": "eps", "ztsnr": False, "sigma_max": None},
            "prompt_index": prompts.tolist(), "points": [point("sdxl-eps", c, f, leak_base, bright_gap + 0.05,
                                                              150 - 10 * c) for c in (1.0, 5.0) for f in (14.6, 20000.0)],
            "probes": {"x0_inf_nonfinite_frac": 1.0, "x0_inf_max_abs": 1e38, "per_image_x0_inf_err": [math.nan] * 32,
                       "per_image_x0_20000_err": (5 + rng.normal(size=32)).tolist()}}
    nai = {"variant": "nai", "variant_config": {"prediction": "v", "ztsnr": True, "sigma_max": None},
           "prompt_index": prompts.tolist(), "points": [point("nai", c, f, 0.0 if f > 100 else 0.6, 0.05,
                                                            100 + 10 * c) for c in (1.0, 5.0) for f in (14.6, 20000.0)],
           "probes": {"x0_inf_nonfinite_frac": 0.0, "x0_inf_max_abs": 1.0,
                      "per_image_x0_inf_err": (0.1 + 0.01 * rng.normal(size=32)).tolist(),
                      "per_image_x0_20000_err": (0.1 + 0.01 * rng.normal(size=32)).tolist(),
                      "per_image_start_dist_317": (0.01 + 0.001 * rng.normal(size=32)).tolist(),
                      "per_image_start_dist_136": (0.02 + 0.001 * rng.normal(size=32)).tolist(),
                      "per_image_start_dist_56": (0.2 + 0.01 * rng.normal(size=32)).tolist(),
                      "practical_infinity_cfg": 5.0}}
    return [base, nai]


def test_report_renders_every_section_and_verdicts_match_their_intervals(tmp_path):
    rng = np.random.default_rng(0)
    results = _fake_results(rng)
    bucketing = {"kept": rng.uniform(0.9, 1.0, 50).tolist(), "kept_square": rng.uniform(0.5, 0.8, 50).tolist()}
    normalisation = {"mean_before": [0.1] * 3, "std_before": [0.7] * 3, "mean_after": [0.0] * 3,
                     "std_after": [1.0] * 3, "per_image_mean_after": rng.normal(scale=0.1, size=50).tolist()}
    claims, folder = R.write_report(results, tmp_path, bucketing, normalisation)
    by_id = {c.id: c for c in claims}
    assert [c.id for c in claims] == [f"C{i}" for i in range(1, 10)]
    for cid in ("C1", "C2", "C3", "C7", "C9"):  # built with clear effects in the expected direction
        assert by_id[cid].verdict == R.SUPPORTED, by_id[cid]
        assert by_id[cid].effect.low > 0
    assert by_id["C4"].verdict == R.NOT_MEASURED and by_id["C6"].verdict == R.NOT_MEASURED
    assert by_id["C5"].verdict == R.SUPPORTED  # baseline's FD is lowest at CFG 5, ZTSNR's at CFG 1
    for c in claims:
        if c.verdict in (R.SUPPORTED, R.NOT_SUPPORTED, R.INCONCLUSIVE) and c.id not in ("C1", "C5", "C8"):
            assert c.verdict == R.verdict_from(c.effect)
        if c.verdict != R.NOT_MEASURED:
            assert c.effect is not None  # never a verdict without its numbers
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    for c in claims:
        assert f"## {c.id}:" in md and f"<h2>{c.id}:" in page
    for name in ("fd_tagger_vs_cfg", "tag_recall_vs_cfg", "pareto_fd_recall", "mean_leak_scatter",
                 "brightness_histogram"):
        assert (folder / f"{name}.png").stat().st_size > 1000 and f"{name}.png" in page


def test_report_refutes_when_the_data_say_so(tmp_path):
    rng = np.random.default_rng(1)
    results = _fake_results(rng, leak_base=0.0, bright_gap=-0.2)  # baseline does not leak and is brighter-accurate
    claims, _ = R.write_report(results, tmp_path)
    by_id = {c.id: c for c in claims}
    assert by_id["C2"].verdict == R.NOT_SUPPORTED
    assert by_id["C3"].verdict in (R.INCONCLUSIVE, R.NOT_SUPPORTED)
