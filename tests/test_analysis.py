"""The harness validates itself: the two-stage analysis and the decision rules on simulated data
with a known truth — A/A, a positive control, coverage — and each rule's every verdict."""
import math

import numpy as np
import pytest

from nai3eval.claims import statistics as A


def test_jackknife_of_a_mean_of_prompt_means_is_the_classical_standard_error():
    rng = np.random.default_rng(0)
    means = rng.normal(size=12)
    value, se, g = A.jackknife(range(12), lambda kept: float(means[kept].mean()))
    assert g == 12 and value == pytest.approx(means.mean())
    assert se == pytest.approx(means.std(ddof=1) / math.sqrt(12), rel=1e-12)


def test_paired_contrast_clusters_by_prompt_and_skips_non_finite_pairs():
    a = [1.0, 3.0, 10.0, np.nan, 5.0, 7.0]
    b = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    pid = [0, 0, 1, 1, 2, 2]
    value, se, g = A.paired_mean_contrast(a, b, pid)
    prompt_means = np.array([2.0, 10.0, 5.0])  # prompt 1 keeps its finite pair only
    assert g == 3 and value == pytest.approx(prompt_means.mean())
    assert se == pytest.approx(prompt_means.std(ddof=1) / math.sqrt(3))


def _simulate(rng, effect: float, k: int = 3, prompts: int = 16, seeds_per_prompt: int = 4, tau: float = 0.3,
              prompt_sd: float = 1.0, noise: float = 0.5) -> A.Effect:
    """Per seed: arm a and arm b on the same prompts and noise (paired); a seed-level random effect of
    sd τ on the contrast (the recipe's between-seed spread), prompt effects shared by both arms."""
    contrasts = []
    for seed in range(k):
        u = rng.normal(scale=tau)
        prompt = np.repeat(rng.normal(scale=prompt_sd, size=prompts), seeds_per_prompt)
        pid = np.repeat(np.arange(prompts), seeds_per_prompt)
        b = prompt + rng.normal(scale=noise, size=prompt.size)
        a = prompt + effect + u + rng.normal(scale=noise, size=prompt.size)
        contrasts.append(A.SeedContrast(seed, *A.paired_mean_contrast(a, b, pid)))
    return A.two_stage(contrasts)


def test_a_a_comparison_is_declared_different_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    repeats = 1000
    rule = A.Superiority()
    different = sum(rule.decide(_simulate(rng, 0.0)).verdict in (A.SUPPORTED, A.CONTRADICTED) for _ in range(repeats))
    rate = different / repeats
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / repeats), rate  # two-sided 5 %, with binomial slack


def test_a_known_injected_shift_is_detected():
    rng = np.random.default_rng(2)
    sd_d = math.sqrt(0.3**2 + 0.5**2 * 2 / 64)  # sd of D_k: seed effect plus within-run noise
    detected = [A.Superiority().decide(_simulate(rng, 5 * sd_d)).verdict == A.SUPPORTED for _ in range(300)]
    assert np.mean(detected) >= 0.9  # t power at K = 3, r = 5 is ≈ 0.98 (docs/claims.md)


def test_two_stage_interval_covers_the_true_effect_at_the_nominal_rate():
    rng = np.random.default_rng(3)
    truth, hits, repeats = 0.4, 0, 1000
    for _ in range(repeats):
        e = _simulate(rng, truth)
        lo, hi = e.interval(0.95)
        hits += lo <= truth <= hi
        assert e.level == A.RECIPE and e.n_seeds == 3
    assert 0.93 <= hits / repeats <= 0.97


def test_two_stage_reports_within_and_between_seed_spread():
    cs = [A.SeedContrast(0, 1.0, 0.1, 16), A.SeedContrast(1, 1.4, 0.1, 16), A.SeedContrast(2, 0.9, 0.1, 16)]
    e = A.two_stage(cs)
    d = np.array([1.0, 1.4, 0.9])
    assert e.value == pytest.approx(d.mean()) and e.se == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert e.df == 2 and e.s_w == pytest.approx(0.1)
    assert e.tau == pytest.approx(math.sqrt(d.var(ddof=1) - 0.01))
    assert A.two_stage(cs[:2]).level == A.CHECKPOINT and A.two_stage(cs[:1]).df == 15


def _effect(value: float, se: float, df: float = 10) -> A.Effect:
    return A.Effect(value, se, df, A.RECIPE)


@pytest.mark.parametrize("rule,cases", [
    (A.Superiority(), {A.SUPPORTED: _effect(1.0, 0.1), A.CONTRADICTED: _effect(-1.0, 0.1),
                       A.INCONCLUSIVE: _effect(0.05, 0.1), A.NOT_MEASURED: _effect(1.0, 0.0)}),
    (A.Superiority("less"), {A.SUPPORTED: _effect(-1.0, 0.1), A.CONTRADICTED: _effect(1.0, 0.1),
                             A.INCONCLUSIVE: _effect(0.0, 0.1), A.NOT_MEASURED: _effect(1.0, math.nan)}),
    (A.Equivalence(0.1), {A.EQUIVALENT: _effect(0.0, 0.01), A.CONTRADICTED: _effect(1.0, 0.1),
                          A.INCONCLUSIVE: _effect(0.05, 0.1), A.NOT_MEASURED: _effect(0.0, 0.0)}),
    (A.NonInferiority(0.1), {A.SUPPORTED: _effect(-0.5, 0.1), A.CONTRADICTED: _effect(1.0, 0.1),
                             A.INCONCLUSIVE: _effect(0.1, 0.1), A.NOT_MEASURED: _effect(0.0, 0.0, df=0)}),
])
def test_every_rule_can_produce_each_of_its_verdicts(rule, cases):
    for verdict, effect in cases.items():
        assert rule.decide(effect).verdict == verdict, (rule, verdict, effect)


def test_checks_and_zero_width_intervals_never_pose_as_evidence():
    assert A.check(True).verdict == A.CHECK_PASSED and math.isnan(A.check(False).p_value)
    one_seed_identical = A.two_stage([A.SeedContrast(0, 0.3, 0.0, 1)])
    assert one_seed_identical.zero_width and A.Superiority().decide(one_seed_identical).verdict == A.NOT_MEASURED
    assert A.two_stage([A.SeedContrast(k, 0.3, 0.01, 8) for k in range(3)]).zero_width  # identical D_k


def test_holm_thresholds_match_the_step_down_by_hand():
    levels = A.holm([0.01, 0.04, 0.03, math.nan, 0.005], alpha=0.05)
    # sorted: 0.005 (α/4), 0.01 (α/3), 0.03 (α/2 = 0.025: not below → stop), 0.04 (retained)
    assert levels[4] == pytest.approx(0.05 / 4) and levels[0] == pytest.approx(0.05 / 3)
    assert levels[2] == pytest.approx(0.05 / 2) and levels[1] == 0.0 and math.isnan(levels[3])
    decisions = [A.Superiority(alpha=1).decide(_effect(v, 0.1), alpha=lv) for v, lv in ((0.5, levels[0]),
                                                                                          (0.2, levels[1]))]
    assert decisions[0].verdict == A.SUPPORTED and decisions[1].verdict == A.INCONCLUSIVE
