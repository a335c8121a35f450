"""Verdicts a statistician signs (issue 32): each rule of the looks comes out each way — both
directions guarded, the null twin as a harness check, looks that spend α by the looks taken,
futility, leave-one-seed-out robustness, the ledger's identity, honest planning numbers, intervals
at the deciding level — and the simulated procedure is the report's own."""
import hashlib
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nai3eval.claims import ClaimResult, apply_holm, evaluate_claims, load_claims_spec
from nai3eval.claims import statistics as A
from nai3eval.claims.censored import recipe_effect
from nai3eval.claims.ledger import identity
from nai3eval.claims.looks import finish, take_look
from nai3eval.claims.planning import Design, simulate, variance_ratio_interval
from nai3eval.claims.sequential import level_at
from nai3eval.claims.validate import CON, EQV, FUT, INC, SUP, family, validate

from .test_claims import by_id, fake_results  # the synthetic results whose truth is set there

SPEC = load_claims_spec()
REPO = Path(__file__).resolve().parents[1]


def seeds(*values):
    return [A.SeedContrast(k, float(v), math.nan, 16) for k, v in enumerate(values)]


def result(cid: str, values, spec=SPEC) -> ClaimResult:
    e = recipe_effect(seeds(*values))
    return ClaimResult(spec.by_id(cid), e, A.Decision(A.INCONCLUSIVE, math.nan), len(values), planning=spec,
                       ident=(spec.block_sha256(spec.by_id(cid)), "cfg", "recipe"))


def look(cid: str, values, ledger=None, spec=SPEC) -> ClaimResult:
    """One claim through the report's steps (take_look, Holm for a primary, finish)."""
    r = result(cid, values, spec)
    take_look(spec, r, len(values), ledger or {}, identity(cid, *r.ident))
    if r.spec.role == "primary":
        apply_holm([r], spec)
    finish(spec, r)
    return r


def with_p(p: float, k: int = 10, sign: float = 1.0) -> A.Effect:
    """An effect of sign ``sign`` on k − 1 degrees of freedom whose one-sided p in that direction is ``p``."""
    return A.Effect(sign, 1.0 / stats.t.isf(p, k - 1), k - 1, A.RECIPE, tuple(seeds(*([1.0] * k))))


# 1. both directions in one family ---------------------------------------------------------------------

def test_contradicted_primaries_are_guarded_by_holm_and_others_say_unadjusted():
    """At a single look at K_max (the level is the whole α): opposite-direction p = 0.001, 0.02, 0.02
    — each would read contradicted alone at 0.025; Holm keeps only the first. A secondary's
    contradiction says it is unadjusted."""
    rs = []
    for cid, p in (("C1", 0.001), ("C2", 0.02), ("C3-linear", 0.02)):
        rule = A.Superiority(SPEC.by_id(cid).rule.direction)
        e = with_p(p, sign=-1.0 if rule.direction == "greater" else 1.0)  # the opposite direction's p is p
        d = rule.decide(e, SPEC.alpha)
        assert d.verdict == A.CONTRADICTED
        rs.append(ClaimResult(SPEC.by_id(cid), e, d, 10, look=10, history=(10,), k_max=10, new_look=True))
    apply_holm(rs, SPEC)
    assert [r.decision.verdict for r in rs] == [A.CONTRADICTED, A.INCONCLUSIVE, A.INCONCLUSIVE]
    assert rs[0].level == pytest.approx(SPEC.alpha / 3) and "opposite direction" in rs[0].decision.reason
    sec = look("C2-package", [-0.3, -0.31, -0.29, -0.30, -0.305, -0.3, -0.31, -0.29, -0.3, -0.3])
    assert sec.verdict == "contradicted (unadjusted)"
    assert look("C2-package", [0.3, 0.31, 0.29, 0.30, 0.305, 0.3, 0.31, 0.29, 0.3, 0.3]).verdict == A.SUPPORTED


