"""The claims decided by the pre-registered spec: arms chosen by fields, every rule able to come out
either way, recipe-level verdicts only from the first look, Holm across primaries, intersection-union
for compound claims, checks without intervals — on synthetic results whose truth is set here.

Most tests decide at K_max (``at_kmax``: the spec with K_max = the seeds they have), where a single
look spends the whole α; the looks themselves are tested in test_verdicts.py."""
import hashlib
import json
import math
import os
import time

import numpy as np
import pytest
from pathlib import Path

from nai3eval.claims import DEFAULT_SPEC, evaluate_claims, load_claims_spec, matches
from nai3eval.claims import statistics as A
from nai3eval.record import Record, Run
from nai3eval.reporting.report import write_report
from nai3eval.setting import Setting
from nai3train.config import ConfigError, VariantConfig

G, PER = 8, 4  # prompts, images per prompt
PID = np.repeat(np.arange(G), PER)
PROMPTS = [["1girl", "black_background" if g % 2 == 0 else "white_background"] for g in range(G)]
DIM = 768

ARMS = {  # name → variant fields
    "sdxl-eps": {"prediction": "eps", "ztsnr": False},
    "v": {"prediction": "v", "ztsnr": False},
    "eps-ztsnr": {"prediction": "eps", "ztsnr": True},
    "v-ztsnr": {"prediction": "v", "ztsnr": True},
    "v-ztsnr-tagw": {"prediction": "v", "ztsnr": True, "tag_weighting": True},
    "v-ztsnr-minsnr": {"prediction": "v", "ztsnr": True, "min_snr_gamma": 5.0},
}


def arm_truth(name: str, flip: bool = False) -> dict:
    """What each arm does; ``flip`` makes the baselines as good as NAI (every claim should fail)."""
    zt = ARMS[name]["ztsnr"]
    good = zt or flip
    v_zt = (zt and ARMS[name]["prediction"] == "v") != flip  # flipped: the baselines are the accurate ones
    return {"bright_err": 0.03 if v_zt else 0.3, "grey": 0.05 if not good else 0.45,
            "slope": {"low": 0.9, "top": 0.02 if zt and not flip else 0.9}, "x0_err": 0.05 if ARMS[name]["prediction"] == "v" or flip else 0.4,
            "nonfinite_inf": 1.0 if ARMS[name]["prediction"] == "eps" and zt else 0.0,
            "cfg_star": 3.0 if zt else 6.0, "rare": 0.5 if ARMS[name].get("tag_weighting") else 0.3,
            "leak": 0.1 if ARMS[name].get("tag_weighting") else 0.2,
            "ratios": {"inf": 0.01, "317": 0.02, "136": 0.04, "56": 0.05 if flip else 0.6},
            "count_err": 0.0 if flip else 0.6}


def fake_variant(name: str, seed: int, rng, cfgs=(1.0, 5.0), flip: bool = False, noise: float = 0.02) -> Record:
    """One evaluated run whose measurements carry the truth of ``arm_truth``."""
    t = arm_truth(name, flip)
    zt = ARMS[name]["ztsnr"]
    starts = (14.6, 20000.0) + ((math.inf,) if zt else ())
    rec = Record()
    run = rec.add_run(Run(VariantConfig(name=name, **ARMS[name]), seed, PROMPTS, PID.tolist()))

    def jitter(v, n=G * PER):
        return (v + rng.normal(scale=noise, size=n) + np.repeat(rng.normal(scale=noise, size=G), PER)).tolist()

    for c in cfgs:
        for s in starts:
            top = s == starts[-1]
            err = t["bright_err"] if top or not zt else 0.3
            bright = (np.where(PID % 2 == 0, 0.5 - t["grey"], 0.5 + t["grey"])
                      + rng.normal(scale=noise, size=G * PER)).tolist()
            err_k = jitter(err)
            kid = 0.05 + 0.02 * (math.log(c) - math.log(t["cfg_star"])) ** 2 + rng.normal(scale=0.0005)
            # ε from ∞ returns non-finite samples (every other image here); the rest are finite
            finite = (PID % 2 == 1) | (not (math.isinf(s) and ARMS[name]["prediction"] == "eps"))
            rec.put_all(run, Setting("sweep", s, c), {
                "finite": finite.tolist(),
                "brightness": bright, "brightness_err": err_k, "brightness_err_unclamped": err_k,
                "image_overshoot_frac": np.abs(jitter(t["bright_err"] / 2)).tolist(),
                "recall_rare": jitter(t["rare"]), "leakage_common": jitter(t["leak"]), "kid_tagger": kid})
    levels = np.tile([-2.0, -1.0, 0.0, 1.0, 2.0], G)
    lpid = np.repeat(np.arange(G), 5)
    for key, s in (("14.6", 14.6), ("max", starts[-1])):
        slope = t["slope"]["low" if key == "14.6" else "top"]
        out = slope * levels / math.sqrt(DIM) + np.sin(lpid) + rng.normal(scale=noise / 20, size=len(levels))
        at = Setting("mean_leak", s, 5.0)
        rec.put(run, at, "noise_mean", (levels / math.sqrt(DIM)).tolist(), lpid)
        rec.put(run, at, "out_mean", out.tolist(), lpid)
    if zt:
        ref = np.abs(1.0 + rng.normal(scale=noise, size=G * PER))
        rec.put(run, Setting("practical_infinity", 20000.0, 5.0), "same_prompt_distance", ref.tolist(), PID)
        for k, r in t["ratios"].items():
            at = Setting("practical_infinity", float(k), 5.0)
            rec.put(run, at, "distance", (r * ref + rng.normal(scale=noise / 5, size=G * PER)).tolist(), PID)
            rec.put(run, at, "reference_start", 20000.0)
    for s, rate, rescaled in ((14.6, 0.3, True), (14.6, t["count_err"], False), (20000.0, 0.6 - t["count_err"], True)):
        rec.put(run, Setting("count", s, 5.0, canvas=2.0, rescaled=rescaled), "wrong_count",
                (rng.uniform(size=G * PER) < rate).astype(float).tolist(), PID)
    nf = t["nonfinite_inf"]
    rec.put_all(run, Setting("x0", math.inf), {"nonfinite_frac": nf,
                                                "brightness_err": [math.nan if nf else 0.05] * (G * PER)})
    rec.put_all(run, Setting("x0", 20000.0), {"nonfinite_frac": 0.0, "brightness_err": jitter(t["x0_err"])})
    return rec


