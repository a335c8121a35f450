"""End to end: the smoke ablation as a real Prefect flow (ephemeral API, temporary PREFECT_HOME)
logging to a real MLflow SQLite store, read back afterwards through MLflow's client."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.train_size=96", "data.eval_size=16", "train.steps=12", "train.batch_size=8", "train.log_every=4",
        "eval.prompts=4", "eval.seeds_per_prompt=2", "eval.steps=4", "eval.tagger_steps=20"]


@pytest.mark.slow
def test_smoke_flow_logs_parent_variants_and_eval_points(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), MLFLOW_TRACKING_URI="")
    env.pop("PREFECT_API_URL", None)
    args = [sys.executable, "-m", "flows.cli", "ablation", str(ROOT / "configs/smoke.yaml"),
            "--work-dir", str(tmp_path / "work"), "--tracking-uri", uri, "--units", "2"]
    for o in TINY + ["train.seeds=[0,1]"]:  # two training-seed replicates of each arm
        args += ["--set", o]
    p = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "mlflow ui --backend-store-uri" in p.stdout + p.stderr
    assert "units run 2 at a time" in p.stdout + p.stderr  # four units, two worker processes
    assert "expected CPU-hours until every primary is decided" in p.stdout + p.stderr

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("nai3-smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    assert f"#/experiments/{exp.experiment_id}/runs" in p.stdout + p.stderr
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nai3.kind") == "ablation"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    pid = parents[0].info.run_id
    train = [r for r in runs if r.data.tags.get("nai3.kind") == "train"]
    evals = [r for r in runs if r.data.tags.get("nai3.kind") == "eval"]
    assert {(r.data.tags["nai3.variant"], r.data.tags["nai3.seed"]) for r in train} == {
        ("sdxl-eps", "0"), ("nai-v-ztsnr", "0"), ("sdxl-eps", "1"), ("nai-v-ztsnr", "1")}
    assert all(r.data.tags["mlflow.parentRunId"] == pid for r in train + evals)
    assert len(evals) == 2 * 2 * 2 * 2  # seeds × variants × CFG scales × starting σ
    assert {r.data.params["variant.seed"] for r in evals} == {"0", "1"}
    for r in evals:
        m, params = r.data.metrics, r.data.params
        assert float(params["eval.cfg_scale"]) == m["eval/cfg_scale"]
        assert float(params["eval.first_sigma"]) == m["eval/first_sigma"]
        assert params["variant.prediction"] in ("eps", "v") and params["variant.ztsnr"] in ("True", "False")
        for key in ("eval/fd_tagger", "eval/tag_recall", "eval/tag_precision", "eval/mean_leak_slope"):
            assert math.isfinite(m[key]), key
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"samples.png", "per_image.csv"} <= names
    points = {(float(r.data.params["eval.cfg_scale"]), float(r.data.params["eval.first_sigma"])) for r in evals}
    assert points == {(1.0, 14.6), (5.0, 14.6), (1.0, 20000.0), (5.0, 20000.0)}
    for r in evals:  # a child run's duration covers its sampling and metrics, not only its logging
        assert (r.info.end_time - r.info.start_time) / 1000 >= 0.9 * r.data.metrics["eval/seconds"] > 0
    for r in train:
        assert r.info.status == "FINISHED" and math.isfinite(r.data.metrics["train/loss"])
        # what a seed cost: each stage's wall time and the threads it ran with (one each: two units, two cores)
        assert r.data.metrics["cost/train_seconds"] > 0 and r.data.metrics["cost/eval_seconds"] > 0
        assert r.data.tags["nai3.threads"] == "1" == r.data.tags["nai3.eval_threads"]
        assert [d.dataset.digest for d in r.inputs.dataset_inputs]  # the training data, in the Dataset column
        ck = {a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")}
        assert {"checkpoint/model.safetensors", "checkpoint/ema.safetensors", "checkpoint/meta.json"} <= ck
        assert "config.resolved.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
    results = json.loads(Path(client.download_artifacts(pid, "results/results.json", str(tmp_path / "dl"))).read_text())
    from nai3eval.record import Record

    record = Record.from_dict(results["record"])
    assert sum(len(record.settings(r, "sweep")) for r in record.runs.values()) == 16
    assert sorted(r.seed for r in record.runs.values()) == [0, 0, 1, 1]
    report_json = json.loads(Path(client.download_artifacts(pid, "report/report.json", str(tmp_path / "dl2")))
                             .read_text())
    c2 = next(c for c in report_json["claims"] if c["id"] == "C2-package")  # the smoke arms: SDXL ε vs NAI
    assert c2["n_seeds"] == 2 and c2["level"] == "checkpoint"  # K < 3: no recipe-level word
    assert c2["verdict"] == "interval only" and c2["arms"] == {"baseline": "sdxl-eps", "treatment": "nai-v-ztsnr"}
    assert all(c["level"] == "checkpoint" for c in report_json["claims"])
    report = {a.path for a in client.list_artifacts(pid, "report")}
    assert {"report/report.md", "report/report.html", "report/report.json", "report/fd_tagger_vs_cfg.png"} <= report
    parent_tags = client.get_run(pid).data.tags
    parent_metrics = client.get_run(pid).data.metrics
    assert parent_metrics["cost/sdxl-eps/cpu_hours_per_seed"] > 0 and parent_metrics["cost/report_seconds"] > 0
    assert parent_tags["nai3.claims_spec_sha256"] == report_json["claims_spec_sha256"]
    words = ("interval only", "not measured", "check passed", "check failed")  # K < 3: no verdict word on the run
    from nai3eval.claims import load_claims_spec

    ids = [c.id for c in load_claims_spec().claims]
    assert {"C1", "C2", "C3-linear", "C9"} <= set(ids)
    assert all(parent_tags[f"nai3.claim.{i}"] in words or parent_tags[f"nai3.claim.{i}"].startswith("decided in ")
               for i in ids if load_claims_spec().by_id(i).parts == ()), parent_tags

    # the same report re-rendered from the run, and a checkpoint evaluated on its own by run id
    p = subprocess.run([sys.executable, "-m", "flows.cli", "report", pid, "--tracking-uri", uri, "--out",
                        str(tmp_path / "rerender")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "rerender" / "report.html").is_file() and "C9" in p.stdout
    train_id = next(r.info.run_id for r in train if r.data.tags["nai3.variant"] == "nai-v-ztsnr")
    args = [sys.executable, "-m", "flows.cli", "eval", train_id, "--config", str(ROOT / "configs/smoke.yaml"),
            "--tracking-uri", uri, "--work-dir",
            str(tmp_path / "work"), "--no-progress", "--set", "eval.cfg_scales=[3.5]", "--set", "eval.first_sigmas=[inf]"]
    for o in TINY:
        args += ["--set", o]
    p = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cfg3.5-sigmainf" in " ".join(r.info.run_name for r in client.search_runs([exp.experiment_id]))

    # the next night (`--next-seed`): seeds 0 and 1 are found by recipe and reused, seed 2 is trained,
    # and the report over K = 3 decides at the first look, recipe-level
    night = [sys.executable, "-m", "flows.cli", "ablation", str(ROOT / "configs/smoke.yaml"), "--next-seed",
             "--sequential", "--work-dir", str(tmp_path / "work"), "--tracking-uri", uri]
    for o in TINY:
        night += ["--set", o]
    p = subprocess.run(night, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "units run one after another in this process" in p.stdout + p.stderr
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    train = [r for r in runs if r.data.tags.get("nai3.kind") == "train"]
    assert sorted(int(r.data.tags["nai3.seed"]) for r in train) == [0, 0, 1, 1, 2, 2]  # nothing trained twice
    parent = max((r for r in runs if r.data.tags.get("nai3.kind") == "ablation"), key=lambda r: r.info.start_time)
    assert parent.data.params["train.replicate_seeds"] == "0,1,2"
    doc = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/report.json",
                                                    str(tmp_path / "dl3"))).read_text())
    c2 = next(c for c in doc["claims"] if c["id"] == "C2-package")
    assert c2["n_seeds"] == 3 and c2["level"] == "recipe" and c2["look"] == 3


@pytest.mark.slow
def test_eval_only_flow_on_a_checkpoint_folder(tmp_path):
    """The eval-only flow (ephemeral Prefect) evaluates a checkpoint trained by `nai3 train`."""
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), MLFLOW_TRACKING_URI="")
    env.pop("PREFECT_API_URL", None)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    sets = []
    for o in TINY:
        sets += ["--set", o]
    p = subprocess.run([sys.executable, "-m", "flows.cli", "train", str(ROOT / "configs/smoke.yaml"), "--variant",
                        "nai-v-ztsnr", "--work-dir", str(tmp_path / "w"), "--tracking-uri", uri, "--no-progress", *sets],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    ckpt = json.loads(p.stdout[p.stdout.index("{"):])["checkpoint"]
    code = ("import json, sys; from flows.eval_only import eval_only; "
            f"r = eval_only([{ckpt!r}], config={str(ROOT / 'configs/smoke.yaml')!r}, overrides={TINY!r}, "
            f"work_dir={str(tmp_path / 'w')!r}, tracking_uri={uri!r}); "
            "print('POINTS', len(r['results'][0].settings(next(iter(r['results'][0].runs.values())), 'sweep')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "POINTS 4" in p.stdout
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("nai3-smoke")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("nai3.mode") == "eval-only"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent[0].info.run_id, "report")}