# 2. the null twin, sized as a harness check --------------------------------------------------------------

def test_the_null_twin_is_sized_by_the_claims_sesoi_and_reads_each_way():
    assert SPEC.margin(SPEC.by_id("A0-brightness")) == SPEC.by_id("C2").rule.sesoi
    assert SPEC.margin(SPEC.by_id("A0-rare")) == SPEC.by_id("C6-rare").rule.sesoi
    alike = look("A0-brightness", [0.001, -0.002, 0.0, 0.001, -0.001, 0.002, -0.001, 0.0, 0.001, -0.001])
    assert alike.verdict == A.EQUIVALENT
    fault = look("A0-brightness", [0.04, 0.041, 0.039, 0.04, 0.042, 0.038, 0.04, 0.041, 0.039, 0.04])
    assert fault.verdict == A.CONTRADICTED and "harness fault" in fault.decision.reason
    wide = look("A0-brightness", [0.15, -0.18, 0.06, -0.03, 0.24, -0.21, 0.09, 0.0, -0.12, 0.03])
    assert wide.verdict == A.INCONCLUSIVE


def test_the_null_twins_power_against_a_fault_matches_a_simulation():
    r = look("A0-brightness", [0.01, -0.02, 0.015, -0.005])  # K = 4: the spread the report plans with
    power = r.twin_power()
    k = SPEC.k_max
    from nai3eval.claims.planning import sd_upper
    from nai3eval.claims.sequential import nominal_levels

    e = r.effect
    sd = sd_upper(e.se * 2, 4, SPEC.futility.sd_confidence)
    last = nominal_levels(tuple(range(3, k + 1)), k, SPEC.alpha / 2)[-1]
    x = np.random.default_rng(3).normal(0.05, sd, (200_000, k))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(k))
    by_sim = float((np.minimum(stats.t.sf(t, k - 1), stats.t.cdf(t, k - 1)) < last).mean())
    assert power == pytest.approx(by_sim, abs=0.006)


# 3. looks by α spending -----------------------------------------------------------------------------------

def test_a_look_spends_by_the_looks_taken_and_a_not_measured_look_spends_nothing():
    first = look("C2-package", [0.3, 0.2, 0.1])
    assert first.history == (3,) and first.level == pytest.approx(level_at((3,), 10, SPEC.alpha))
    spent = [_entry(first)]
    assert spent[0].spent
    nxt = look("C2-package", [0.3, 0.2, 0.1, 0.25], ledger={e.key: e for e in spent})
    assert nxt.history == (3, 4) and nxt.level == pytest.approx(level_at((3, 4), 10, SPEC.alpha))
    skipped = _entry(first, verdict=A.NOT_MEASURED)
    again = look("C2-package", [0.3, 0.2, 0.1, 0.25], ledger={skipped.key: skipped})
    assert again.history == (4,) and again.level == pytest.approx(level_at((4,), 10, SPEC.alpha))
    same = look("C2-package", [0.3, 0.2, 0.1], ledger={e.key: e for e in spent})
    assert not same.new_look and same.ledger == spent[0]  # a look at K = 3 is never taken twice


def _entry(r: ClaimResult, **change):
    from nai3eval.claims.result import entry_for

    e = entry_for(r, SPEC, "2026-12-07T00:00:00Z", "run")
    return e.__class__(**{**e.__dict__, **change})


# 4. non-binding futility --------------------------------------------------------------------------------

def test_a_claim_that_cannot_reach_its_sesoi_by_k_max_is_futile_and_ends():
    hopeless = look("C3-linear", [0.02, -0.03, 0.05])  # C3-linear: 'less', sesoi 0.05; D̄ on the wrong side
    assert hopeless.verdict == A.FUTILE and hopeless.final and hopeless.conditional_power < 0.10
    assert "conditional power at K_max = 10" in hopeless.decision.reason
    hopeful = look("C3-linear", [-0.06, -0.04, -0.05])
    assert hopeful.decision.verdict in (A.INCONCLUSIVE, A.SUPPORTED) and not hopeful.final
    assert hopeful.conditional_power > 0.10