def fake_results(seeds=(0, 1, 2), arms=tuple(ARMS), **kw) -> Record:
    rng = np.random.default_rng(sum(seeds) + 7)
    out = Record()
    for k in seeds:
        for a in arms:
            out.merge(fake_variant(a, k, rng, **kw))
    return out


def sweep_values(rec: Record, metric: str, value) -> None:
    """Replace ``metric`` at every sweep point of every run (``value(run)``: the per-image list)."""
    for run in rec.runs.values():
        for s in rec.settings(run, "sweep"):
            rec.put(run, s, metric, value(run))


def drop(rec: Record, kind: str) -> None:
    for key in [k for k in rec.values if k[1].kind == kind]:
        del rec.values[key]


def by_id(outcome):
    return {c.id: c for c in [*outcome.claims, *outcome.checks]}


def at_kmax(k: int = 3):
    """The shipped spec with K_max = k: a report over k seeds takes the last look, at the full α."""
    return load_claims_spec().model_copy(update={"k_max": k})


def test_the_spec_loads_with_the_sha256_of_its_bytes():
    spec = load_claims_spec()
    assert spec.sha256 == hashlib.sha256(DEFAULT_SPEC.read_bytes()).hexdigest()
    assert {c.role for c in spec.claims} == {"primary", "secondary", "exploratory", "check"}
    assert [c.id for c in spec.claims if c.role == "primary"] == ["C1", "C2", "C3-linear"]


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["claims"][0].update(metric="no_such_metric"), "claims[0]"),
    (lambda d: d["claims"][0]["rule"].update(kind="below"), "claims[0].rule"),
    (lambda d: d["claims"][0]["arms"]["baseline"].update(colour="red"), "claims[0].arms"),
    (lambda d: d["claims"][1].update(id="C1"), "claims"),
    (lambda d: d["claims"][0].update(surprise=1), "claims[0].surprise"),
    (lambda d: d.update(k_max=2), "claims.k_max"),
    (lambda d: d["claims"][0].update(decided_in="nightly"), "claims"),
])
def test_a_bad_spec_is_refused_naming_the_key(tmp_path, edit, key):
    import yaml

    doc = yaml.safe_load(DEFAULT_SPEC.read_text())
    edit(doc)
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_claims_spec(bad)


def test_arms_are_selected_by_fields_and_all_other_fields_at_defaults():
    v = lambda **f: VariantConfig(name="anything", **f)  # noqa: E731
    assert matches(v(prediction="v", ztsnr=True), {"prediction": "v", "ztsnr": True})
    assert not matches(v(prediction="v", ztsnr=True, tag_weighting=True), {"prediction": "v", "ztsnr": True})
    assert matches(v(prediction="v", ztsnr=True, sigma_max=20000), {"prediction": "v", "ztsnr": True, "sigma_max": 2e4})
    assert not matches(v(prediction="v", ztsnr=True, sigma_max=20000), {"prediction": "v", "ztsnr": True})
    renamed = Record()
    for i, (key, run) in enumerate(fake_results(seeds=(0,)).runs.items()):  # names carry no meaning
        one = Record(runs={key: run}, values={k: x for k, x in fake_results(seeds=(0,)).values.items() if k[0] == key})
        renamed.merge(one.relabel(f"arm-{i}", 0))
    c2 = by_id(evaluate_claims(renamed))["C2"]
    assert [next(r for r in renamed.runs.values() if r.name == c2.arms[a]).variant.prediction
            for a in ("baseline", "treatment")] == ["v", "v"]
    doubled = fake_results(seeds=(0,)).merge(fake_variant("v", 0, np.random.default_rng(1)).relabel("another-v", 0))
    assert "several variants match" in by_id(evaluate_claims(doubled))["C2"].decision.reason


