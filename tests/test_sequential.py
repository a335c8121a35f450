"""α spent across the looks: the Lan–DeMets boundaries match published values; the levels the rules
use let the null cross at some look with probability α, whichever looks are taken — where testing
each look at the full α, or adding looks to a fixed design, does not."""
import math

import numpy as np
import pytest
from scipy import stats

from nai3eval.claims.sequential import critical_values, holm_levels, level_at, nominal_levels, spent


@pytest.mark.parametrize("spending, want", [
    ("obrien_fleming", (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)),
    ("pocock", (2.4380, 2.4268, 2.4101, 2.3966, 2.3859))])
def test_lan_demets_boundaries_match_the_published_values(spending, want):
    """Five equally spaced looks, two-sided α = 0.05 (one-sided 0.025): Lan & DeMets (1983) spending
    functions, as tabulated by gsDesign/ldbounds (Jennison & Turnbull 2000, Table 7.6 for the
    O'Brien–Fleming type)."""
    c = critical_values((1, 2, 3, 4, 5), 5, 0.025, spending)
    assert c == pytest.approx(want, abs=1.5e-3)
    assert spent(1.0, 0.025, spending) == pytest.approx(0.025)


def _null_t_crossing(looks, k_max, alpha, n=200_000, seed=11):
    """Independent draws (not the module's): P(the t test crosses some look's nominal level)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, k_max))
    crossed = np.zeros(n, dtype=bool)
    for k, level in zip(looks, nominal_levels(tuple(looks), k_max, alpha)):
        x = d[:, :k]
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(k))
        crossed |= stats.t.sf(t, k - 1) < level
    return crossed.mean(), 4 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("looks", [tuple(range(3, 11)), (3, 5, 10), (4, 7, 8, 10), (10,)])
def test_the_null_crosses_some_look_with_probability_alpha_whatever_looks_are_taken(looks):
    rate, tol = _null_t_crossing(looks, 10, 0.025)
    assert rate == pytest.approx(0.025, abs=tol)


def test_each_look_at_the_full_alpha_or_fixed_looks_extended_let_the_null_through():
    """The failures spending prevents: every look at 0.025 — and v6's fixed design (3, 5) with a
    look at 10 added later at its own 0.025 — cross well above α."""
    rng = np.random.default_rng(5)
    d = rng.standard_normal((200_000, 10))
    naive = np.zeros(len(d), dtype=bool)
    for k in range(3, 11):
        x = d[:, :k]
        naive |= stats.t.sf(x.mean(1) / (x.std(1, ddof=1) / math.sqrt(k)), k - 1) < 0.025
    assert naive.mean() > 0.06
    rate, tol = _null_t_crossing((3, 5, 10), 10, 0.025)
    assert rate < 0.025 + tol  # the same three looks under spending stay at α


def test_the_first_look_spends_exactly_its_share_and_levels_increase():
    lv = nominal_levels(tuple(range(3, 11)), 10, 0.025)
    assert lv[0] == pytest.approx(spent(0.3, 0.025))
    assert all(a < b for a, b in zip(lv, lv[1:])) and lv[-1] < 0.025
    assert level_at((3, 4), 10, 0.025) == pytest.approx(lv[1])


def test_holm_is_one_family_across_looks_with_m_fixed_by_the_spec():
    """A primary at K = 3 while the others are not measured is not a family of its own: its first
    Holm step is the K = 3 level of the spending for α/3, not for α."""
    alpha, h = 0.025, (3, 4, 5)
    alone = holm_levels([5e-4, float("nan"), float("nan")], [h, None, None], [10, 10, 10], 3, alpha)
    assert alone[0] == pytest.approx(level_at(h, 10, alpha / 3)) and alone[0] < 5e-4 < level_at(h, 10, alpha)
    steps = holm_levels([1e-6, 1e-5, 0.3], [h, h, h], [10] * 3, 3, alpha)
    assert steps == pytest.approx([level_at(h, 10, alpha / 3), level_at(h, 10, alpha / 2), level_at(h, 10, alpha)])
    assert holm_levels([0.5, 0.4], [h, h], [10, 10], 2, alpha)[0] == 0.0  # after the first retained: 0
    assert holm_levels([0.5, 0.4], [h, h], [10, 10], 2, alpha, stop=False)[0] == pytest.approx(level_at(h, 10, alpha))