# 5. robustness to one seed -----------------------------------------------------------------------------

def test_a_verdict_that_does_not_survive_dropping_one_seed_stays_open_until_k_max():
    carried = look("C2-package", [1.0, 1.1, 0.9, 1.05])  # t₃ ≈ 24 crosses; any three alone do not
    assert carried.decision.verdict == A.SUPPORTED and carried.robust is False and not carried.final
    assert carried.verdict == "supported (open: not robust to dropping one seed)"
    steady = look("C2-package", [1.0, 1.001, 0.999, 1.0005])
    assert steady.verdict == A.SUPPORTED and steady.robust and steady.final
    # a single look at K_max = 4 is at the whole α: t₃ = 4.4 crosses, dropping 1.2 leaves t₂ = 3.2 < 4.3
    at_max = look("C2-package", [1.0, 1.2, 0.3, 1.1], spec=SPEC.model_copy(update={"k_max": 4}))
    assert at_max.final and at_max.robust is False  # K_max: the verdict is final, its flag recorded


# 6. the ledger's identity -------------------------------------------------------------------------------

def test_ledger_entries_belong_to_a_claims_block_and_every_look_is_recorded(tmp_path):
    from mlflow.tracking import MlflowClient

    from nai3eval.claims.ledger import ledger_tags, read_ledger
    from nai3train.ops.tracking import Tracker

    k5 = SPEC.model_copy(update={"k_max": 5})
    first = evaluate_claims(fake_results(), spec=k5, config_hash="h", recipes={})
    entries = first.new_ledger_entries("run-k3")
    assert {e.claim for e in entries} >= {"C2-package", "C5", "A0-brightness"}
    c5 = next(e for e in entries if e.claim == "C5")
    assert c5.verdict == A.NOT_MEASURED and c5.reason  # a look that read nothing is recorded, with why
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = MlflowClient(uri).create_experiment("ledger")
    Tracker(uri, "").set_experiment_tags(exp, ledger_tags(entries), only_new=True)
    ledger = read_ledger(MlflowClient(uri), exp)
    assert ledger == {e.key: e for e in entries}
    # K = 3 again on other numbers: nothing is decided twice, nothing new recorded
    again = evaluate_claims(fake_results(flip=True), spec=k5, ledger=ledger, config_hash="h", recipes={})
    assert not again.new_ledger_entries()
    # an edited block is another estimand: the old look is shown as such, never under the new title
    edited = k5.model_copy(update={"claims": tuple(c.model_copy(update={"title": "another estimand"})
                                                   if c.id == "C2-package" else c for c in k5.claims)})
    c = by_id(evaluate_claims(fake_results(), spec=edited, ledger=ledger, config_hash="h", recipes={}))["C2-package"]
    assert c.ledger is None and c.new_look and c.others and c.others[0].title != "another estimand"
    # another deciding config or recipe starts its own looks
    assert by_id(evaluate_claims(fake_results(), spec=k5, ledger=ledger, config_hash="other"))["C2"].new_look


def test_a_final_verdict_stands_against_later_data():
    k3 = SPEC.model_copy(update={"k_max": 3})
    taken = evaluate_claims(fake_results(), spec=k3, config_hash="h")
    entries = {e.key: e for e in taken.new_ledger_entries("r")}
    flipped = evaluate_claims(fake_results(seeds=(0, 1, 2, 3), flip=True), spec=k3, ledger=entries, config_hash="h")
    c = by_id(flipped)["C2-package"]
    assert c.verdict == A.SUPPORTED and c.ledger is not None and "not decided again" in c.decision.reason
    assert c.effect.value < 0  # today's estimate shown beside it
    assert by_id(evaluate_claims(fake_results(seeds=(0, 1, 2, 3), flip=True), spec=k3,
                                 config_hash="h"))["C2-package"].decision.verdict == A.CONTRADICTED