def _moments(mean: list, std: list, se: float, images: int = 64) -> dict:
    """C8's per-split moments (nai3eval/claims/heldout.py) with standard error ``se`` throughout."""
    split = {"mean": mean, "std": std, "se_mean": [se] * 3, "se_std": [se] * 3, "images": images}
    return {"heldout_moments": split, "train_moments": {**split, "mean": [0, 0, 0], "std": [1, 1, 1]}}


def test_three_seeds_give_recipe_level_verdicts_that_follow_their_rules(tmp_path):
    results = fake_results(cfgs=(1.5, 2.5, 3.5, 5.0, 7.0, 10.0), noise=0.01)
    o, folder = write_report(results, tmp_path, spec=at_kmax(3), data={
        "bucketing": {"kept": [0.9, 1.0], "kept_square": [0.6, 1.0]},
        "normalisation": {"heldout_mean_after": [0.01, -0.02, 0.0], "heldout_std_after": [1.01, 0.98, 1.0],
                          "heldout_images": 64, **_moments([0.01, -0.02, 0.0], [1.01, 0.98, 1.0], se=0.1)}})
    c = by_id(o)
    for cid in ("C1", "C2", "C3-linear", "C1-sampled", "C2-package", "C2-black-shown", "C2-white-shown",
                "C2-black-overshoot", "C2-white-overshoot", "C2-grey", "C3-package-linear",
                "C3-copies", "C4", "C6-rare", "C6-leak", "C9-317", "C9-136", "C9-56", "C9", "C5", "C6-kid", "C6"):
        assert c[cid].verdict == A.SUPPORTED, (cid, c[cid].verdict, c[cid].decision.reason)
        assert c[cid].level_kind == A.RECIPE
    assert [c[i].verdict for i in ("C1-check", "C7", "C8")] == [A.CHECK_PASSED] * 3
    assert c["C2"].arms == {"baseline": "v", "treatment": "v-ztsnr"}  # ZTSNR alone, not the package
    assert c["C1"].arms == {"baseline": "eps-ztsnr", "treatment": "v-ztsnr"}
    assert all(0 < c[i].level <= 0.025 / 1 for i in ("C1", "C2", "C3-linear"))
    assert c["C5"].effect.value == pytest.approx(math.log(6.0) - math.log(3.0), abs=0.1)

    doc = json.loads((folder / "report.json").read_text())
    assert doc["claims_spec_sha256"] == hashlib.sha256(DEFAULT_SPEC.read_bytes()).hexdigest()
    c2 = next(x for x in doc["claims"] if x["id"] == "C2")
    assert {"id", "verdict", "level", "n_seeds", "effect", "per_seed", "rule", "margin"} <= set(c2)
    assert c2["n_seeds"] == 3 and [d["seed"] for d in c2["per_seed"]] == [0, 1, 2]
    assert c2["effect"]["value"] == pytest.approx(np.mean([d["value"] for d in c2["per_seed"]]))
    assert {x["id"] for x in doc["checks"]} == {"C1-check", "C7", "C8"} and all(x["passed"] for x in doc["checks"])
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    for x in [*o.claims, *o.checks]:
        assert f"**{x.id}**" in md and f"<b>{x.id}</b>" in page
    assert doc["claims_spec_sha256"] in md and doc["claims_spec_sha256"] in page


def test_the_same_rules_contradict_when_the_data_say_so():
    """At the final look (K = K_max = 5)."""
    o = evaluate_claims(fake_results(seeds=(0, 1, 2, 3, 4), flip=True), spec=at_kmax(5),
                        data={"bucketing": {"kept": [0.5, 1.0], "kept_square": [0.6, 1.0]},
                              "normalisation": {"heldout_mean_after": [0.2, 0, 0], "heldout_std_after": [1, 1, 1],
                                                **_moments([0.2, 0, 0], [1, 1, 1], se=0.01)}})
    c = by_id(o)
    assert c["C2"].verdict == A.CONTRADICTED  # the baseline's brightness error is the smaller one
    assert c["C3-linear"].verdict == A.CONTRADICTED  # s_t − 0.2·s_b ≈ 0.72, far above 0
    # outside the primaries' guarded family a contradiction says it is unadjusted
    assert c["C9-56"].verdict == c["C9"].verdict == c["C4"].verdict == "contradicted (unadjusted)"
    assert c["C4"].decision.verdict == A.CONTRADICTED  # more wrong counts from 20000 than from 14.6
    assert [c[i].verdict for i in ("C7", "C8")] == [A.CHECK_FAILED] * 2


def test_below_the_first_look_a_claim_shows_its_interval_only_and_a_look_uses_the_first_k_seeds():
    one = by_id(evaluate_claims(fake_results(seeds=(0,))))
    assert one["C2"].level_kind == A.CHECKPOINT and one["C2"].verdict == "interval only"
    assert one["C2"].effect.value > 0 and not evaluate_claims(fake_results(seeds=(0,))).new_ledger_entries()
    assert one["C5"].verdict == A.NOT_MEASURED  # a set-level statistic at K = 1 has no interval at all
    four = fake_results(seeds=(0, 1, 2, 3))
    c2 = by_id(evaluate_claims(four, spec=at_kmax(3)))["C2"]
    assert c2.look == 3 and [s.seed for s in c2.effect.per_seed] == [0, 1, 2] and c2.seeds_available == 4
    assert "look K = 3" in c2.detail


