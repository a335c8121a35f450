"""The claims run: one MLflow run per experiment and config that carries every claim's looks
across nights, so that its metric history is the chart the nightly exists to show.

Each night's parent run is a new run, so a claim's interval logged there is one point per run and
no chart can follow it. Here, per claim, at step = the claim's K and with the night's timestamp:
``claims/<id>/estimate``, ``lower`` and ``upper`` (the repeated interval at the deciding level where
the look gave one, else the 95 % interval — ``claims/<id>/level`` says which: the one-sided level,
0.025 for the 95 % one), ``halfwidth`` and ``seeds``. The verdict is the tag ``nai3.claim.<id>``;
the forest plot of the night is the image ``forest`` at step = the night's largest K. MLflow has no
error bars (the lower, estimate and upper lines draw the interval), and min/mean/max are the only
group aggregates, so the three series are separate keys.
"""
from __future__ import annotations

import io
import math
import time

from nai3eval.reporting.forest import bounds, forest_png

KIND = "claims"


def run_id(uri: str, experiment_id: str, config: str) -> str:
    """The claims run of ``config`` in the experiment, created on its first night."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.search_runs([experiment_id], f"tags.`nai3.kind` = '{KIND}' and tags.`nai3.config` = '{config}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"claims/{config}", tags={"nai3.kind": KIND, "nai3.config": config})
    client.set_terminated(run.info.run_id, "FINISHED")  # a record, not a job: it never looks "running"
    return run.info.run_id


def look_metrics(claims: list[dict]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every claim with an estimate (``module docstring``)."""
    out = []
    for c in claims:
        b = bounds(c)
        if b is None:
            continue
        lo, est, hi, level = b
        k = int(c.get("n_seeds") or 0)
        row = {"estimate": est, "lower": lo, "upper": hi, "halfwidth": (hi - lo) / 2, "seeds": float(k),
               "level": level}
        out += [(f"claims/{c['id']}/{name}", float(v), k) for name, v in row.items() if math.isfinite(v)]
    return out


def record_night(uri: str, experiment_id: str, config: str, claims: list[dict], parent_run_id: str = "") -> str:
    """Log one night's looks on the config's claims run; its id."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client, rid, now = MlflowClient(uri), run_id(uri, experiment_id, config), int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in look_metrics(claims)]
    tags = [RunTag(f"nai3.claim.{c['id']}", str(c.get("verdict", ""))[:5000]) for c in claims]
    tags.append(RunTag("nai3.last_parent_run", parent_run_id))
    for i in range(0, max(len(metrics), len(tags), 1), 90):  # MLflow's batch limits: 1000 metrics, 100 tags
        client.log_batch(rid, metrics=metrics[i:i + 90], tags=tags[i:i + 90])
    k = max((int(c.get("n_seeds") or 0) for c in claims), default=0)
    png = forest_png(claims, f"{config}: every claim at K = {k}")
    if png is not None:
        from PIL import Image

        client.log_image(rid, Image.open(io.BytesIO(png)), key="forest", step=k)
    return rid
