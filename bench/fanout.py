"""The fanned-out nightly on one 2-core machine: one process worker with 2 threads vs two process
workers with 1 thread each, the same small nightly (2 variants × 2 seeds), side by side in one run.

Real servers (a Prefect server, an MLflow tracking server), the real deployments of prefect.yaml
(``nai3-ablation/smoke`` on a control worker, ``nai3-variant/train-eval`` on the process workers).
Each layout gets its own work folder and MLflow experiment, so nothing is reused between them;
the data and the domain tagger are prepared beforehand in both (the steady state of a nightly:
they are cached by content), so the wall time is the nightly's training, evaluation, fan-out
and report. Layouts alternate (A, B, then B, A with ``--repeats 2``) and medians are compared.
Prints per layout the nightly's wall time and the span of its (variant, seed) flow runs, and the
speedup last.

    .venv/bin/python bench/fanout.py [--steps 120] [--repeats 1]    # ≈ 10 min on 2 cores
    .venv/bin/python bench/fanout.py --tiny                         # a minute: does it run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import _free_port, _start, _stop, _wait, kill_by_env, start_mlflow  # noqa: E402

BIN = Path(sys.executable).parent


def overrides(steps: int, tiny: bool) -> list[str]:
    if tiny:
        return ["data.train_size=96", "data.eval_size=16", "train.steps=12", "train.batch_size=8", "eval.prompts=4",
                "eval.seeds_per_prompt=2", "eval.steps=4", "eval.tagger_steps=20", "train.seeds=[0,1]"]
    return ["data.train_size=512", "data.eval_size=64", f"train.steps={steps}", "train.checkpoint_every=100",
            "eval.prompts=8", "eval.seeds_per_prompt=4", "eval.steps=20", "eval.tagger_steps=200",
            "train.seeds=[0,1]"]


def prepare(work: Path, uri: str, ov: list[str], experiment: str) -> None:
    """Data and domain tagger in ``work``, as a nightly finds them after its first night."""
    from flows import pipeline
    from nai3train.config import load_config

    cfg = load_config(ROOT / "configs/smoke.yaml", ov + [f"experiment={experiment}"])
    ws = pipeline.Workspace.open(cfg, work, uri)
    pipeline.prepare_tagger(cfg, pipeline.prepare_data(cfg, ws), ws)


def _api(api: str, path: str, body: dict | None = None):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _t(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps per (variant, seed)")
    ap.add_argument("--repeats", type=int, default=1, help="nightlies per layout (alternating order)")
    ap.add_argument("--tiny", action="store_true", help="seconds-sized nightly: checks the bench runs, times nothing")
    a = ap.parse_args()
    ov = overrides(a.steps, a.tiny)
    tmp = Path(tempfile.mkdtemp(prefix="nai3-fanout-"))
    prefect_port, mlflow_port = _free_port(), _free_port()
    api, uri = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect"), PREFECT_API_URL=api, MLFLOW_TRACKING_URI=uri,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1",
               PREFECT_WORKER_QUERY_SECONDS="1")
    procs: list[subprocess.Popen] = []
    layouts = {"1 worker × 2 threads": [2], "2 workers × 1 thread": [1, 1]}
    walls: dict[str, list[float]] = {k: [] for k in layouts}
    spans: dict[str, list[float]] = {k: [] for k in layouts}

    def prefect(*args: str) -> None:
        subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=ROOT, check=True,
                       capture_output=True, text=True)

    try:
        procs.append(_start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                             str(prefect_port)], env, tmp / "prefect.log"))
        procs.append(start_mlflow(tmp, mlflow_port, env))
        _wait(api + "/health", procs[0])
        prefect("work-pool", "create", "nai3-control", "--type", "process")
        prefect("work-pool", "create", "nai3-process", "--type", "process")
        prefect("deploy", "--name", "smoke", "--name", "train-eval")
        procs.append(_start([str(BIN / "prefect"), "worker", "start", "--pool", "nai3-control"], env,
                            tmp / "control.log"))
        order = [k for r in range(a.repeats) for k in (list(layouts) if r % 2 == 0 else list(layouts)[::-1])]
        for i, layout in enumerate(order):
            slug = f"{'ab'[list(layouts).index(layout)]}{i}"
            work, experiment = tmp / f"work-{slug}", f"nai3-fanout-{slug}"
            os.environ["MLFLOW_TRACKING_URI"] = uri
            prepare(work, uri, ov, experiment)
            workers = [_start([str(BIN / "prefect"), "worker", "start", "--pool", "nai3-process", "--limit", "1"],
                              dict(env, OMP_NUM_THREADS=str(t), NAI3_BENCH_WORKER=f"{slug}-{j}"),
                              tmp / f"worker-{slug}-{j}.log") for j, t in enumerate(layouts[layout])]
            time.sleep(3)  # workers polling before the clock starts
            t0 = time.time()
            run = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deployment", "run", "nai3-ablation/smoke",
                                  "--param", f"overrides={json.dumps(ov + [f'experiment={experiment}'])}",
                                  "--param", f"work_dir={work}", "--watch"], env=env, cwd=ROOT, capture_output=True,
                                 text=True)
            wall = time.time() - t0
            for w in workers:
                _stop(w)
            kill_by_env(f"NAI3_BENCH_WORKER={slug}-0")
            kill_by_env(f"NAI3_BENCH_WORKER={slug}-1")
            if run.returncode != 0:
                raise SystemExit(f"{layout}: the nightly failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            dep = _api(api, "/deployments/name/nai3-variant/train-eval")
            children = [c for c in _api(api, "/flow_runs/filter", {
                "flow_runs": {"deployment_id": {"any_": [dep["id"]]}}, "limit": 200})
                if c["start_time"] and _t(c["start_time"]) >= t0 - 1]
            span = max(_t(c["end_time"]) for c in children) - min(_t(c["start_time"]) for c in children)
            walls[layout].append(wall)
            spans[layout].append(span)
            print(f"{layout}: nightly {wall:.1f} s, its {len(children)} (variant, seed) flow runs span {span:.1f} s",
                  flush=True)
    finally:
        for p in procs[::-1]:
            _stop(p)
        kill_by_env(f"PREFECT_API_URL={api}")
    one, two = (statistics.median(walls[k]) for k in layouts)
    s1, s2 = (statistics.median(spans[k]) for k in layouts)
    print(f"(variant, seed) span speedup: {s1 / s2:.2f}×")
    print(f"nightly speedup, 2 workers × 1 thread vs 1 worker × 2 threads: {one / two:.2f}× "
          f"({one:.1f} s vs {two:.1f} s; target ≥ 1.2)")


if __name__ == "__main__":
    main()