def test_missing_arms_and_probes_are_not_measured_with_the_reason():
    smoke = fake_results(seeds=(0,), arms=("sdxl-eps", "v-ztsnr"))
    c = by_id(evaluate_claims(smoke))
    assert c["C2"].verdict == A.NOT_MEASURED and "no variant matches the baseline arm" in c["C2"].decision.reason
    assert c["C2-package"].verdict == "interval only" and c["C2-package"].effect.value > 0
    drop(smoke, "mean_leak")
    drop(smoke, "count")
    c = by_id(evaluate_claims(smoke))
    assert "no designed mean-leak probe" in c["C3-package-linear"].decision.reason
    assert "no 2×-canvas count probe" in c["C4"].decision.reason


def test_identical_values_never_yield_a_verdict():
    results = fake_results(seeds=(0,), noise=0.0)
    assert by_id(evaluate_claims(results))["C2"].decision.verdict == A.NOT_MEASURED


def test_holm_can_withhold_a_primary_that_passes_alone():
    """Three primaries with one-sided p = 0.001, 0.02, 0.02 at a single look at K_max (where the
    look's level is the whole α): each passes at α = 0.025 alone; Holm tests them at α/3, α/2, α/1
    in order of p, and stops at the first failure."""
    from nai3eval.claims import ClaimResult, apply_holm

    spec = load_claims_spec()
    results = []
    for cid, p in (("C1", 0.001), ("C2", 0.02), ("C3-linear", 0.02)):
        e = A.Effect(1.0, 1.0 / A.stats.t.isf(p, 2), 2, A.RECIPE)
        d = A.Superiority(alpha=spec.alpha).decide(e)
        assert d.verdict == A.SUPPORTED
        results.append(ClaimResult(spec.by_id(cid), e, d, look=10, history=(10,), k_max=10, new_look=True))
    apply_holm(results, spec)
    assert [r.verdict for r in results] == [A.SUPPORTED, A.INCONCLUSIVE, A.INCONCLUSIVE]
    assert results[0].level == pytest.approx(spec.alpha / 3)


def test_c6_reads_the_exact_scorer_when_both_arms_have_it_and_names_the_instrument():
    """The tagger's readings say tag weighting helps rare recall; the exact scorer (the benchmark's
    primary instrument) says it does not: the claim follows the scorer and says so."""
    results = fake_results()
    for r in results.runs.values():
        r.instruments = {"exact scorer": {"background": 1.0, "count": 0.99, "object": 0.98},
                         "domain tagger": {"recall": 0.8}}
    sweep_values(results, "scorer_image_recall_rare", lambda r: [
        0.4 + (0.001 * (i % 3) if r.variant.tag_weighting else 0.0) for i in range(G * PER)])
    sweep_values(results, "scorer_image_leakage_common", lambda r: [0.2] * (G * PER))
    rare = by_id(evaluate_claims(results, spec=at_kmax()))["C6-rare"]
    assert rare.effect.value == pytest.approx(0.001, abs=0.001) and "supported" not in rare.verdict
    assert "instrument: exact scorer (held-out real images: background 1.000, count 0.990, object 0.980)" in rare.detail
    plain = by_id(evaluate_claims(fake_results(), spec=at_kmax()))["C6-rare"]  # the tagger's readings: a 0.2 gain
    assert plain.effect.value == pytest.approx(0.2, abs=0.03) and plain.verdict == "supported"


def test_c2_obedience_and_overshoot_are_two_measurements_whose_words_match_the_images():
    """Images that show black (clipped error small) but overshoot far past it: obedience reads
    supported, overshoot contradicted — not one 'contradicted' under black images. Results without
    the overshoot share are not measured, with the reason."""
    results = fake_results()
    sweep_values(results, "brightness_err", lambda r: (0.02 + np.random.default_rng(r.seed).normal(
        scale=0.005, size=G * PER)).tolist())
    sweep_values(results, "image_overshoot_frac", lambda r: (0.6 + np.random.default_rng(r.seed + 9).normal(
        scale=0.02, size=G * PER)).tolist())
    c = by_id(evaluate_claims(results, spec=at_kmax()))
    assert c["C2-black-shown"].verdict == c["C2-white-shown"].verdict == "supported"
    assert c["C2-black-overshoot"].verdict == c["C2-white-overshoot"].verdict == "contradicted (unadjusted)"
    for key in [k for k in results.values if k[2] == "image_overshoot_frac"]:
        del results.values[key]
    over = by_id(evaluate_claims(results, spec=at_kmax()))["C2-black-overshoot"]
    assert over.verdict == "not measured" and "before overshoot was recorded" in over.decision.reason


