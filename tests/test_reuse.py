"""Idempotent runs: a FINISHED run with the same config, data and code is reused, not retrained;
two concurrent runs of the same variant train it once; --force retrains."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import ROOT
from .conftest import TINY as _TINY

TINY = _TINY + ["data.train_size=48", "train.steps=20", "train.threads=1"]


def _cmd(work: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "flows.cli", "train", str(ROOT / "configs/smoke.yaml"), "--variant", "nai-v-ztsnr",
           "--work-dir", str(work), "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--no-progress"]
    for o in TINY:
        cmd += ["--set", o]
    return cmd + list(extra)  # after TINY: a later --set wins


def _out(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout[p.stdout.index("{"):])


def _train_runs(work: Path):
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("nai3-smoke")
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("nai3.kind") == "train"]


@pytest.mark.slow
def test_concurrent_runs_train_once_then_reuse_then_force(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    work = tmp_path / "w"
    # the store and data exist before the race, as they do for two flow runs of a deployed ablation
    first = _out(subprocess.run(_cmd(work, "--set", "train.steps=1", "--force"), capture_output=True, text=True,
                                env=env))
    procs = [subprocess.Popen(_cmd(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    results = [_out(subprocess.CompletedProcess([], p.returncode, o, e)) for p, (o, e) in zip(procs, outs)]
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["run_id"] == results[1]["run_id"]  # the waiter reuses the winner's run
    assert results[0]["checkpoint"] == results[1]["checkpoint"]
    finished = [r for r in _train_runs(work) if r.info.status == "FINISHED"]
    assert len(finished) == 2  # the 1-step warm-up run (other config) and exactly one 20-step run
    assert first["run_id"] in {r.info.run_id for r in finished}

    again = _out(subprocess.run(_cmd(work), capture_output=True, text=True, env=env))
    assert again["reused"] and again["run_id"] == results[0]["run_id"]
    forced = _out(subprocess.run(_cmd(work, "--force"), capture_output=True, text=True, env=env))
    assert not forced["reused"] and forced["run_id"] != results[0]["run_id"] and forced["resumed_from"] == 0
