"""The MLflow UI views nai3 writes into each experiment, and the links that open them.

MLflow's "share view" is an experiment tag ``mlflow.sharedViewState.<key>`` holding the runs
page's state (search facets and UI state in one flat JSON object, optionally ``deflate;`` +
base64 of its zlib bytes); ``…/runs?viewStateShareKey=<key>&compareRunsMode=TABLE|CHART`` opens it.
Unknown keys are dropped and missing ones take the page's defaults, so every key written here is
one the page reads (MLflow 3.x's ``ExperimentPageUIState``). Two views:

* ``nai3-comparison`` (the table): the evaluation runs grouped by sweep point — variant, CFG and
  starting σ — so each group's average and min–max band are over the training seeds of one
  point, never across points; the point's parameters and the set-level metrics as columns.
* ``nai3-claims`` (the charts): the claims run (``flows/claims_run.py``), a section per claim
  role, one line chart per claim with its lower bound, estimate and upper bound against K.
"""
from __future__ import annotations

import base64
import json
import zlib

from .secrets import redact

COMPARISON_VIEW = "nai3-comparison"
CLAIMS_VIEW = "nai3-claims"
TAG = "mlflow.sharedViewState."

COMPARISON_METRICS = ("eval/kid_tagger", "eval/fd_tagger", "eval/scorer_tv", "eval/scorer_count_acc",
                      "eval/brightness_black", "eval/brightness_white", "eval/overshoot_frac", "eval/fid_inception",
                      "eval/clip_score")
SWEEP_POINT = ("variant.name", "eval.cfg_scale", "eval.first_sigma")  # what one point of the sweep is
CLAIM_SERIES = ("lower", "estimate", "upper")  # one chart's lines (flows/claims_run.py logs these)
CLAIM_OTHER = ("halfwidth", "seeds", "level")  # also logged per claim: no chart of their own
ROLES = ("primary", "secondary", "exploratory")


def _packed(state: dict) -> str:
    """The state as MLflow's compressed form: tags hold at most 20 000 characters."""
    return "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()


def comparison_view_tags() -> dict[str, str]:
    """The experiment tag of the view a researcher wants on the first click (module docstring);
    written with ``Tracker.set_experiment_tags``; its key goes to ``runs_page``."""
    state = {"searchFilter": "tags.`nai3.kind` = 'eval'", "orderByKey": "attributes.start_time", "orderByAsc": False,
             "groupBy": {"aggregateFunction": "average",
                         "groupByKeys": [{"mode": "param", "groupByData": k} for k in SWEEP_POINT]},
             "groupsExpanded": {}, "useGroupedValuesInCharts": True, "runsHiddenMode": "SHOW_ALL",
             "selectedColumns": [*(f"params.`{k}`" for k in SWEEP_POINT), "params.`variant.seed`",
                                 *(f"metrics.`{m}`" for m in COMPARISON_METRICS)]}
    return {TAG + COMPARISON_VIEW: json.dumps(state)}


def claims_view_tags(claims: list[tuple[str, str]]) -> dict[str, str]:
    """The chart view of the claims run for ``claims`` ((id, role) in the spec's order): a section
    per role, a line chart per claim of its three series against K. Every other key a claim logs
    gets a deleted placeholder card, else the page would add a chart of its own for it."""
    sections = [r for r in ROLES if any(role == r for _, role in claims)]
    cards = []
    for cid, role in claims:
        if role not in sections:
            continue
        keys = [f"claims/{cid}/{s}" for s in CLAIM_SERIES]
        cards.append({"uuid": f"claim-{cid}", "type": "LINE", "metricSectionId": f"section-{role}",
                      "isGenerated": False, "deleted": False, "metricKey": keys[0], "selectedMetricKeys": keys,
                      "xAxisKey": "step", "useGlobalXaxisKey": False, "selectedXAxisMetricKey": "",
                      "lineSmoothness": 0, "useGlobalLineSmoothing": False, "scaleType": "linear",
                      "xAxisScaleType": "linear", "yAxisKey": "metric", "yAxisExpressions": [],
                      "ignoreOutliers": False, "displayPoints": True, "runsCountToCompare": 10})
        cards += [{"uuid": f"claim-{cid}-{s}", "type": "LINE", "metricKey": f"claims/{cid}/{s}",
                   "metricSectionId": f"section-{role}", "isGenerated": True, "deleted": True}
                  for s in CLAIM_SERIES[1:] + CLAIM_OTHER]
    state = {"searchFilter": "tags.`nai3.kind` = 'claims'", "orderByKey": "attributes.start_time",
             "orderByAsc": False, "groupBy": None, "useGroupedValuesInCharts": False, "runsHiddenMode": "SHOW_ALL",
             "hideEmptyCharts": True, "isAccordionReordered": True, "selectedColumns": [],
             "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
             "compareRunSections": [{"uuid": f"section-{r}", "name": f"{r} claims: lower, estimate, upper against K",
                                     "display": True, "isReordered": True, "columns": 3} for r in sections],
             "compareRunCharts": cards}
    return {TAG + CLAIMS_VIEW: _packed(state)}


def runs_page(uri: str, experiment_id: str, view: str | None = None, charts: bool = False) -> str:
    """The URL of the experiment's runs page; with ``view``, that view (the first click lands on
    it), as the table or, with ``charts``, as the chart view. Only these parameters: a link that
    carries search parameters of its own makes the page skip the shared view."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    query = f"?viewStateShareKey={view}&compareRunsMode={'CHART' if charts else 'TABLE'}" if view else ""
    return redact(f"{base}/#/experiments/{experiment_id}/runs{query}")