def test_c5_optimum_is_the_local_parabola_and_a_grid_edge_is_censored():
    """The domain tagger's KID grows a thousandfold over a CFG grid: one quadratic over the whole grid
    is dragged by that tail (the positive control below), the parabola through the minimum and its
    neighbours is exact; a minimum at a grid edge is reported and flagged as censored."""
    from nai3eval.claims import Arms
    from nai3eval.claims.estimands import ESTIMANDS, cfg_optimum

    grid = (1.5, 2.5, 3.5, 5.0, 7.0, 10.0)
    rec = fake_variant("sdxl-eps", 0, np.random.default_rng(0), cfgs=grid).merge(
        fake_variant("v-ztsnr", 0, np.random.default_rng(1), cfgs=grid))
    base, treat = rec.runs[("sdxl-eps", 0)], rec.runs[("v-ztsnr", 0)]

    def kid(c: float, star: float) -> float:
        return 1e6 * (1 + (math.log(c) - math.log(star)) ** 2) * (1000.0 if c >= 7 else 1.0)

    def set_kid(run: Run, star: float) -> None:
        for p in rec.settings(run, "sweep"):
            rec.put(run, p, "kid_tagger", kid(p.cfg_scale, star))

    set_kid(base, 4.0)
    set_kid(treat, 3.0)
    assert cfg_optimum(rec, base, "kid_tagger", 14.6) == (pytest.approx(math.log(4.0), abs=1e-9), "")
    x, y = np.log(grid), np.array([kid(c, 4.0) for c in grid])
    a, b, _ = np.polyfit(x, y, 2)
    assert abs(-b / (2 * a) - math.log(4.0)) > 0.3  # the whole-grid quadratic misses it
    spec = next(c for c in load_claims_spec().claims if c.id == "C5")
    arms = Arms(5.0, rec, base, treat, {}, spec.point.baseline_start, spec.point.treatment_start)
    assert ESTIMANDS["log_cfg_optimum"](arms)[0] == pytest.approx(math.log(4.0) - math.log(3.0), abs=1e-9)
    assert arms.notes == [] and arms.bounds is None
    set_kid(treat, 1.0)  # the optimum lies below the grid: D = log CFG*_b − log CFG*_t is at least …
    arms = Arms(5.0, rec, base, treat, {}, spec.point.baseline_start, spec.point.treatment_start)
    assert ESTIMANDS["log_cfg_optimum"](arms)[0] == pytest.approx(math.log(4.0) - math.log(1.5), abs=1e-9)
    assert arms.bounds == (pytest.approx(math.log(4.0) - math.log(1.5), abs=1e-9), math.inf)
    assert arms.notes == ["v-ztsnr's KID minimum is at the grid edge CFG 1.5 (censored: its optimum lies below it)"]
    for p in rec.settings(base, "sweep"):  # … and with the baseline's beyond the top edge too, still a lower bound
        rec.put(base, p, "kid_tagger", 1e6 * (20.0 - p.cfg_scale))
    arms = Arms(5.0, rec, base, treat, {}, spec.point.baseline_start, spec.point.treatment_start)
    d = ESTIMANDS["log_cfg_optimum"](arms)[0]
    assert d == pytest.approx(math.log(10.0) - math.log(1.5), abs=1e-9) and arms.bounds == (d, math.inf)
    set_kid(base, 1.0)  # both below their grids: D could be anything
    arms = Arms(5.0, rec, base, treat, {}, spec.point.baseline_start, spec.point.treatment_start)
    ESTIMANDS["log_cfg_optimum"](arms)
    assert arms.bounds == (-math.inf, math.inf)


def test_censored_seeds_reduce_to_the_t_test_when_none_is_censored_and_are_never_the_edge_value():
    """The censored analysis is the t test when nothing is censored (scipy's one-sample t: interval
    and p-value); with censoring its 95 % interval covers the true mean about 95 % of the time where
    the edge-value t interval falls far short; fewer than two observed seeds decide nothing."""
    from scipy import stats

    from nai3eval.claims.censored import censored_two_stage, recipe_effect

    d = np.array([0.3, 0.55, 0.12, 0.41])
    e = censored_two_stage([A.SeedContrast(k, v, math.nan, 16) for k, v in enumerate(d)])
    t = stats.ttest_1samp(d, 0.1, alternative="greater")
    assert e.p_greater(0.1) == pytest.approx(t.pvalue, rel=1e-6)
    ci = stats.t.interval(0.95, len(d) - 1, d.mean(), stats.sem(d))
    assert e.interval(0.95) == (pytest.approx(ci[0], abs=1e-7), pytest.approx(ci[1], abs=1e-7))

    rng = np.random.default_rng(7)
    mu, cut, k, n = 0.3, 0.25, 8, 120  # ~60 % of the seeds lie above the edge
    covered = covered_edge = measured = 0
    for _ in range(n):
        x = rng.normal(mu, 0.2, k)
        seeds = [A.SeedContrast(i, min(v, cut), math.nan, 16, low=cut if v > cut else None,
                                high=math.inf if v > cut else None) for i, v in enumerate(x)]
        e = recipe_effect(seeds)
        if e.zero_width:
            assert "needs two seeds with observed, different values" in e.why
            continue
        measured += 1
        lo, hi = e.interval(0.95)
        covered += lo <= mu <= hi
        lo, hi = A.two_stage([A.SeedContrast(i, min(v, cut), math.nan, 16) for i, v in enumerate(x)]).interval(0.95)
        covered_edge += lo <= mu <= hi
    assert measured >= 0.8 * n
    assert 0.9 <= covered / measured and covered_edge / measured < 0.5


