"""The nightly's plan (issue 33, part 2): an arm trains the next seed only while an open claim of
this config reads it; decided, futile and other configs' claims, and checks, keep nothing training."""
from pathlib import Path

from flows.plan import plan_nightly
from flows.runs import decider_hash, next_seeds
from nai3eval.claims import load_claims_spec
from nai3eval.claims.decide import recipe_of
from nai3eval.claims.ledger import Entry
from nai3train.config import load_config

REPO = Path(__file__).resolve().parents[1]
SPEC = load_claims_spec()
PAPER = load_config(str(REPO / "configs" / "paper.yaml"), [])
RECIPES = {v.name: f"recipe-{v.name}" for v in PAPER.variants}


def final(cid: str, arms: dict[str, str], verdict: str = "supported", config: str | None = None) -> Entry:
    c = SPEC.by_id(cid)
    return Entry(cid, SPEC.block_sha256(c), config or decider_hash(PAPER), recipe_of(arms, RECIPES), 4, verdict, True,
                 0.001, 0.3, (0.2, 0.4), (0.25, 0.35), "", c.title, SPEC.version, SPEC.sha256, "2026-12-07T00:00:00Z")


EPS_CLAIMS = {"C1": {"baseline": "eps-ztsnr", "treatment": "v-ztsnr"},
              "C1-sampled": {"baseline": "eps-ztsnr", "treatment": "v-ztsnr"}}


def test_an_arm_whose_claims_are_all_decided_is_skipped_and_the_plan_says_why():
    ledger = {e.key: e for e in (final(cid, arms) for cid, arms in EPS_CLAIMS.items())}
    plan = plan_nightly(PAPER, SPEC, ledger, decider_hash(PAPER), RECIPES, seed=5)
    assert "eps-ztsnr" not in plan.train and set(plan.train) == {"sdxl-eps", "v", "v-ztsnr"}
    assert plan.skip == {"eps-ztsnr": ("C1", "C1-sampled")}  # C1-check is a check: it keeps nothing training
    assert plan.lines()[:2] == ["training sdxl-eps, v, v-ztsnr (seed 5)", "skipping eps-ztsnr: C1, C1-sampled decided"]


def test_an_open_claim_keeps_its_arms_training():
    one = final("C1", EPS_CLAIMS["C1"])  # C1-sampled still open
    plan = plan_nightly(PAPER, SPEC, {one.key: one}, decider_hash(PAPER), RECIPES)
    assert "eps-ztsnr" in plan.train and not plan.skip
    left_open = final("C1", EPS_CLAIMS["C1"])
    left_open = Entry(**{**left_open.__dict__, "final": False, "verdict": "inconclusive"})
    both_open = plan_nightly(PAPER, SPEC, {left_open.key: left_open}, decider_hash(PAPER), RECIPES)
    assert "eps-ztsnr" in both_open.train


def test_a_verdict_of_another_config_or_recipe_does_not_count():
    other = {e.key: e for e in (final(cid, arms, config="0" * 64) for cid, arms in EPS_CLAIMS.items())}
    assert "eps-ztsnr" in plan_nightly(PAPER, SPEC, other, decider_hash(PAPER), RECIPES).train
    # a config named paper with another grid decides none of the paper's claims: nothing it reads is open
    edited = load_config(str(REPO / "configs" / "paper.yaml"), ["eval.cfg_scales=[1,3]"])
    plan = plan_nightly(edited, SPEC, {}, decider_hash(edited), RECIPES)
    assert plan.train == () and set(plan.skip) == {v.name for v in edited.variants}


def test_the_new_seed_counts_only_the_arms_that_train():
    have = {"a": {0, 1, 2, 3}, "b": {0, 1, 2}}
    assert next_seeds(have) == (0, 1, 2, 3)  # b lacks seed 3: fill the gap
    assert next_seeds(have, ("a",)) == (0, 1, 2, 3, 4)  # b is skipped: a goes on to seed 4


def test_when_nothing_trains_there_is_no_new_seed():
    assert next_seeds({"a": {0, 1, 2}, "b": {0, 1, 2, 3}}, ()) == (0, 1, 2, 3)
