"""α spent across the looks: the boundaries match the published constants and, simulated from
independent seeds, the null crosses at some look with probability α — where testing each look at
the full α does not."""
import numpy as np
import pytest

from nai3eval.claims.sequential import critical_values, nominal_alphas


@pytest.mark.parametrize("boundary, looks, want", [
    ("pocock", (1, 2), 2.178), ("pocock", (1, 2, 3), 2.289),
    ("obrien_fleming", (1, 2), 1.977), ("obrien_fleming", (1, 2, 3), 2.004)])
def test_equally_spaced_boundaries_match_jennison_and_turnbull(boundary, looks, want):
    """J&T (2000) Tables 2.1 and 2.3, two-sided α = 0.05 (one-sided 0.025): C_P(K) and C_B(K)."""
    c = critical_values(looks, 0.025, boundary)
    assert c[-1] == pytest.approx(want, abs=1.5e-3)
    if boundary == "pocock":
        assert len(set(np.round(c, 9))) == 1
    else:  # c_k = C_B·√(K/k)
        assert c == pytest.approx([want * np.sqrt(len(looks) / k) for k in looks], abs=2e-3)


@pytest.mark.parametrize("boundary", ["pocock", "obrien_fleming"])
def test_the_null_crosses_at_some_look_with_probability_alpha(boundary):
    """Seeds drawn independently; the statistic at a look is the standardised sum of its seeds."""
    looks, alpha, n = (3, 5), 0.025, 400_000
    rng = np.random.default_rng(11)
    s = np.cumsum(rng.standard_normal((n, looks[-1])), axis=1)
    z = np.stack([s[:, k - 1] / np.sqrt(k) for k in looks], axis=1)
    c = np.asarray(critical_values(looks, alpha, boundary))
    crossed = (z >= c).any(axis=1).mean()
    assert crossed == pytest.approx(alpha, abs=4 * np.sqrt(alpha * (1 - alpha) / n))
    naive = (z >= 1.959964).any(axis=1).mean()  # each look at the full α
    assert naive > 0.035
    a = nominal_alphas(looks, alpha, boundary)
    assert all(x < alpha for x in a) and sum(a) >= alpha  # each look pays; together at least α


def test_claims_validate_runs_the_specs_rules_and_ends_with_the_family_wise_error(tmp_path):
    """The command simulates the shipped spec; a positive control at effect 0 is the null, so its
    detection rate is the one-sided false-positive rate; a huge effect is always detected."""
    import subprocess
    import sys

    from nai3eval.claims import load_claims_spec
    from nai3eval.claims.validate import validate

    spec = load_claims_spec()
    null = validate(spec, tau=0.02, s_w=0.01, n=1500, effect=0.0, seed=3)
    assert null.detection <= spec.alpha + 3 * np.sqrt(spec.alpha / 1500)
    assert null.familywise_error <= spec.alpha + 3 * null.mc_se and 0.90 <= null.coverage <= 0.99
    assert validate(spec, tau=0.02, s_w=0.01, n=200, effect=1.0).detection == 1.0
    p = subprocess.run([sys.executable, "-m", "flows.cli", "claims", "validate", "--n", "400"], capture_output=True,
                       text=True, timeout=300, env={"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1].startswith("family-wise error ")


def test_holm_is_one_family_across_looks_with_m_fixed_by_the_spec():
    """A primary at K = 3 while the others sit at K = 5 (or are not measured) is not a family of
    its own: its first Holm step is the K = 3 level of a boundary for α/3, not for α."""
    from nai3eval.claims.sequential import alpha_at, holm_levels

    looks, alpha = (3, 5), 0.025
    alone = holm_levels([0.004, float("nan"), float("nan")], [3, 5, 5], 3, looks, alpha)
    assert alone[0] == pytest.approx(alpha_at(3, looks, alpha / 3)) and alone[0] < 0.004
    assert alpha_at(3, looks, alpha) > 0.004  # what a family of one would have allowed
    steps = holm_levels([0.0001, 0.001, 0.3], [5, 5, 5], 3, looks, alpha)
    assert steps[:2] == pytest.approx([alpha_at(5, looks, alpha / 3), alpha_at(5, looks, alpha / 2)])
    assert steps[2] == pytest.approx(alpha_at(5, looks, alpha))
    retained = holm_levels([0.2, 0.001], [5, 5], 2, looks, alpha)
    assert retained[1] > 0 and retained[0] == pytest.approx(alpha_at(5, looks, alpha))
    assert holm_levels([0.5, 0.001], [5, 5], 2, looks, alpha)[0] > 0  # the step after a rejection
    assert holm_levels([0.5, 0.4], [5, 5], 2, looks, alpha)[0] == 0.0  # after the first retained: 0