def test_a_censored_seed_is_shown_as_a_bound_and_decides_by_the_censored_analysis():
    """C5 with one seed's optimum below the grid: the report shows "≥ x (censored)", the effect is
    the censored model's μ̂ (above the edge-value mean), and the note says how it was analysed."""
    from nai3eval.claims import ClaimResult
    from nai3eval.claims.censored import recipe_effect
    from nai3eval.reporting.report import claim_row

    seeds = [A.SeedContrast(0, 0.9, math.nan, 16), A.SeedContrast(1, 0.7, math.nan, 16),
             A.SeedContrast(2, 0.5, math.nan, 16, low=0.5, high=math.inf)]
    with pytest.raises(ValueError, match="is a bound, not a value"):
        A.two_stage(seeds)  # the t test never takes a bound for a value
    e = recipe_effect(seeds)
    assert e.value > np.mean([0.9, 0.7, 0.5]) and "1 of 3 seeds censored" in e.why
    spec = next(c for c in load_claims_spec().claims if c.id == "C5")
    r = ClaimResult(spec, e, A.Superiority().decide(e, 0.025), 3, 3)
    row = claim_row(r, 0.025)
    assert "s2: ≥ 0.5 (censored)" in row["per_seed"] and "s0: 0.9" in row["per_seed"]
    assert r.to_dict()["per_seed"][2]["bounds"] == [0.5, None]
    # the rule on a censored effect comes out either way
    bound = A.SeedContrast(9, 0.5, math.nan, 16, low=0.5, high=math.inf)
    clear = recipe_effect([A.SeedContrast(k, v, math.nan, 16) for k, v in enumerate((0.9, 0.7, 0.8, 0.85))] + [bound])
    mixed = recipe_effect([A.SeedContrast(k, v, math.nan, 16) for k, v in enumerate((0.9, -0.7, 0.3, 0.1))] + [bound])
    assert A.Superiority().decide(clear, 0.025).verdict == A.SUPPORTED
    assert A.Superiority().decide(mixed, 0.025).verdict == A.INCONCLUSIVE


def test_every_estimand_reads_names_a_metric_or_probe_declares():
    """The spec names estimands; each estimand reads metric names: all of them are declared outputs,
    so a renamed metric cannot leave a claim reading nothing."""
    import dataclasses

    from nai3eval.claims import ESTIMANDS
    from nai3eval.metrics import declared_outputs
    from nai3eval.probes import PROBE_OUTPUTS

    known = {o.name for o in (*declared_outputs(), *PROBE_OUTPUTS)}
    read = set()
    for form in ESTIMANDS.values():
        for f in dataclasses.fields(form):
            v = getattr(form, f.name)
            if f.name == "metric":
                read.add(v)
            elif f.name == "metrics":
                read |= set(v)
    assert read and read <= known, read - known
    assert {"kid_tagger", "brightness_err", "wrong_count"} <= read


def test_a_check_with_nothing_to_check_is_not_measured_and_report_json_carries_booleans(tmp_path):
    """The smoke matrix has no ε + ZTSNR arm: C1-check reads "not measured" with the reason, never
    "check passed"; with the arm it passes or fails on the numbers, and report.json says so as a bool."""
    smoke = fake_results(seeds=(0,), arms=("sdxl-eps", "v-ztsnr"))
    c = by_id(evaluate_claims(smoke))["C1-check"]
    assert c.verdict == A.NOT_MEASURED and "no variant matches the baseline arm" in c.decision.reason
    assert c.check_passed is None
    c7 = by_id(evaluate_claims(smoke, data={}))["C7"]
    assert c7.verdict == A.NOT_MEASURED and "no training-set bucketing data" in c7.decision.reason
    # a model nai3 did not train (data=None): the checks of its training data do not apply at all
    assert not {"C7", "C8"} & set(by_id(evaluate_claims(smoke)))
    both = fake_results(seeds=(0,), arms=("eps-ztsnr", "v-ztsnr"))
    assert by_id(evaluate_claims(both))["C1-check"].verdict == A.CHECK_PASSED
    broken = fake_results(seeds=(0,), arms=("eps-ztsnr", "v-ztsnr"))
    eps = broken.runs[("eps-ztsnr", 0)]
    broken.put(eps, Setting("x0", math.inf), "nonfinite_frac", 0.0)  # ε finite at ∞: the check fails
    assert by_id(evaluate_claims(broken))["C1-check"].verdict == A.CHECK_FAILED
    o, folder = write_report(both, tmp_path, data={"bucketing": {"kept": [0.9], "kept_square": [0.6]}})
    doc = json.loads((folder / "report.json").read_text())
    passed = {x["id"]: x["passed"] for x in doc["checks"]}
    assert passed["C1-check"] is True and passed["C7"] is True and passed["C8"] is None


