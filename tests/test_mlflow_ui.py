"""The MLflow UI in a real browser: the printed links open the comparison grouped by sweep point
(each group's runs are the training seeds of one point) and the claims' chart view with one chart
of three series per claim. Headless Chromium from Debian's package, driven by Playwright from PyPI
(no browser download); screenshots are kept under the test's temp folder."""
import shutil
import time

import pytest
from mlflow.tracking import MlflowClient

from flows import claims_run
from nai3train.ops.tracking import open_experiment
from nai3train.ops.views import (CLAIMS_VIEW, COMPARISON_VIEW, TAG, claims_view_tags, comparison_view_tags,
                                 runs_page)

from .servers import _free_port, _stop, start_mlflow
from .test_claims_run import _claim

VARIANTS, CFGS, SEEDS = ("sdxl-eps", "nai-v-ztsnr"), (1.0, 5.0), (0, 1)


def _store(uri: str) -> str:
    """Eval runs of 2 variants × 2 CFG × 1 start × 2 training seeds, and two nights of claims."""
    _, exp = open_experiment("nai3-ui", uri)
    client = MlflowClient(uri)
    for v in VARIANTS:
        for cfg in CFGS:
            for seed in SEEDS:
                run = client.create_run(exp, run_name=f"eval/{v}/cfg{cfg:g}-sigma20000", tags={"nai3.kind": "eval"})
                for k, val in {"variant.name": v, "eval.cfg_scale": cfg, "eval.first_sigma": 20000.0,
                               "variant.seed": seed}.items():
                    client.log_param(run.info.run_id, k, val)
                client.log_metric(run.info.run_id, "eval/kid_tagger", 0.1 * seed + cfg)
                client.set_terminated(run.info.run_id)
    for k, (c2, c5) in {3: ((0.30, [0.05, 0.55]), (1.0, [0.1, 1.9])), 4: ((0.28, [0.12, 0.44]), (0.9, [0.3, 1.5]))}.items():
        claims_run.record_night(uri, exp, "paper", [_claim("C2", k, c2[0], c2[1], 0.004, "inconclusive"),
                                                    _claim("C5", k, c5[0], c5[1], 0.004, "inconclusive")])
    client.set_experiment_tag(exp, *next(iter(comparison_view_tags().items())))
    client.set_experiment_tag(exp, *next(iter(claims_view_tags([("C2", "primary"), ("C5", "secondary")]).items())))
    return exp


def _open(page, url: str, text: str, timeout_s: float = 60) -> float:
    """Load ``url`` and wait until ``text`` is on the page; the seconds it took."""
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_s * 1000)
    return time.perf_counter() - t0


@pytest.mark.slow
def test_the_printed_links_open_seed_groups_per_sweep_point_and_one_chart_per_claim(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (.ci/run installs it: apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = start_mlflow(tmp_path, port)
    try:
        uri = f"http://127.0.0.1:{port}"
        exp = _store(uri)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            _open(page, runs_page(uri, exp, COMPARISON_VIEW), "Group: ")
            page.wait_for_timeout(1500)
            body = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "runs.png"))
            groups = [line for line in body.splitlines() if line.startswith("Group: ")]
            # one group per sweep point (variant × CFG; one start), each holding that point's seeds only
            assert len(groups) == len(VARIANTS) * len(CFGS), groups
            for g in groups:
                assert "variant.name:" in g and "eval.cfg_scale:" in g and "eval.first_sigma:" in g, g
            assert "variant.seed" in body and "eval/kid_tagger" in body  # the point's parameters as columns
            seconds = _open(page, runs_page(uri, exp, CLAIMS_VIEW, charts=True),
                            "claims/C2/lower vs claims/C2/estimate vs claims/C2/upper")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(tmp_path / "claims.png"))
            body = page.inner_text("body")
            assert "claims/C5/lower vs claims/C5/estimate vs claims/C5/upper" in body
            assert "primary claims" in body and "secondary claims" in body  # a section per role
            assert seconds < 30, f"the claims' charts took {seconds:.1f} s to show"
            browser.close()
    finally:
        _stop(server)


def test_the_views_are_what_the_page_reads():
    import base64
    import json
    import zlib

    table = json.loads(comparison_view_tags()[TAG + COMPARISON_VIEW])
    assert [k["groupByData"] for k in table["groupBy"]["groupByKeys"]] == ["variant.name", "eval.cfg_scale",
                                                                         "eval.first_sigma"]
    assert "params.`eval.first_sigma`" in table["selectedColumns"] and table["runsHiddenMode"] == "SHOW_ALL"
    packed = claims_view_tags([(f"C{i}", "primary") for i in range(40)])[TAG + CLAIMS_VIEW]
    assert packed.startswith("deflate;") and len(packed) < 20_000  # MLflow's limit on a tag's value
    charts = json.loads(zlib.decompress(base64.b64decode(packed.removeprefix("deflate;"))))
    live = [c for c in charts["compareRunCharts"] if not c["deleted"]]
    assert len(live) == 40 and live[0]["selectedMetricKeys"] == ["claims/C0/lower", "claims/C0/estimate",
                                                                 "claims/C0/upper"]
    assert runs_page("http://h:5000", "7", CLAIMS_VIEW, charts=True) == \
        "http://h:5000/#/experiments/7/runs?viewStateShareKey=nai3-claims&compareRunsMode=CHART"
