"""Training faults: exact resume after SIGKILL, the NaN guard, ε + ZTSNR trains finitely."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from nai3train.checkpoint import latest_step_checkpoint, load_meta
from nai3train.config import VariantConfig, load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.run import run_training
from nai3train.tracking import open_experiment
from nai3train.trainer import TrainingDiverged, train_variant

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.train_size=64", "data.eval_size=8", "train.batch_size=4", "train.log_every=5",
        "model.block_out_channels=[16,32]", "model.cross_attention_dim=16", "data.resolution=8"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    synthesize(root, 64, 8, 8, seed=0)
    d = BucketedDataset.from_scan(scan_folder(root / "train"), default_buckets(8))
    return d, Vocabulary.build(d.tags)


def test_eps_with_ztsnr_trains_finitely_and_warns(tiny_data, tmp_path, caplog):
    d, vocab = tiny_data
    cfg = load_config(ROOT / "configs/smoke.yaml", TINY + ["train.steps=6"])
    v = VariantConfig(name="eps-ztsnr", prediction="eps", ztsnr=True)
    with caplog.at_level("WARNING"):
        r = train_variant(cfg, v, d, vocab, tmp_path, progress=False)
    assert "predicted failure" in caplog.text
    assert torch.isfinite(torch.tensor(r.final_loss))


def test_nan_stops_training_keeps_checkpoint_and_fails_the_run(tiny_data, tmp_path, monkeypatch):
    d, vocab = tiny_data
    real_batch = BucketedDataset.batch

    def batch(self, indices, generator):  # image 5 decodes to NaN: some batch will hit it
        x, ids = real_batch(self, indices, generator)
        for j, i in enumerate(indices):
            if i == 5:
                x[j] = float("nan")
        return x, ids

    monkeypatch.setattr(BucketedDataset, "batch", batch)
    cfg = load_config(ROOT / "configs/smoke.yaml", TINY + ["train.steps=200", "train.checkpoint_every=1",
                                                            "experiment=nan-test"])
    v = cfg.variants[1]
    uri, exp = open_experiment(cfg.experiment, f"sqlite:///{tmp_path}/db/mlflow.db")
    data = {"train": str(tmp_path / "poisoned"), "content_hash": "poisoned"}
    (tmp_path / "poisoned").mkdir()
    monkeypatch.setattr("nai3train.run.scan_folder", lambda *a, **k: None)
    monkeypatch.setattr(BucketedDataset, "from_scan", classmethod(lambda cls, *a: d))
    with pytest.raises(TrainingDiverged, match=r"nai-v-ztsnr: non-finite loss at step \d+") as err:
        run_training(cfg, v, data, tmp_path / "work", uri, exp, progress=False)
    last = err.value.last_checkpoint
    assert last is not None and last.is_dir()
    step = int(str(err.value).split("at step ")[1].split(";")[0])
    assert load_meta(last)["step"] == step  # the checkpoint just before the bad step
    assert all(torch.isfinite(t).all() for t in load_file(str(last / "model.safetensors")).values())
    run = [r for r in MlflowClient(uri).search_runs([exp]) if r.data.tags.get("nai3.kind") == "train"][0]
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["nai3.error"]
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "last_good_checkpoint")}
    assert "last_good_checkpoint/model.safetensors" in arts


def _train_cmd(work: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nai3train.cli", "train", str(ROOT / "configs/smoke.yaml"), "--variant",
           "nai-v-ztsnr", "--work-dir", str(work), "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--no-progress"]
    for o in TINY + ["train.steps=150", "train.checkpoint_every=10", "train.threads=1"]:
        cmd += ["--set", o]
    return cmd + extra


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    ref = subprocess.run(_train_cmd(tmp_path / "ref", []), capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    work = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(work, []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        runs = list((work / "variants").glob("*")) if (work / "variants").is_dir() else []
        last = latest_step_checkpoint(runs[0]) if runs else None
        if last is not None and load_meta(last)["step"] >= 30:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = load_meta(last)["step"]
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (runs[0] / "checkpoint").exists()

    res = subprocess.run(_train_cmd(work, ["--resume"]), capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["resumed_from"] >= killed_at > 0

    ref_ck = next((tmp_path / "ref" / "variants").glob("*")) / "checkpoint"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(ref_ck / name)), load_file(str(Path(out["checkpoint"]) / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
