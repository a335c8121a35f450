"""The claims run: one run per experiment and config whose metric history is each claim's
interval night by night, with the verdict as a tag and the forest plot as a versioned image."""
import math

import pytest

from mlflow.tracking import MlflowClient

from flows import claims_run
from nai3eval.reporting.forest import bounds, forest_png, threshold


def _claim(cid: str, k: int, value: float, rci: list | None, level: float | None, verdict: str, **kw) -> dict:
    return {"id": cid, "n_seeds": k, "verdict": verdict, "parts": [], "rule": {"kind": "superiority"},
            "effect": {"value": value, "ci95": [value - 0.2, value + 0.2], "rci": rci or [None, None],
                       "rci_level": level}, **kw}


def test_two_nights_make_a_history_per_claim(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("nai3-paper", artifact_location=str(tmp_path / "artifacts"))
    night3 = [_claim("C2", 3, 0.30, [0.05, 0.55], 0.001, "inconclusive"),
              _claim("C5", 2, 1.0, None, None, "interval only")]
    night4 = [_claim("C2", 4, 0.28, [0.12, 0.44], 0.004, "supported"),
              _claim("C5", 3, 0.9, [0.1, 1.7], 0.001, "inconclusive")]
    rid = claims_run.record_night(uri, exp, "paper", night3, "p3")
    assert claims_run.record_night(uri, exp, "paper", night4, "p4") == rid  # the same run, night after night
    assert claims_run.record_night(uri, exp, "weekly", night4) != rid  # another config, another run
    hist = {m.step: m.value for m in client.get_metric_history(rid, "claims/C2/upper")}
    assert hist == {3: 0.55, 4: 0.44}
    assert [m.step for m in client.get_metric_history(rid, "claims/C2/estimate")] == [3, 4]
    assert math.isclose(client.get_metric_history(rid, "claims/C2/halfwidth")[-1].value, 0.16)
    c5 = {m.step: m.value for m in client.get_metric_history(rid, "claims/C5/lower")}
    assert c5 == {2: 0.8, 3: 0.1}  # below the first look: the 95 % interval, said by its level
    assert {m.step: m.value for m in client.get_metric_history(rid, "claims/C5/level")} == {2: 0.025, 3: 0.001}
    run = client.get_run(rid)
    assert run.data.tags["nai3.claim.C2"] == "supported" and run.data.tags["nai3.kind"] == "claims"
    assert run.info.status == "FINISHED"
    images = [a.path for a in client.list_artifacts(rid, "images")]
    assert all("forest" in p for p in images)
    assert {p.split("+step+")[1].split("+")[0] for p in images if p.endswith(".png")} == {"3", "4"}  # one per night


def test_the_forest_plot_reads_the_interval_and_threshold_the_rule_uses():
    c = _claim("C3-linear", 5, 0.1, [0.02, 0.18], 0.01, "supported")
    assert bounds(c) == (0.02, 0.1, 0.18, 0.01) and threshold(c) == 0.0
    assert bounds({**c, "effect": {**c["effect"], "rci": [None, None]}}) == pytest.approx((-0.1, 0.1, 0.3, 0.025))  # 95 %
    assert bounds({**c, "decided": {"look": 3}}) is None  # ended at K = 3: that interval belongs there
    below = {**c, "rule": {"kind": "below"}, "margin": 0.2}
    assert threshold(below) == 0.2
    assert bounds({**c, "effect": {"value": float("nan")}}) is None
    png = forest_png([c, below], "paper at K = 5")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert forest_png([{**c, "effect": {"value": None}}], "x") is None
