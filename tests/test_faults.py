"""Faults during training: nothing already computed is lost, and the error says what happened
(the fault matrix's checkpoint rows; docs/faults.md)."""
import errno

import pytest
import torch

from nai3train import checkpoint as C
from nai3train.checkpoint import latest_step_checkpoint, load_meta, step_checkpoints
from nai3train.config import VariantConfig
from nai3train.trainer import train_variant


V = VariantConfig(name="v", prediction="v", ztsnr=True)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tiny_data, tmp_path, tiny_config, caplog):
    d, vocab = tiny_data
    cfg = tiny_config(["train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=2"])  # a fallback kept
    train_variant(cfg, V, d, vocab, tmp_path, progress=False)
    newest = latest_step_checkpoint(tmp_path)
    assert load_meta(newest)["step"] == 4
    weights = newest / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated mid-file
    cfg6 = tiny_config(["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2"])
    with caplog.at_level("WARNING"):
        r = train_variant(cfg6, V, d, vocab, tmp_path, progress=False, resume=True)
    assert r.resumed_from == 2 and "step-00000004 unreadable" in caplog.text and "falling back" in caplog.text


def test_a_checkpoint_of_another_variant_is_never_skipped_silently(tiny_data, tmp_path, tiny_config):
    d, vocab = tiny_data
    train_variant(tiny_config(["train.steps=2", "train.checkpoint_every=2"]), V, d, vocab, tmp_path, progress=False)
    other = VariantConfig(name="v", prediction="eps", ztsnr=False)
    with pytest.raises(ValueError, match="refusing to resume a different variant"):
        train_variant(tiny_config(["train.steps=4"]), other, d, vocab, tmp_path, progress=False, resume=True)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one_and_names_the_path(tiny_data, tmp_path, tiny_config,
                                                                                       monkeypatch):
    d, vocab = tiny_data
    real_save = C.save_file
    calls = {"n": 0}

    def save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # the first step checkpoint (3 files) fits; the next write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(C, "save_file", save_file)
    with pytest.raises(C.CheckpointWriteError, match=r"could not write checkpoint .*step-00000004.*No space left"):
        train_variant(tiny_config(["train.steps=4", "train.checkpoint_every=2"]), V, d, vocab, tmp_path,
                      progress=False)
    kept = step_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["step-00000002"]
    assert all(torch.isfinite(t).all() for t in C.load_weights(kept[0]).values())  # intact and readable
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written folder


@pytest.mark.slow
def test_sigkill_during_evaluation_resumes_without_redoing_finished_points(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from .conftest import ROOT, TINY

    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = []
    for o in TINY + ["train.steps=4", "eval.tagger_steps=20", "eval.cfg_scales=[1,2,3,4]", "eval.first_sigmas=[14.6]",
                     "eval.steps=20"]:
        sets += ["--set", o]
    base = [sys.executable, "-m", "flows.cli"]
    p = subprocess.run(base + ["train", str(ROOT / "configs/smoke.yaml"), "--variant", "nai-v-ztsnr", "--work-dir",
                               str(tmp_path / "w"), "--tracking-uri", uri, "--no-progress", *sets],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    ckpt = json.loads(p.stdout[p.stdout.index("{"):])["checkpoint"]
    cmd = base + ["eval", ckpt, "--work-dir", str(tmp_path / "w"), "--tracking-uri", uri, "--no-progress",
                  "--json", str(tmp_path / "points.json"), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, first = time.time() + 300, []
    while time.time() < deadline and proc.poll() is None and not first:
        first = list((tmp_path / "w" / "evals").glob("*/*.json")) if (tmp_path / "w" / "evals").is_dir() else []
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert first and proc.returncode == -signal.SIGKILL, "the evaluation finished before it could be killed"
    finished = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "w" / "evals").glob("*/*.json")}
    assert 1 <= len(finished) < 4

    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "points.json").read_text())
    assert sorted({m["setting"]["cfg_scale"] for m in res["measurements"] if m["setting"]["kind"] == "sweep"}) == [
        1.0, 2.0, 3.0, 4.0]
    for f in (tmp_path / "w" / "evals").glob("*/*.json"):
        if f.name in finished:
            assert f.stat().st_mtime_ns == finished[f.name]  # not sampled again
    client = MlflowClient(uri)
    parents = [r for r in client.search_runs([client.get_experiment_by_name("nai3-smoke").experiment_id])
               if r.data.tags.get("nai3.kind") == "eval-only" and r.info.status == "FINISHED"]
    assert int(parents[0].data.tags["nai3.resumed_eval_points.nai-v-ztsnr"]) == len(finished)