def test_a_committed_spec_version_never_changes_bytes():
    """configs/claims.registered pins each version's sha256: the shipped file must match its entry;
    in the git history (where the clone has it), no version from 7 on was committed with two contents."""
    pins = dict(line.split() for line in (REPO / "configs" / "claims.registered").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    shipped = load_claims_spec()
    assert pins.get(str(shipped.version)) == shipped.sha256, "a registered version's bytes changed: raise version:"
    try:
        log = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", "--", "configs/claims.yaml"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no git history in this checkout")
    seen: dict[int, str] = {}
    for rev in log:
        raw = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:configs/claims.yaml"], capture_output=True,
                             timeout=60).stdout
        version = next((int(line.split(":")[1].split("#")[0]) for line in raw.decode().splitlines()
                        if line.startswith("version:")), 0)
        if version >= 7:
            sha = hashlib.sha256(raw).hexdigest()
            assert seen.setdefault(version, sha) == sha, f"version {version} was committed with two contents"
            assert pins.get(str(version)) == sha


# 7. planning numbers ------------------------------------------------------------------------------------

def test_the_design_simulation_matches_the_noncentral_t_for_one_look():
    d = Design(first_look=6, k_max=6, alpha=0.01, sesoi=None)
    sim = simulate(d, 0.5, 1.0, 100_000, np.random.default_rng(1), futility=False)
    exact = stats.nct.sf(stats.t.isf(0.01, 5), 5, 0.5 * math.sqrt(6))
    assert sim.power == pytest.approx(exact, abs=0.006)


def test_the_variance_ratio_interval_covers_at_its_level():
    rng, k, g, tau2, sw2 = np.random.default_rng(2), 3, 16, 0.0, 1.0
    hits = 0
    for _ in range(4000):
        var_d = (tau2 + sw2) * rng.chisquare(k - 1) / (k - 1)
        s_w2 = sw2 * rng.chisquare(k * (g - 1)) / (k * (g - 1))
        _, lo, hi = variance_ratio_interval(var_d, s_w2, k, g)
        hits += lo <= tau2 / sw2 <= hi
    assert hits / 4000 >= 0.88  # 90 % interval, clipped at 0 (so at the truth 0 it covers at least 90 %)


def test_the_power_column_is_the_registered_designs():
    r = look("C2", [0.02, 0.06, 0.04])
    power, expected_k = r.design()
    assert 0 < power < 1 and 3 <= expected_k <= 10
    sd = r.effect.se * math.sqrt(3)
    naive = stats.nct.sf(stats.t.isf(0.0217, 9), 9, 0.05 * math.sqrt(10) / sd)  # v6's unadjusted, fixed-K figure
    assert power < naive


# 8. the interval at the level that decided ---------------------------------------------------------------

def test_the_interval_shown_is_the_repeated_ci_at_the_deciding_level(tmp_path):
    from nai3eval.reporting.report import claim_row

    r = look("C2-package", [0.3, 0.2, 0.1, 0.25])
    lo, hi = r.rci()
    want = r.effect.interval(1 - 2 * r.level)
    assert (lo, hi) == pytest.approx(want) and hi - lo > np.subtract(*r.effect.interval(0.95)[::-1])
    row = claim_row(r, SPEC.alpha)
    assert f"at level {r.level:.3g}" in row["effect"] and "95 %:" in row["effect"]
    rows = evaluate_claims(fake_results(seeds=(0, 1, 2, 3)), config_hash="h").metrics_by_seeds()[4]
    assert {"claims/C2/rci_low", "claims/C2/rci_high", "claims/C2/rci_level", "claims/C2/ci95_low",
            "claims/C2/halfwidth"} <= set(rows)


# 9. smaller fixes --------------------------------------------------------------------------------------

