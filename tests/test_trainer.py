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
from nai3train.config import VariantConfig
from nai3train.data import BucketedDataset
from nai3train.data import PreparedData
from nai3train.ops.run import train_tracked
from nai3train.ops.tracking import open_experiment
from nai3train.trainer import TrainingDiverged, train_variant

from .conftest import ROOT, TINY, assert_same_weights


def test_eps_with_ztsnr_trains_finitely_and_warns(tiny_data, tmp_path, caplog, tiny_config):
    d, vocab = tiny_data
    cfg = tiny_config(["train.steps=6"])
    v = VariantConfig(name="eps-ztsnr", prediction="eps", ztsnr=True)
    with caplog.at_level("WARNING"):
        r = train_variant(cfg, v, d, vocab, tmp_path, progress=False)
    assert "predicted failure" in caplog.text
    assert torch.isfinite(torch.tensor(r.final_loss))


def test_nan_stops_training_keeps_checkpoint_and_fails_the_run(tiny_data, tmp_path, monkeypatch, tiny_config):
    d, vocab = tiny_data
    real_batch = BucketedDataset.batch

    def batch(self, indices, generator):  # image 5 decodes to NaN: some batch will hit it
        x, ids = real_batch(self, indices, generator)
        for j, i in enumerate(indices):
            if i == 5:
                x[j] = float("nan")
        return x, ids

    monkeypatch.setattr(BucketedDataset, "batch", batch)
    cfg = tiny_config(["train.steps=200", "train.checkpoint_every=1",
                                                            "experiment=nan-test"])
    v = cfg.variants[1]
    uri, exp = open_experiment(cfg.experiment, f"sqlite:///{tmp_path}/db/mlflow.db")
    data = PreparedData(train=str(tmp_path / "poisoned"), eval="", content_hash="poisoned")
    (tmp_path / "poisoned").mkdir()
    monkeypatch.setattr("nai3train.ops.run.scan_folder", lambda *a, **k: None)
    monkeypatch.setattr(BucketedDataset, "from_scan", classmethod(lambda cls, *a: d))
    with pytest.raises(TrainingDiverged, match=r"nai-v-ztsnr: non-finite loss at step \d+") as err:
        train_tracked(cfg, v, data, tmp_path / "work" / "run", uri, exp, progress=False)
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
    cmd = [sys.executable, "-m", "flows.cli", "train", str(ROOT / "configs/smoke.yaml"), "--variant",
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
    assert_same_weights(ref_ck, Path(out["checkpoint"]), "resume")


@pytest.mark.parametrize("tag_weighting", [False, True])
def test_tag_weights_scale_the_per_sample_loss(tiny_data, tmp_path, tag_weighting, tiny_config):
    from nai3train.data import TagWeighting
    from nai3train.diffusion import min_snr_weight

    d, vocab = tiny_data
    cfg = tiny_config(["train.steps=3"])
    v = VariantConfig(name="v", prediction="v", ztsnr=True, min_snr_gamma=5.0, tag_weighting=tag_weighting)
    seen = []
    train_variant(cfg, v, d, vocab, tmp_path, progress=False, on_step=lambda s, info: seen.append(info))
    tag_w = torch.from_numpy(TagWeighting().weights(d.tags)).float()
    assert not torch.allclose(tag_w, torch.ones_like(tag_w))
    for info in seen:
        want = min_snr_weight("v", info["sigma"], 5.0).float()
        if tag_weighting:
            want = want * tag_w[info["idx"]]
        torch.testing.assert_close(info["weight"], want)
        torch.testing.assert_close(info["loss"], (info["weight"] * info["per_sample"]).mean())


def test_v_ztsnr_learns_the_pure_noise_step(tiny_data, tmp_path, tiny_config):
    """The loss at σ = ∞ (an x0 regression onto the prompt's mean image) falls during a short run."""
    from nai3train.diffusion import noise_sample, training_target
    from nai3train.models import TinyTagUNet
    from nai3train.variant import build_denoiser

    d, vocab = tiny_data
    cfg = tiny_config(["train.steps=600", "train.lr=0.003", "train.batch_size=16"])
    v = VariantConfig(name="v", prediction="v", ztsnr=True)
    train_variant(cfg, v, d, vocab, tmp_path, progress=False)

    def inf_loss(model):
        den = build_denoiser(model, v, 3 * d.max_area)
        gen = torch.Generator().manual_seed(9)
        idx = [i for i in range(len(d)) if d.bucket_of[i] == d.bucket_of[0]][:32]
        x0, time_ids = d.batch(idx, None)
        sigma = torch.full((len(idx),), float("inf"), dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            f = den.raw(noise_sample(x0, eps, sigma), sigma, {"tag_ids": vocab.ids([d.tags[i] for i in idx], 8),
                                                                "time_ids": time_ids})
        return float((f - training_target("v", x0, eps, sigma)).pow(2).mean())

    torch.manual_seed(cfg.train.seed)
    init = TinyTagUNet(len(vocab), 8, (16, 32), 16, 8)
    trained = TinyTagUNet(len(vocab), 8, (16, 32), 16, 8)
    trained.load_state_dict(load_file(str(tmp_path / "checkpoint" / "model.safetensors")))
    before, after = inf_loss(init), inf_loss(trained)
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
def test_two_process_accelerate_run(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    work = tmp_path / "acc"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "flows.cli", "train",
           str(ROOT / "configs/smoke.yaml"), "--variant", "nai-v-ztsnr", "--work-dir", str(work), "--tracking-uri",
           f"sqlite:///{work}/mlflow.db", "--no-progress"]
    for o in TINY + ["train.steps=6", "train.threads=1"]:
        cmd += ["--set", o]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = json.loads(p.stdout[p.stdout.index("{"):])
    assert (Path(out["checkpoint"]) / "ema.safetensors").is_file()
    run = MlflowClient(f"sqlite:///{work}/mlflow.db").get_run(out["run_id"])
    assert run.data.params["train.world_size"] == "2" and run.info.status == "FINISHED"
    assert len(MlflowClient(f"sqlite:///{work}/mlflow.db").search_runs([run.info.experiment_id])) == 1



ACC_SCRIPT = """
import hashlib, json, os, sys
from nai3train.config import load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder
from nai3train.models import sdxl
import nai3train.trainer as T

puts, live = [], {}
real_put = sdxl.DiskCache.put
sdxl.DiskCache.put = lambda self, key, tensors: (puts.append(key), real_put(self, key, tensors))[1]

class Capture(T.EMA):  # keeps the live model: each rank hashes its own weights after training
    def __init__(self, model, decay):
        super().__init__(model, decay)
        live["model"] = model

T.EMA = Capture
root, model, out, config = sys.argv[1:5]
d = BucketedDataset.from_scan(scan_folder(os.path.join(root, "train")), default_buckets(16))
cfg = load_config(config, ["model.kind=sdxl", f"model.path={model}", "data.resolution=16", "train.steps=3",
                           "train.batch_size=2", "train.threads=1"])
T.train_variant(cfg, cfg.variants[1], d, Vocabulary.build(d.tags), out, progress=False)
w = live["model"].state_dict()
digest = hashlib.sha256(b"".join(w[k].detach().float().numpy().tobytes() for k in sorted(w))).hexdigest()
with open(os.path.join(out, "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump({"puts": len(puts), "digest": digest}, f)
"""


@pytest.mark.slow
def test_two_process_sdxl_run_fills_the_cache_once_and_keeps_the_ranks_identical(tmp_path):
    """accelerate launch, 2 CPU processes (DDP over gloo), the tiny SDXL bundle: rank 0 encodes the latents and
    prompts, rank 1 only reads them; nothing raises; both ranks end with the same parameters."""
    from nai3train.data import synthesize

    from .sdxl_tiny import build_tiny_sdxl

    model = build_tiny_sdxl(tmp_path / "sdxl")
    synthesize(tmp_path / "bench", 12, 2, 16, seed=0)
    script = tmp_path / "run.py"
    script.write_text(ACC_SCRIPT)
    out = tmp_path / "runs" / "v"
    out.mkdir(parents=True)
    # accelerate's --cpu alone starts ONE process without MPI; --multi_gpu is torchrun, gloo on a CPU (training.md)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path / "bench"), str(model),
           str(out), str(ROOT / "configs/smoke.yaml")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MLFLOW_TRACKING_URI=""), timeout=600,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["puts"] >= 12 + 1 and ranks[1]["puts"] == 0  # 12 latents, the prompts and the empty one
    assert ranks[0]["digest"] == ranks[1]["digest"]


def test_the_trainer_imports_without_mlflow():
    """A bare GPU image may lack MLflow: the trainer (and what it imports) must load without it."""
    code = ("import sys\nsys.modules['mlflow'] = None  # any 'import mlflow…' now raises ImportError\n"
            "import nai3train.trainer, nai3train.training, nai3train.ops.memory\n"
            "assert not any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules if sys.modules[m])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_data, tmp_path, tiny_config):
    """train.compile: the tiny model through torch.compile (inductor, CPU) gives the eager losses to
    float tolerance, step by step."""
    d, vocab = tiny_data
    losses = {}
    for compiled in (False, True):
        cfg = tiny_config(["train.steps=3", f"train.compile={str(compiled).lower()}"])
        seen = []
        train_variant(cfg, cfg.variants[1], d, vocab, tmp_path / str(compiled), progress=False,
                      on_step=lambda s, info: seen.append(info["per_sample"].clone()))
        losses[compiled] = torch.stack(seen)
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-4, atol=1e-5)
