"""End to end on SDXL: the ablation flow trains two variants of a tiny random SDXL (built with
diffusers' own classes, saved with save_pretrained) and evaluates both to a claims report."""
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from .conftest import ROOT
from .sdxl_tiny import build_tiny_sdxl


@pytest.mark.slow
def test_ablation_flow_on_a_tiny_sdxl(tmp_path):
    model = build_tiny_sdxl(tmp_path / "sdxl")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), MLFLOW_TRACKING_URI="")
    env.pop("PREFECT_API_URL", None)
    sets = ["model.kind=sdxl", f"model.path={model}", "data.resolution=16", "data.train_size=24", "data.eval_size=8",
            "train.steps=3", "train.batch_size=2", "eval.tagger_steps=10", "eval.prompts=2", "eval.seeds_per_prompt=2",
            "eval.steps=3", "eval.cfg_scales=[2]", "eval.first_sigmas=[14.6, 20000]",
            f"eval.prompt_file={ROOT / 'configs/prompts/sdxl_default.txt'}", "experiment=nai3-sdxl-e2e"]
    cmd = [sys.executable, "-m", "flows.cli", "ablation", str(ROOT / "configs/smoke.yaml"), "--work-dir",
           str(tmp_path / "w"), "--tracking-uri", uri]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("nai3-sdxl-e2e")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parent = next(r for r in runs if r.data.tags.get("nai3.kind") == "ablation")
    assert parent.info.status == "FINISHED"
    train = [r for r in runs if r.data.tags.get("nai3.kind") == "train"]
    evals = [r for r in runs if r.data.tags.get("nai3.kind") == "eval"]
    assert len(train) == 2 and all(r.info.status == "FINISHED" for r in train)
    assert len(evals) == 2 * 2  # variants × starting σ
    results = json.loads(open(client.download_artifacts(parent.info.run_id, "results/results.json",
                                                        str(tmp_path / "dl"))).read())
    from nai3eval.record import Record
    from nai3eval.setting import Setting

    record = Record.from_dict(results["record"])
    prompts = {tuple(p_) for r in record.runs.values() for p_ in r.prompts}
    assert ("1girl", "solo", "black_background", "simple_background", "upper_body") in prompts  # the prompt file
    at_inf = Setting("x0", float("inf"))
    assert record.scalar(record.runs[("nai-v-ztsnr", 0)], at_inf, "nonfinite_frac") == 0.0  # v's exact limit
    assert record.scalar(record.runs[("sdxl-eps", 0)], at_inf, "nonfinite_frac") == 1.0  # ε's predicted blow-up
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
