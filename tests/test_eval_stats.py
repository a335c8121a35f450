"""KID against numpy, bootstrap coverage, and the claims report's verdicts against its CIs."""
import math

import numpy as np
import pytest
import torch

from nai3eval import report as R
from nai3eval.metrics import FeatureDistances, adherence
from nai3eval.results import EvalPoint, PerImage, PointResult, PracticalInfinity, Probes, VariantResult, X0Probe
from nai3eval.stats import Estimate, cluster_ci, mean_ci, paired_diff_ci


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
    pred = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0.0]])  # always "common", never the others
    prompted = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1.0]])
    r = PointResult(variant="x", point=EvalPoint(1.0, 14.6), n_images=4, extrapolated=False)
    adherence(pred, prompted, r, (torch.tensor([False, False, True]), torch.tensor([True, False, False])))
    assert r.tag_recall_rare == 0.0 and r.tag_recall_common == 1.0
    assert r.tag_leakage_common == 1.0  # the common tag shows up in all 3 images that did not ask for it
    assert r.per_image.leakage_common == [1.0, 1.0, 0.0, 1.0]
    assert r.tag_precision == pytest.approx(1 / 4) and r.tag_recall == pytest.approx(1 / 5)


@pytest.mark.parametrize("est,expect_positive,verdict", [
    (Estimate(1.0, 0.2, 1.8), True, R.SUPPORTED), (Estimate(-1.0, -1.8, -0.2), True, R.NOT_SUPPORTED),
    (Estimate(0.1, -0.3, 0.5), True, R.INCONCLUSIVE), (Estimate(-1.0, -1.8, -0.2), False, R.SUPPORTED),
    (Estimate(1.0, -math.inf, math.inf), True, R.INCONCLUSIVE)])
def test_verdict_follows_the_interval(est, expect_positive, verdict):
    assert R.verdict_from(est, expect_positive) == verdict


def _fake_results(rng, leak_base=0.95, bright_gap=0.3) -> list[VariantResult]:
    n, prompts = 32, np.repeat(np.arange(8), 4)
    start = rng.normal(size=n)

    def point(variant, cfg, first, slope, bright_err, kid):
        out = np.sin(prompts) + slope * start + rng.normal(scale=0.01, size=n)
        per = PerImage(out_mean=out.tolist(), start_mean=start.tolist(),
                       brightness=rng.uniform(size=n).tolist(),
                       brightness_err=(bright_err + rng.normal(scale=0.02, size=n)).tolist(),
                       recall_rare=rng.uniform(size=n).tolist(), leakage_common=rng.uniform(size=n).tolist())
        return PointResult(variant=variant, point=EvalPoint(cfg, first), n_images=n, extrapolated=False,
                           fd_tagger=100 * kid, kid_tagger=kid, tag_recall=0.5, tag_recall_rare=0.2,
                           tag_leakage_common=0.1, mean_leak_slope=slope, brightness_black=0.4, brightness_white=0.6,
                           per_image=per)

    def x0(sigma, frac, err):
        return X0Probe(sigma, frac, 1e38 if frac else 1.0, float(np.nanmean(err)) if frac < 1 else math.nan,
                       list(err))

    base = VariantResult("sdxl-eps", {"prediction": "eps", "ztsnr": False, "sigma_max": None},
                         [["p"]] * 8, prompts.tolist(),
                         [point("sdxl-eps", c, f, leak_base, bright_gap + 0.05, 0.15 - 0.01 * c)
                          for c in (1.0, 5.0) for f in (14.6, 20000.0)],
                         Probes(x0(math.inf, 1.0, [math.nan] * 32), x0(20000.0, 0.0, 5 + rng.normal(size=32))))
    dist = {"317": 0.01 + 0.001 * rng.normal(size=32), "136": 0.02 + 0.001 * rng.normal(size=32),
            "56": 0.2 + 0.01 * rng.normal(size=32)}
    nai = VariantResult("nai", {"prediction": "v", "ztsnr": True, "sigma_max": None}, [["p"]] * 8, prompts.tolist(),
                        [point("nai", c, f, 0.0 if f > 100 else 0.6, 0.05, 0.1 + 0.01 * c)
                         for c in (1.0, 5.0) for f in (14.6, 20000.0)],
                        Probes(x0(math.inf, 0.0, 0.1 + 0.01 * rng.normal(size=32)),
                               x0(20000.0, 0.0, 0.1 + 0.01 * rng.normal(size=32)),
                               PracticalInfinity(5.0, 20000.0, {k: float(v.mean()) for k, v in dist.items()},
                                                 {k: v.tolist() for k, v in dist.items()})))
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
    assert by_id["C5"].verdict == R.NOT_MEASURED  # one training run gives an optimum no interval
    assert any("lowest KID at CFG 5" in d for d in by_id["C5"].details)
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


def test_report_json_over_three_training_seeds_is_recipe_level(tmp_path):
    import json

    results = []
    for k in range(3):
        for r in _fake_results(np.random.default_rng(10 + k)):
            r.seed = k
            results.append(r)
    R.write_report(results, tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    by_id = {c["id"]: c for c in doc["claims"]}
    assert set(by_id) == {"C1", "C2", "C3", "C9"} and doc["claims_spec_sha256"] is None
    c2 = by_id["C2"]
    assert c2["n_seeds"] == 3 and c2["level"] == "recipe" and [d["seed"] for d in c2["per_seed"]] == [0, 1, 2]
    assert c2["verdict"] == "supported" and c2["effect"]["ci95"][0] > 0
    values = [d["value"] for d in c2["per_seed"]]
    assert c2["effect"]["value"] == pytest.approx(np.mean(values))
    assert "Over training seeds" in (tmp_path / "report.md").read_text()

    single = [r for r in results if r.seed == 0]
    R.write_report(single, tmp_path / "one")
    one = {c["id"]: c for c in json.loads((tmp_path / "one" / "report.json").read_text())["claims"]}
    assert one["C2"]["level"] == "checkpoint" and one["C2"]["verdict"].startswith("checkpoint-level: ")
