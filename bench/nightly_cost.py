"""What the nightly's decisions cost on this box, read from an experiment's store: per arm and
stage (training, evaluation; the report's own time from the newest night), the CPU-hours each
claim's seeds took so far, and the expected CPU-hours to decide each open claim and every primary
(``flows/cost.py``). The nightly's parent run logs the same figures (``cost/…``, ``cost.json``).

    .venv/bin/python bench/nightly_cost.py configs/paper.yaml \\
        --tracking-uri sqlite:////work/exp/paper/mlflow.db --work-dir /work/exp/paper/runs
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def newest_report(uri: str, experiment_id: str) -> tuple[list[dict], float | None, str]:
    """The claims of the newest finished night's report.json, its report seconds and run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for run in client.search_runs([experiment_id], "tags.`nai3.kind` = 'ablation' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=50):
        with tempfile.TemporaryDirectory() as d:
            try:
                doc = json.loads(Path(client.download_artifacts(run.info.run_id, "report/report.json", d)).read_text())
            except Exception:
                continue
        return doc["claims"], run.data.metrics.get("cost/report_seconds"), run.info.run_id
    sys.exit("no finished ablation run with a report.json in this experiment: run the nightly first")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the nightly's YAML config (its arms and recipe)")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--work-dir", required=True, help="the nightly's work folder (its prepared data)")
    a = ap.parse_args()
    from flows import cost, pipeline
    from nai3train.config import load_config

    cfg = load_config(a.config, [])
    ws = pipeline.Workspace.open(cfg, a.work_dir, a.tracking_uri)
    data = pipeline.prepare_data(cfg, ws)
    claims, report_s, run_id = newest_report(ws.uri, ws.experiment_id)
    units = cost.unit_costs(cfg, data.content_hash, ws.uri, ws.experiment_id)
    if not units:
        sys.exit("no finished training run of these arms under today's training identity")
    print(f"experiment '{cfg.experiment}', newest night {run_id}, {len(units)} (arm, seed) units")
    print("\n".join(cost.lines(cost.stage_table(units), cost.claim_costs(claims, units), report_s)))


if __name__ == "__main__":
    main()
