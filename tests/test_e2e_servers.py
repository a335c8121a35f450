"""End to end against real servers: a Prefect server and an MLflow tracking server on free loopback
ports, a process work pool and worker, the smoke deployment run with `prefect deployment run --watch`,
then the MLflow server's REST API read back. Run again: nothing retrained. Kill the worker during
training, start it again, rerun: training resumes from its checkpoint. Servers always stopped."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .servers import _api, _free_port, _start, _stop, _wait, kill_by_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["data.train_size=96", "data.eval_size=16", "train.steps=12", "train.batch_size=8", "train.log_every=4",
        "eval.prompts=4", "eval.seeds_per_prompt=2", "eval.steps=4", "eval.tagger_steps=20", "train.threads=1"]


@pytest.mark.slow
def test_smoke_deployment_against_real_servers(tmp_path):
    mlflow_port, prefect_port = _free_port(), _free_port()
    mlflow_url, prefect_api = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=prefect_api,
               MLFLOW_TRACKING_URI=mlflow_url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    work = tmp_path / "work"
    procs: dict[str, subprocess.Popen | None] = {"mlflow": None, "prefect": None, "worker": None}

    def prefect(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        p = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=timeout)
        assert p.returncode == 0, f"prefect {args}: {p.stdout[-3000:]} {p.stderr[-3000:]}"
        return p

    def run_smoke(overrides: list[str], watch: bool = True, force: bool = False):
        args = ["deployment", "run", "nai3-ablation/smoke", "--param", f"overrides={json.dumps(overrides)}",
                "--param", f"work_dir={work}", "--param", f"force={json.dumps(force)}"]
        return prefect(*args, *(["--watch"] if watch else []))

    def runs(kind: str) -> list[dict]:
        exp = _api(mlflow_url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=nai3-smoke")["experiment"]
        out = _api(mlflow_url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                                "max_results": 1000}).get("runs", [])
        tags = lambda r: {t["key"]: t["value"] for t in r["data"].get("tags", [])}  # noqa: E731
        return [dict(r, tags=tags(r)) for r in out if tags(r).get("nai3.kind") == kind]

    try:
        procs["mlflow"] = _start([str(BIN / "mlflow"), "server", "--backend-store-uri",
                                  f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination",
                                  str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
                                  "--workers", "1"], env, tmp_path / "mlflow.log")
        procs["prefect"] = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(prefect_port)], env, tmp_path / "prefect.log")
        _wait(mlflow_url + "/health", procs["mlflow"])
        _wait(prefect_api + "/health", procs["prefect"])
        prefect("work-pool", "create", "nai3-process", "--type", "process")
        prefect("deploy", "--name", "smoke")
        worker_cmd = [str(BIN / "prefect"), "worker", "start", "--pool", "nai3-process", "--limit", "1"]
        procs["worker"] = _start(worker_cmd, env, tmp_path / "worker.log")

        # 1. the smoke deployment end to end
        run_smoke(TINY)
        parents = runs("ablation")
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        pid = parents[0]["info"]["run_id"]
        train, evals = runs("train"), runs("eval")
        assert {r["tags"]["nai3.variant"] for r in train} == {"sdxl-eps", "nai-v-ztsnr"}
        assert all(r["tags"]["mlflow.parentRunId"] == pid for r in train + evals) and len(evals) == 8
        for r in evals:
            metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
            assert {"eval/cfg_scale", "eval/first_sigma", "eval/fd_tagger", "eval/tag_recall"} <= set(metrics)
        report = _api(mlflow_url, f"/api/2.0/mlflow/artifacts/list?run_id={pid}&path=report")
        assert "report/report.html" in {f["path"] for f in report.get("files", [])}

        # 2. again: every variant reused, nothing retrained, nothing re-evaluated
        run_smoke(TINY)
        assert len(runs("train")) == 2 and len(runs("eval")) == 8
        second = [p for p in runs("ablation") if p["info"]["run_id"] != pid][0]
        assert {"nai3.reused.sdxl-eps", "nai3.reused.nai-v-ztsnr", "nai3.reused_eval.sdxl-eps",
                "nai3.reused_eval.nai-v-ztsnr"} <= set(second["tags"])
        assert second["info"]["status"] == "FINISHED"
        report2 = _api(mlflow_url, f"/api/2.0/mlflow/artifacts/list?run_id={second['info']['run_id']}&path=report")
        assert "report/report.html" in {f["path"] for f in report2.get("files", [])}

        # 3. kill the worker during a longer training, start it again, rerun: training resumes
        long = TINY + ["train.steps=400", "train.checkpoint_every=20", "variants.sdxl-eps.min_snr_gamma=5"]
        run_smoke(long, watch=False)
        deadline, step = time.time() + 400, 0
        while time.time() < deadline and step < 60:
            ckpts = sorted(work.glob("variants/sdxl-eps-*/checkpoints/step-*/meta.json"))
            step = max((json.loads(c.read_text())["step"] for c in ckpts), default=0)
            time.sleep(0.2)
        assert step >= 60, "training never reached a checkpoint"
        _stop(procs["worker"])
        procs["worker"] = _start(worker_cmd, env, tmp_path / "worker2.log")
        run_smoke(long)
        resumed = [r for r in runs("train") if r["tags"].get("nai3.resumed_from_step")]
        assert resumed and int(resumed[-1]["tags"]["nai3.resumed_from_step"]) >= 60
        first_step = min(m["step"] for m in _api(
            mlflow_url, f"/api/2.0/mlflow/metrics/get-history?run_id={resumed[-1]['info']['run_id']}"
                        "&metric_key=train/loss")["metrics"])
        assert first_step > 0
    finally:
        for p in procs.values():
            _stop(p)
        kill_by_env(f"PREFECT_API_URL={prefect_api}")  # flow runs orphaned by the killed worker