def test_a_claims_cfg_must_lie_within_its_tolerance_and_the_point_used_is_printed():
    far = by_id(evaluate_claims(fake_results(cfgs=(1.0, 3.0))))["C2"]
    assert far.verdict == A.NOT_MEASURED and "no swept CFG scale within 0.25 of the claim's 5" in far.decision.reason
    near = by_id(evaluate_claims(fake_results(cfgs=(1.0, 5.2))))["C2"]
    assert near.cfg == 5.2 and "measured at CFG 5.2" in near.detail


def test_decided_in_is_matched_by_config_hash():
    rec = fake_results()
    paper = SPEC.deciders["paper"]
    assert by_id(evaluate_claims(rec, config="paper", config_hash=paper))["C2"].new_look
    renamed = by_id(evaluate_claims(rec, config="paper", config_hash="0" * 64))["C2"]
    assert renamed.verdict == "decided in paper" and "is not the registered" in renamed.decision.reason
    assert by_id(evaluate_claims(rec, config="anything", config_hash=paper))["C5"].verdict == "decided in weekly"
    assert by_id(evaluate_claims(rec, config="smoke", config_hash="1" * 64))["C2"].new_look


def test_the_shipped_deciders_are_the_shipped_configs():
    from flows.runs import decider_hash
    from nai3train.config import load_config

    for name, pinned in SPEC.deciders.items():
        assert decider_hash(load_config(str(REPO / "configs" / f"{name}.yaml"), [])) == pinned, name
    assert decider_hash(load_config(str(REPO / "configs" / "paper.yaml"), ["eval.cfg_scales=[1,3]"])) != \
        SPEC.deciders["paper"]
    assert decider_hash(load_config(str(REPO / "configs" / "paper.yaml"), ["train.seeds=[0,1,2]"])) == \
        SPEC.deciders["paper"]
    # measured beside the claims, feeding none: a night with the front-ends or without Inception still decides
    assert decider_hash(load_config(str(REPO / "configs" / "paper.yaml"), ["eval.frontends=all", "eval.inception=false"])
                        ) == SPEC.deciders["paper"]


def test_a_compound_claim_is_supported_only_by_supported_parts():
    from nai3eval.claims.decide import _compound

    spec = SPEC.by_id("C6")
    sup = [look("C2-package", [0.3, 0.301, 0.299, 0.3]) for _ in range(3)]
    assert _compound(spec, sup).decision.verdict == A.SUPPORTED
    eq = look("C2-package", [0.3, 0.301, 0.299, 0.3])
    eq.decision, eq.final = A.Decision(A.EQUIVALENT, math.nan), True
    assert _compound(spec, [*sup[:2], eq]).decision.verdict != A.SUPPORTED


def test_c5_counts_only_informative_seeds_in_its_degrees_of_freedom():
    both = A.SeedContrast(9, 0.0, math.nan, 16, low=-math.inf, high=math.inf)
    base = seeds(0.9, 0.7, 0.8)
    assert recipe_effect([*base, A.SeedContrast(5, 0.5, math.nan, 16, low=0.5, high=math.inf)]).df == 3
    e = recipe_effect([*base, A.SeedContrast(5, 0.5, math.nan, 16, low=0.5, high=math.inf), both])
    assert e.df == 3 and "1 unbounded seed(s) left out" in e.why


# the simulated procedure is the report's own; its error rates -------------------------------------------