def test_corrupt_metric_weights_cost_that_metric_not_the_sweep(tmp_path):
    """Truncated Inception weights (both formats), a CLIP folder with garbage weights, a corrupt
    ONNX tagger and a tag list without its columns: each metric is skipped with its reason."""
    import torch

    from nai3eval.metrics import InstrumentContext, InstrumentSettings
    from nai3eval.metrics.inception import InceptionMetrics
    from nai3eval.metrics.pretrained import RealDataMetrics

    junk = bytes(range(256)) * 40
    (tmp_path / "inception.pth").write_bytes(junk)
    (tmp_path / "inception.safetensors").write_bytes(junk)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text("{not json")
    (tmp_path / "model.onnx").write_bytes(junk)
    (tmp_path / "tags.csv").write_text("wrong,header\n1,2\n")
    real = torch.zeros(2, 3, 8, 8)
    m = RealDataMetrics(str(clip), str(tmp_path / "model.onnx"), str(tmp_path / "tags.csv"))
    assert not m.active and len(m.problems) == 2
    assert [p.split(" (")[0] for p in m.problems] == ["CLIPScore", "WD14 tag adherence"]
    assert str(clip) in m.problems[0] and "model.onnx" in m.problems[1]
    for weights in ("inception.pth", "inception.safetensors"):  # a researcher's file wins, and fails alone
        ctx = InstrumentContext(InstrumentSettings(str(tmp_path / weights)), real, [[]] * 2, torch.zeros(2))
        assert InceptionMetrics.build(ctx) is None and len(ctx.problems) == 1
        assert ctx.problems[0].startswith("Inception FD (") and weights in ctx.problems[0]


def test_a_latent_cache_file_deleted_mid_run_is_a_named_error(tmp_path):
    """Fault row: the SDXL latent cache loses a file while training reads it — a CacheEntryMissing
    that says what happened and what to do, not a TypeError at the batch."""
    import torch

    from nai3train.models.sdxl import CacheEntryMissing, DiskCache

    cache = DiskCache(tmp_path / "latents")
    key = DiskCache.key("image", b"\x00")
    cache.put(key, {"latent": torch.ones(4, 2, 2)})
    assert torch.equal(cache.get(key)["latent"], torch.ones(4, 2, 2))
    (tmp_path / "latents" / f"{key}.safetensors").unlink()
    with pytest.raises(CacheEntryMissing, match="disappeared during the run.*resumes from its last checkpoint"):
        cache.get(key)


def test_disk_full_during_evaluation_names_the_file_and_loses_no_finished_point(tmp_path, tiny_config, monkeypatch):
    """Issue 25: the disk fills while a sample grid is written, then while the report is. Each
    step fails with ``DiskFull`` naming the file and the bytes it needed; no half-written file is
    left; every point measured before is kept, and the run after it samples only what is missing."""
    import errno
    import pathlib


    from flows import pipeline
    from nai3train.ops.atomic import DiskFull
    cfg = tiny_config(["train.steps=4", "eval.tagger_steps=20", "eval.cfg_scales=[1,2,3,4]", "eval.first_sigmas=[14.6]",
                       "eval.steps=20", "train.threads=1"])
    ws = pipeline.Workspace.open(cfg, tmp_path / "w", f"sqlite:///{tmp_path}/mlflow.db")
    data = pipeline.prepare_data(cfg, ws)
    tagger = pipeline.prepare_tagger(cfg, data, ws)
    trained = pipeline.train(cfg, cfg.variants[0], data, ws, progress=False)
    real_write = pathlib.Path.write_bytes

    def full_disk_for(match, after: int):
        seen = {"n": 0}

        def write_bytes(self, data):
            if match(self):
                seen["n"] += 1
                if seen["n"] > after:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data)
        return write_bytes

    grids = ws.work / "results" / "grids"
    monkeypatch.setattr(pathlib.Path, "write_bytes",
                        full_disk_for(lambda f: f.parent == grids and ".png" in f.name, after=1))
    with pytest.raises(DiskFull) as err:
        pipeline.evaluate(cfg, trained, data, tagger, ws, progress=False)
    assert str(grids) in str(err.value) and "needs" in str(err.value) and "kB" in str(err.value)
    points = {f.name: f.stat().st_mtime_ns for f in ws.work.glob("evals/*/*.json")}
    assert len(points) == 2  # the first point whole, the second measured and kept before its grid failed
    assert not list(grids.glob(".*tmp"))  # no half-written grid
    monkeypatch.setattr(pathlib.Path, "write_bytes", real_write)
    result = pipeline.evaluate(cfg, trained, data, tagger, ws, progress=False)
    assert len(result.settings(next(iter(result.runs.values())), "sweep")) == 4
    assert all(f.stat().st_mtime_ns == points[f.name] for f in ws.work.glob("evals/*/*.json") if f.name in points)

    report = ws.work / "results" / "report"
    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk_for(lambda f: "report.html" in f.name, after=0))
    with pytest.raises(DiskFull) as err:
        pipeline.report(cfg, [result], [trained], data, ws)
    assert str(report / "report.html") in str(err.value)
    assert not (report / "report.html").exists() and not list(report.glob(".report.html*"))
    monkeypatch.setattr(pathlib.Path, "write_bytes", real_write)
    assert (pipeline.report(cfg, [result], [trained], data, ws).folder / "report.html").is_file()
