"""The team set-up end to end, every server real: PostgreSQL (a throw-away cluster), the MLflow
server on it with the basic-auth app and proxied artifacts (`mlflow/serve-team.sh`), the Prefect
server with an API auth string (`flows/serve-team.sh`), a control worker for the parent flows and
two process workers for the (variant, seed) flow runs, one thread each.

Two smoke nightlies (2 variants × 2 seeds) started together fan out over both workers (read
back from the Prefect API's events). Mid-training one worker is killed with its flow run (as when
its machine dies): the heartbeat automation marks the run Crashed, the parent submits it again,
a live worker (the survivor, or the dead one's replacement) takes the run key's lock once the
lease lapses and resumes from the checkpoint, and the dead MLflow run is marked KILLED. Each (variant, seed) is trained exactly
once (one FINISHED run each) and evaluated once; both parents finish with a complete report (all
four replicates in results.json).
Servers, workers and orphaned flow runs are always stopped."""
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .servers import _free_port, _start, _stop, _wait, kill_by_env, restart_postgres, start_postgres

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["data.train_size=96", "data.eval_size=16", "train.steps=12", "train.batch_size=8", "train.log_every=4",
        "eval.prompts=4", "eval.seeds_per_prompt=2", "eval.steps=4", "eval.tagger_steps=20"]
STEPS = 120  # training steps per (variant, seed) in the team test
ADMIN = ("admin", secrets.token_hex(12))  # generated per run: no literal secret in the repository


