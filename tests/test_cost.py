"""The cost of a decision: an open claim's design continued from the seeds it has (against a
numerical integral over the one seed still to come), and the CPU-hour sums per claim and until
every primary is decided (against hand arithmetic)."""
import math

import numpy as np
import pytest
from scipy import stats

from flows.cost import ClaimCost, UnitCost, claim_costs, lines, metrics, stage_table, until_primaries_decided
from nai3eval.claims.planning import Design, simulate


def test_an_open_claims_last_look_matches_the_integral_over_its_last_seed():
    """Three seeds measured, one look left (K_max = 4): P(supported) is the probability that the
    fourth seed puts the t statistic over the last look's critical value — a one-dimensional
    integral over that seed, computed here on a fine grid."""
    design = Design(first_look=3, k_max=4, alpha=0.025, sesoi=None)
    observed = np.array([0.08, 0.10, 0.07])
    theta, sd = 0.09, 0.1
    sim = simulate(design, theta, sd, 200_000, np.random.default_rng(1), futility=False, observed=observed)
    level = design.levels()[-1]
    c = stats.t.isf(level, 3)
    x = np.linspace(theta - 10 * sd, theta + 10 * sd, 400_001)
    d = np.concatenate([np.broadcast_to(observed, (len(x), 3)), x[:, None]], axis=1)
    t = d.mean(1) / (d.std(1, ddof=1) / 2)
    density = stats.norm.pdf(x, theta, sd)
    exact = float(np.sum(density * (t > c)) * (x[1] - x[0]))
    assert 0.05 < exact < 0.95  # a case where the last seed matters
    assert sim.power == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 200_000))


def test_the_look_the_observed_seeds_took_is_not_taken_again():
    """Three seeds that would cross at K = 3: that look left the claim open (as the ledger says), so
    the continuation's first chance is K = 4, where seeds like them cross."""
    design = Design(first_look=3, k_max=6, alpha=0.025, sesoi=None)
    sim = simulate(design, 1.0, 0.01, 500, np.random.default_rng(0), futility=False,
                   observed=np.array([1.0, 1.01, 0.99]))
    assert np.all(sim.stop_k == 4) and sim.supported.all()
    fresh = simulate(design, 1.0, 0.01, 500, np.random.default_rng(0), futility=False)
    assert np.all(fresh.stop_k == 3)


def test_a_claim_with_every_seed_measured_has_nothing_left_to_simulate():
    design = Design(first_look=3, k_max=4, alpha=0.025, sesoi=0.1)
    sim = simulate(design, 0.1, 0.05, 1000, np.random.default_rng(0), observed=np.array([0.1, 0.2, 0.1, 0.0]))
    assert np.all(sim.stop_k == 4) and not sim.supported.any()


def test_the_same_draws_without_observed_seeds_are_the_registered_design():
    design = Design(first_look=3, k_max=6, alpha=0.0125, sesoi=0.1)
    a = simulate(design, 0.1, 0.08, 3000, np.random.default_rng(5))
    b = simulate(design, 0.1, 0.08, 3000, np.random.default_rng(5), observed=np.array([]))
    assert a.power == b.power and a.expected_k == b.expected_k


def _units():
    # arm a: train 100 s × 2 threads + eval 50 s × 1 = 250 CPU-s per seed; arm b: 60 × 1 + 40 × 1 = 100
    return [UnitCost("a", k, 100.0, 2, 50.0, 1) for k in range(3)] + [UnitCost("b", k, 60.0, 1, 40.0, 1)
                                                                       for k in range(3)]


def test_claim_costs_add_up_the_seeds_of_the_claims_arms():
    report = [{"id": "C1", "role": "primary", "verdict": "inconclusive", "arms": {"baseline": "a", "treatment": "b"},
               "per_seed": [{"seed": 0}, {"seed": 1}, {"seed": 2}], "more_seeds": [2.0, 1.0]},
              {"id": "C2", "role": "primary", "verdict": "supported", "arms": {"baseline": "b", "treatment": "b"},
               "per_seed": [{"seed": 0}, {"seed": 2}], "more_seeds": [0.0, 0.0]},
              {"id": "C9", "role": "secondary", "verdict": "interval only", "arms": None, "per_seed": []}]
    c1, c2, c9 = claim_costs(report, _units())
    assert c1.cpu_h == pytest.approx(3 * 350 / 3600) and c1.seed_cpu_h == pytest.approx(350 / 3600)
    assert c1.to_go_h == pytest.approx((2 * 350 / 3600, 350 / 3600))
    assert c2.arms == ("b",) and c2.cpu_h == pytest.approx(2 * 100 / 3600) and c2.to_go_h == (0.0, 0.0)
    assert c9.cpu_h == 0 and c9.to_go_h is None
    stages = stage_table(_units())
    assert [r["cpu_h_per_seed"] for r in stages] == pytest.approx([250 / 3600, 100 / 3600])
    # the primaries: arm a trains 2 more seeds (C1), arm b max(2, 0) = 2
    assert until_primaries_decided(stages, [c1, c2]) == pytest.approx((2 * 350 / 3600, 350 / 3600))
    assert until_primaries_decided(stages, [c1, c2, ClaimCost("C5", "primary", "", ("a",), 3, 0, 0, None)]) is None
    m = metrics(stages, [c1, c2, c9])
    assert m["cost/a/cpu_hours_per_seed"] == pytest.approx(250 / 3600) and "cost/claims/C9/expected_cpu_hours_to_go" \
        not in m and m["cost/primaries_cpu_hours_to_go"] == pytest.approx(700 / 3600)
    elsewhere = ClaimCost("C2", "primary", "decided in paper", ("b",), 2, 0.1, 0.03, None)
    assert until_primaries_decided(stages, [elsewhere]) is None
    assert "decides no primary" in lines(stages, [elsewhere])[-1]
    assert until_primaries_decided(stages, [c1, elsewhere]) == pytest.approx((2 * 350 / 3600, 350 / 3600))
    text = "\n".join(lines(stages, [c1, c2, c9], 12.0))
    assert "report: 12 s" in text and "0.19 / 0.10 h" in text and text.splitlines()[-1].startswith("expected CPU-hours")