def test_a_claim_fed_by_an_instrument_that_failed_its_disturbance_test_is_not_measured(tmp_path):
    """C5 and C6-kid read the domain tagger's KID: with its disturbance test failed they read "not
    measured" and say why, whatever the numbers; with it passed they are decided as before."""
    def with_test(passed: bool):
        rec = fake_results(cfgs=(1.5, 2.5, 3.5, 5.0, 7.0, 10.0))
        for r in rec.runs.values():
            r.disturbance = {"domain tagger": {
                "passed": passed, "failures": [] if passed else ["blur is not monotone"], "split_kid": 0.01,
                "split_kid_std": 0.1, "pure_noise_kid": 0.9, "pure_noise_fd": 20.0, "monotone_noise": True,
                "monotone_blur": passed}}
        return rec

    ok = by_id(evaluate_claims(with_test(True), spec=at_kmax()))
    assert ok["C5"].verdict == A.SUPPORTED and ok["C6-kid"].verdict == A.SUPPORTED
    failed = with_test(False)
    bad = by_id(evaluate_claims(failed, spec=at_kmax()))
    for cid in ("C5", "C6-kid"):
        assert bad[cid].verdict == A.NOT_MEASURED
        reason = bad[cid].decision.reason
        assert "instrument failed its disturbance test: domain tagger (blur is not monotone)" in reason
    assert bad["C6"].verdict == A.NOT_MEASURED and bad["C2"].verdict == A.SUPPORTED  # nothing else moves
    _, folder = write_report(failed, tmp_path)
    doc = json.loads((folder / "report.json").read_text())
    assert doc["instruments"]["disturbance"]["domain tagger"]["passed"] is False
    assert "failed: blur is not monotone" in (folder / "report.md").read_text()