def _api(base: str, path: str, body: dict | None = None, auth: tuple[str, str] | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_team_setup_fans_out_exactly_once_and_survives_a_dead_worker(tmp_path):
    pg, pg_port, pg_root = start_postgres(["mlflow", "mlflow_auth"])
    mlflow_port, prefect_port = _free_port(), _free_port()
    mlflow_url, prefect_api = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    prefect_auth = f"nai3:{secrets.token_hex(12)}"
    base = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    server_env = dict(base, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1], MLFLOW_STATE_DIR=str(tmp_path / "mlflow-state"),
                      MLFLOW_BACKEND_STORE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/mlflow",
                      MLFLOW_AUTH_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/mlflow_auth",
                      MLFLOW_PORT=str(mlflow_port), MLFLOW_BIN=str(BIN / "mlflow"), PREFECT_BIN=str(BIN / "prefect"),
                      PREFECT_PORT=str(prefect_port), **{"PREFECT_SERVER_API_AUTH_STRING": prefect_auth})
    env = dict(base, PREFECT_API_URL=prefect_api, PREFECT_API_AUTH_STRING=prefect_auth, MLFLOW_TRACKING_URI=mlflow_url,
               MLFLOW_TRACKING_USERNAME=ADMIN[0], MLFLOW_TRACKING_PASSWORD=ADMIN[1], PREFECT_WORKER_QUERY_SECONDS="2",
               PREFECT_CLIENT_MAX_RETRIES="7")  # as docs/operations.md starts workers
    work = tmp_path / "work"
    procs: dict[str, subprocess.Popen | None] = {}

    def prefect(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        p = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=timeout)
        assert p.returncode == 0, f"prefect {args}: {p.stdout[-3000:]} {p.stderr[-3000:]}"
        return p

    def nightly(overrides: list[str]) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "prefect"), "--no-prompt", "deployment", "run", "nai3-ablation/smoke",
                                 "--param", f"overrides={json.dumps(overrides)}", "--param", f"work_dir={work}",
                                 "--watch"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def finish(p: subprocess.Popen, timeout: float = 900) -> str:
        """The nightly's output once its flow run is COMPLETED. `--watch` follows Prefect's event
        stream, which a server restart closes ("Stopped watching …"): then the flow run's state is
        polled from the API instead (the run itself goes on: that is what is being tested)."""
        out, _ = p.communicate(timeout=timeout)
        if p.returncode != 0 and "Stopped watching flow run" in out:
            flow_run_id = out.split("UUID: ", 1)[1].split()[0]
            deadline = time.time() + timeout
            while (state := _prefect_api(prefect_api, prefect_auth, f"/flow_runs/{flow_run_id}")["state_type"]) \
                    not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and time.time() < deadline:
                time.sleep(3)
            assert state == "COMPLETED", out[-4000:]
            return out
        assert p.returncode == 0, out[-4000:]
        return out

    def runs(kind: str) -> list[dict]:
        exp = _api(mlflow_url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=nai3-smoke",
                   auth=ADMIN)["experiment"]
        out = _api(mlflow_url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                                "max_results": 1000}, ADMIN).get("runs", [])
        tags = lambda r: {t["key"]: t["value"] for t in r["data"].get("tags", [])}  # noqa: E731
        return [dict(r, tags=tags(r)) for r in out if tags(r).get("nai3.kind") == kind]

    def results_of(parent_run_id: str) -> dict:
        with urllib.request.urlopen(urllib.request.Request(
                f"{mlflow_url}/get-artifact?path=results/results.json&run_uuid={parent_run_id}",
                headers={"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}),
                timeout=30) as r:
            return json.loads(r.read())

    def flow_runs(deployment: str) -> list[dict]:
        dep = _prefect_api(prefect_api, prefect_auth, f"/deployments/name/{deployment}")
        return _prefect_api(prefect_api, prefect_auth, "/flow_runs/filter",
                            {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}, "limit": 200})

    try:
        procs["mlflow"] = _start(["bash", str(ROOT / "mlflow/serve-team.sh"), "--workers", "1"], server_env,
                                 tmp_path / "mlflow.log")
        procs["prefect"] = _start(["bash", str(ROOT / "flows/serve-team.sh")], server_env, tmp_path / "prefect.log")
        _wait(mlflow_url + "/health", procs["mlflow"], any_status=True, timeout=240)
        _wait(prefect_api + "/health", procs["prefect"], any_status=True, timeout=240)
        with pytest.raises(urllib.error.HTTPError):  # the tracking server refuses anonymous clients
            _api(mlflow_url, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
        prefect("work-pool", "create", "nai3-control", "--type", "process")
        prefect("work-pool", "create", "nai3-process", "--type", "process")
        prefect("deploy", "--name", "smoke", "--name", "train-eval")
        procs["control"] = _start([str(BIN / "prefect"), "worker", "start", "--pool", "nai3-control", "--name",
                                   "control"], env, tmp_path / "control.log")
        for w in ("w0", "w1"):
            procs[w] = _start([str(BIN / "prefect"), "worker", "start", "--pool", "nai3-process", "--limit", "1",
                               "--name", w], dict(env, NAI3_E2E_WORKER=w), tmp_path / f"{w}.log")

        # two nightlies started together (2 variants × 2 seeds each) fan out over both workers; one
        # worker dies with its flow run mid-training (as when its machine dies)
        # the victim is taken at an early checkpoint (step 20–60 of 120), so the kill lands mid-training
        two = TINY + ["train.seeds=[0,1]", f"train.steps={STEPS}", "train.checkpoint_every=20"]
        first, second = nightly(two), nightly(two)
        deadline, victim = time.time() + 600, None
        while time.time() < deadline and victim is None:
            for c in (work / "variants").glob("*/checkpoints/step-*/meta.json"):
                try:
                    step = json.loads(c.read_text())["step"]
                except (OSError, ValueError):
                    continue  # being written
                if 20 <= step <= 60:
                    victim = c.parents[2]
                    break
            time.sleep(0.2)
        assert victim is not None, "training never reached a checkpoint"
        run_key = victim.name[-12:]  # run directories are <variant>-<12-hex run key>
        # the flow run that trains it, by the training run's tag: the other nightly's flow run for the
        # same (variant, seed) is RUNNING too, waiting on the run key's lock
        trainer = next(r for r in runs("train") if r["tags"].get("nai3.run_key") == run_key)
        child = next(c for c in flow_runs("nai3-variant/train-eval") if c["id"] == trainer["tags"]["prefect.flow_run_id"])
        assert child["state_type"] == "RUNNING", child["state_type"]
        pid = int(child["infrastructure_pid"].rsplit(":", 1)[-1])  # "pid" or "host:pid"
        killed_worker = next(w for w in ("w0", "w1")
                             if f"NAI3_E2E_WORKER={w}".encode() in Path(f"/proc/{pid}/environ").read_bytes())
        assert kill_by_env(f"NAI3_E2E_WORKER={killed_worker}") >= 2  # the worker and its flow run
        assert [r["info"]["status"] for r in runs("train") if r["tags"].get("nai3.run_key") == run_key] == ["RUNNING"], \
            "the kill came after the victim's training had finished: nothing to resume"
        procs["w2"] = _start([str(BIN / "prefect"), "worker", "start", "--pool", "nai3-process", "--limit", "1",
                              "--name", "w2"], dict(env, NAI3_E2E_WORKER="w2"), tmp_path / "w2.log")  # its replacement

        # the team's servers restart under the running nightlies: PostgreSQL under MLflow (killed hard,
        # as a crashed database host), then the Prefect server, while children train and parents wait
        training = [c["name"] for c in flow_runs("nai3-variant/train-eval") if c["state_type"] == "RUNNING"]
        pg = restart_postgres(pg, pg_root, pg_port)
        _stop(procs["prefect"])
        time.sleep(3)
        procs["prefect"] = _start(["bash", str(ROOT / "flows/serve-team.sh")], server_env, tmp_path / "prefect2.log")
        _wait(prefect_api + "/health", procs["prefect"], any_status=True, timeout=240)
        print(f"restarted PostgreSQL and the Prefect server while {training} trained")
        finish(first), finish(second)

        # each (variant, seed) trained once: one FINISHED run per unit; the dead one KILLED and resumed
        train = runs("train")
        done = sorted((r["tags"]["nai3.variant"], r["tags"]["nai3.seed"]) for r in train
                      if r["info"]["status"] == "FINISHED")
        assert done == sorted((v, s) for v in ("sdxl-eps", "nai-v-ztsnr") for s in ("0", "1")), done
        killed = [r for r in train if r["info"]["status"] == "KILLED"]
        resumed = [r for r in train if r["tags"].get("nai3.resumed_from_step")]
        assert len(killed) == 1 and killed[0]["tags"]["nai3.run_key"] == run_key and len(train) == 5
        assert len(resumed) == 1 and resumed[0]["tags"]["nai3.run_key"] == run_key
        assert int(resumed[0]["tags"]["nai3.resumed_from_step"]) >= 20
        assert len(runs("eval")) == 4 * 4  # 4 sweep points per (variant, seed), each evaluated once
        # nothing lost to the restarts: every logged loss is there, no run is left RUNNING
        for r in train:
            if r["info"]["status"] != "FINISHED":
                continue
            history = _api(mlflow_url, f"/api/2.0/mlflow/metrics/get-history?run_id={r['info']['run_id']}"
                                       "&metric_key=train/loss&max_results=10000", auth=ADMIN)["metrics"]
            first_step = int(r["tags"].get("nai3.resumed_from_step", 0)) + 4
            assert sorted(m["step"] for m in history) == list(range(first_step, STEPS + 1, 4)), r["tags"]["nai3.run_key"]
        everything = [*train, *runs("eval"), *runs("ablation")]
        assert not [r["info"]["run_id"] for r in everything if r["info"]["status"] == "RUNNING"]
        parents = runs("ablation")
        assert len(parents) == 2 and all(p["info"]["status"] == "FINISHED" for p in parents)
        for p in parents:  # both reports complete: all four replicates
            res = results_of(p["info"]["run_id"])
            assert sorted((x["variant"]["name"], x["seed"]) for x in res["record"]["runs"]) == sorted(
                (v, s) for v in ("sdxl-eps", "nai-v-ztsnr") for s in (0, 1))
        # Prefect's view: 8 flow runs + 1 resubmission per crash; the dead one Crashed (heartbeat
        # automation), every other one Completed (none crashed later by the automation after it
        # finished). A flow run whose process starts while the Prefect server restarts crashes
        # before any work (Prefect's supervisor does not retry a refused connection); the parent
        # submits it again, so that is a second crash with its own resubmission, never a lost unit.
        children = flow_runs("nai3-variant/train-eval")
        states = sorted(c["state_type"] for c in children)
        crashed = states.count("CRASHED")
        resubmitted = (tmp_path / "control.log").read_text().count("submitting it again")
        assert 1 <= crashed <= 2 and crashed == resubmitted, (states, resubmitted)
        assert states.count("COMPLETED") == 8 and len(states) == 8 + crashed, states
        assert any(c["name"].endswith("-attempt2") and c["state_type"] == "COMPLETED" for c in children)
        events = _prefect_api(prefect_api, prefect_auth, "/events/filter", {
            "filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]}}, "limit": 50})["events"]
        ran = {e["resource"]["prefect.resource.name"] for e in events
               if any(r.get("prefect.resource.id") == f"prefect.flow-run.{c['id']}" for c in children
                      for r in e.get("related", []))}
        assert {"w0", "w1"} <= ran, f"workers that took (variant, seed) flow runs: {ran}"
    finally:
        for p in procs.values():
            _stop(p)
        kill_by_env(f"PREFECT_API_URL={prefect_api}")  # flow runs orphaned by killed workers
        _stop(pg)
        shutil.rmtree(pg_root, ignore_errors=True)


def _prefect_api(api: str, auth: str, path: str, body: dict | None = None):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())