def _replay(d: np.ndarray) -> list[int]:
    """One experiment's m primaries (draws d[i, :K_max]) decided look by look by the report's functions."""
    code = {A.SUPPORTED: SUP, A.EQUIVALENT: EQV, A.CONTRADICTED: CON, A.FUTILE: FUT, A.INCONCLUSIVE: INC}
    ids = [c.id for c in SPEC.claims if c.role == "primary"]
    ledger, final = {}, {}
    for k in range(SPEC.first_look, SPEC.k_max + 1):
        rs = []
        for i, cid in enumerate(ids):
            sign = 1.0 if SPEC.by_id(cid).rule.direction == "greater" else -1.0
            r = result(cid, sign * d[i, :k])
            take_look(SPEC, r, k, ledger, identity(cid, *r.ident))
            rs.append(r)
        done = [r.ledger.verdict for r in rs if r.ledger is not None and r.ledger.final]
        apply_holm(rs, SPEC, done.count(A.SUPPORTED), done.count(A.CONTRADICTED))
        for r in rs:
            finish(SPEC, r)
            if r.new_look:
                e = _entry(r)
                ledger[e.key] = e
                if r.final:
                    final[r.id] = code[r.decision.verdict]
    return [final.get(cid, INC) for cid in ids]


def test_the_vectorised_simulation_decides_as_the_report_does():
    n, sd, theta = 60, 0.06, np.array([0.0, 0.05, 0.1])
    got = family(SPEC, theta, sd, n, np.random.default_rng(7), 0.05)
    d = np.random.default_rng(7).normal(theta[None, :, None], sd, (n, 3, SPEC.k_max))
    replayed = np.array([_replay(d[j]) for j in range(n)])
    assert (replayed == got.final).mean() == 1.0, np.argwhere(replayed != got.final)[:5]
    assert len({*got.final.ravel()}) >= 3  # the draws reach several verdicts


def test_validate_keeps_both_directions_and_the_twin_at_alpha():
    n = 20_000
    v = validate(SPEC, tau=0.05, s_w=0.02, n=n, seed=4)
    se = math.sqrt(SPEC.alpha * (1 - SPEC.alpha) / n)
    assert v.familywise_error <= SPEC.alpha + 2 * se and v.familywise_error_no_futility <= SPEC.alpha + 2 * se
    assert v.contradicted_error_no_futility <= SPEC.alpha + 2 * se and v.twin_false_fault <= SPEC.alpha + 2 * se
    assert v.familywise_error_no_futility > SPEC.alpha - 4 * se  # the boundaries spend α, not far less
    assert v.coverage >= 1 - 2 * SPEC.alpha and 0 < v.false_futility < 1 and v.detection > v.power_at_sesoi


def test_claims_validate_prints_every_rate_and_ends_with_the_family_wise_error():
    import sys

    p = subprocess.run([sys.executable, "-m", "flows.cli", "claims", "validate", "--n", "400"], capture_output=True,
                       text=True, timeout=300, env={"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    for part in ("family-wise error of contradicted", "null twin: false fault", "declared futile",
                 "coverage of the repeated confidence intervals"):
        assert part in out
    assert out.strip().splitlines()[-1].startswith("family-wise error ")


def test_a_look_at_k_max_that_measured_nothing_ends_the_claim_and_earlier_looks_show_below_the_first():
    k3 = SPEC.model_copy(update={"k_max": 3})
    r = result("C2-package", [0.3, 0.3, 0.3], spec=k3)  # zero width: nothing measured
    take_look(k3, r, 3, {}, identity("C2-package", *r.ident))
    finish(k3, r)
    assert r.new_look and r.decision.verdict == A.NOT_MEASURED and r.final
    first = look("C2-package", [0.3, 0.2, 0.1])
    e = _entry(first)
    fewer = look("C2-package", [0.3, 0.2], ledger={e.key: e})  # a record with fewer seeds than the look had
    assert fewer.ledger == e and fewer.verdict != "interval only"


def test_holm_guards_only_directional_primaries(tmp_path):
    import yaml

    from nai3train.config import ConfigError

    doc = yaml.safe_load(Path(SPEC.path).read_text())
    a0 = next(c for c in doc["claims"] if c["id"] == "A0-brightness")
    a0["role"] = "primary"
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ConfigError, match="Holm guards directional rules"):
        load_claims_spec(bad)