def test_a_registered_spec_version_is_pinned_and_an_edited_file_is_refused(tmp_path, capsys, monkeypatch):
    """The first use of a spec version registers its sha256 (and keeps the file as an artifact); the
    same file again passes; an edited file under the same version is refused (the CLI: exit 2,
    before any work); a raised version registers beside the old one."""
    from mlflow.tracking import MlflowClient

    from flows.cli import main
    from nai3eval.claims import load_claims_spec
    from nai3eval.claims.registry import SpecChanged, pin, registered

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("pinned", artifact_location=(tmp_path / "artifacts").as_uri())
    spec_file = tmp_path / "claims.yaml"
    spec_file.write_text(Path(load_claims_spec().path).read_text())
    spec = load_claims_spec(spec_file)
    assert pin(client, exp, spec) is True and pin(client, exp, spec) is False
    spec_file.write_text(spec_file.read_text().replace("margin: 0.10}", "margin: 0.20}", 1))
    edited = load_claims_spec(spec_file)
    assert edited.version == spec.version and edited.sha256 != spec.sha256
    with pytest.raises(SpecChanged, match=f"raise `version:` to {spec.version + 1}"):
        pin(client, exp, edited)
    spec_file.write_text(spec_file.read_text().replace(f"version: {spec.version}", f"version: {spec.version + 1}"))
    assert pin(client, exp, load_claims_spec(spec_file)) is True
    assert set(registered(client, exp)) == {spec.version, spec.version + 1}

    kept = client.search_runs([exp], "tags.`nai3.kind` = 'claims-spec'")
    assert len(kept) == 2  # the registered files themselves, not only their sha256
    got = Path(client.download_artifacts(kept[-1].info.run_id, "claims-spec/claims.yaml", str(tmp_path / "dl")))
    assert hashlib.sha256(got.read_bytes()).hexdigest() == spec.sha256

    # the command line: the store's ledger experiment holds another file under the shipped version → refused
    from nai3eval.claims.ledger import LEDGER_EXPERIMENT

    shipped = load_claims_spec()
    other = client.create_experiment(LEDGER_EXPERIMENT)
    client.set_experiment_tag(other, f"nai3.claims_spec.v{shipped.version}", "0" * 64)
    monkeypatch.chdir(tmp_path)
    assert main(["ablation", "smoke", "--tracking-uri", uri, "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "differs from the file registered as version" in err and "Traceback" not in err
    assert not (tmp_path / "w" / "variants").exists() and not list((tmp_path / "w").glob("benchmark-*"))


def test_a_smallest_effect_of_interest_makes_a_null_result_read_equivalent():
    """Issue 22: with a registered SESOI a superiority rule has three outcomes. A tight null effect
    reads "equivalent" (TOST inside ±SESOI, p checked against scipy's t by hand); the same null
    with a wide spread stays "inconclusive"; a real effect is "supported"."""
    from scipy import stats

    rule = A.Superiority("greater", 0.025, sesoi=0.05)

    def effect(values):
        return A.two_stage([A.SeedContrast(k, v, math.nan, 16) for k, v in enumerate(values)])

    tight = effect([0.004, -0.003, 0.001, 0.002, -0.001])
    d = rule.decide(tight)
    m, se, df = tight.value, tight.se, tight.df
    by_hand = max(stats.t.sf((m + 0.05) / se, df), stats.t.cdf((m - 0.05) / se, df))
    assert d.verdict == A.EQUIVALENT and d.p_equivalence == pytest.approx(by_hand, rel=1e-9)
    assert rule.decide(effect([0.2, -0.15, 0.05])).verdict == A.INCONCLUSIVE
    assert rule.decide(effect([0.31, 0.29, 0.30])).verdict == A.SUPPORTED
    assert A.Superiority("greater", 0.025).decide(tight).verdict == A.INCONCLUSIVE  # no SESOI: no such word


def test_c1_sampled_counts_a_non_finite_sample_as_the_worst_error():
    """A non-finite sample is an error of 1.0 in C1-sampled (stated in the spec), never the grey
    the pixel map shows: D_k equals the by-hand prompt mean with 1.0 put in."""
    from nai3eval.claims.estimands import ESTIMANDS, Arms

    rec = fake_results(seeds=(0,), arms=("eps-ztsnr", "v-ztsnr"))
    base, treat = (next(r for r in rec.runs.values() if r.name == n) for n in ("eps-ztsnr", "v-ztsnr"))
    x = Arms(5.0, rec, base, treat, {}, "max", "max")
    sb, st = rec.sweep_at(base, 5.0, "max"), rec.sweep_at(treat, 5.0, "max")
    b, pid = rec.per_image(base, sb, "brightness_err")
    finite = np.asarray(rec.per_image(base, sb, "finite")[0], dtype=bool)
    assert (~finite).any()
    d = np.where(finite, b, 1.0) - rec.per_image(treat, st, "brightness_err")[0]
    by_hand = np.mean([d[pid == p].mean() for p in np.unique(pid)])
    assert ESTIMANDS["brightness_error_failing_nonfinite"](x)[0] == pytest.approx(by_hand, rel=1e-12)
    assert ESTIMANDS["brightness_error"](x)[0] != pytest.approx(by_hand, rel=1e-3)


def test_the_null_twin_is_its_own_arm():
    """The weekly's v-ztsnr-twin (seed_offset) is selected only by the A0 claims' treatment arm;
    every v + ZTSNR claim still selects v-ztsnr alone."""
    twin = VariantConfig(name="v-ztsnr-twin", prediction="v", ztsnr=True, seed_offset=1000)
    plain = VariantConfig(name="v-ztsnr", prediction="v", ztsnr=True)
    spec = load_claims_spec()
    a0 = spec.by_id("A0-brightness").arms
    assert matches(twin, a0["treatment"]) and not matches(plain, a0["treatment"])
    assert matches(plain, a0["baseline"]) and not matches(twin, a0["baseline"])
    assert twin.config_hash() != plain.config_hash()


_PIN_RACER = """
import sys, time
from pathlib import Path
import nai3eval.claims.spec as spec_module
from flows import pipeline
from nai3eval.claims import registry
from nai3eval.claims.registry import SpecChanged
uri, exp, work, spec_file, go = sys.argv[1:]
spec_module.DEFAULT_SPEC = Path(spec_file)
read = registry.registered
def slow_read(client, experiment_id):  # a busy server: the answer arrives 0.5 s after the read
    answer = read(client, experiment_id)
    time.sleep(0.5)
    return answer
registry.registered = slow_read
ws = pipeline.Workspace(Path(work), uri, exp)
while not Path(go).exists():
    time.sleep(0.005)
try:
    print("pinned", pipeline.pin_claims_spec(ws).sha256)
except SpecChanged:
    print("refused")
"""


def test_concurrent_registrations_of_one_version_leave_exactly_one_file_registered(tmp_path):
    """Three processes register three different files under the same version in one store at
    the same moment, on a slow server (each read answers 0.5 s late): registering is read-then-write
    on experiment tags, so it runs under the experiment's claims lock. Exactly one is registered;
    the others are refused, and the file registered is the winner's (without the lock and the
    read-back, all three "register")."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from nai3eval.claims import load_claims_spec
    from nai3eval.claims.ledger import LEDGER_EXPERIMENT
    from nai3eval.claims.registry import registered

    uri = f"sqlite:///{tmp_path}/m.db"
    exp = MlflowClient(uri).create_experiment("race")
    text = Path(load_claims_spec().path).read_text()
    files = []
    for i in range(3):
        f = tmp_path / f"claims-{i}.yaml"
        f.write_text(text + f"\n# variant {i}\n")
        files.append(f)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _PIN_RACER, uri, exp, str(tmp_path / "w"), str(f), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_API_URL": ""}) for f in files]
    time.sleep(12)  # every racer imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    lines = [o.strip().splitlines()[-1] for o, _ in outs]
    winners = [line.split()[1] for line in lines if line.startswith("pinned")]
    assert len(winners) == 1 and lines.count("refused") == 2, lines
    ledger_exp = MlflowClient(uri).get_experiment_by_name(LEDGER_EXPERIMENT).experiment_id
    assert registered(MlflowClient(uri), ledger_exp) == {load_claims_spec(files[0]).version: winners[0]}
