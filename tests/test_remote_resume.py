"""A worker's machine dies and the work folder is not shared (``train.checkpoint_store: tracking``):
another worker, with an empty work folder of its own, resumes from the checkpoint the dead one
logged to MLflow — against a real tracking server with proxied artifacts."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from nai3train.config import ConfigError, load_config
from nai3train.ops.remote_checkpoint import COMPLETE_TAG, RESUMED_FROM_ARTIFACT, RESUMED_FROM_RUN

from .conftest import ROOT, TINY, assert_same_weights
from .servers import _free_port, _stop, start_mlflow


def test_an_unknown_checkpoint_store_is_refused_with_its_key():
    with pytest.raises(ConfigError, match=r"train\.checkpoint_store.*'local' or 'tracking'"):
        load_config(ROOT / "configs" / "smoke.yaml", ["train.checkpoint_store=s3"])


def test_where_checkpoints_are_kept_is_not_part_of_the_run_key(tiny_config):
    """Switching a run to the tracking store keeps its run folder, its reuse and its seeds."""
    from flows.runs import recipe_key, run_key

    local, tracking = tiny_config(), tiny_config(["train.checkpoint_store=tracking"])
    v = local.variants[0]
    assert run_key(local, v, "d") == run_key(tracking, v, "d")
    assert recipe_key(local, v, "d") == recipe_key(tracking, v, "d")
    assert run_key(local, v, "d") != run_key(tiny_config(["train.checkpoint_every=7"]), v, "d")


def _step_folder(run_dir: Path, step: int) -> Path:
    folder = run_dir / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"step": step}))
    (folder / "state.safetensors").write_bytes(b"x" * 64)
    return folder


def test_what_is_uploaded_is_a_whole_staged_copy_kept_until_delivered(tmp_path, monkeypatch, caplog):
    """Rotation removes a step folder before the buffer delivers it: the staged copy is still whole;
    it goes only after its upload, which is then tagged complete; at most two wait in an outage."""
    from nai3train.ops import remote_checkpoint as R
    from nai3train.ops.tracking import Tracker

    uploaded, tags, queued = [], {}, []
    monkeypatch.setattr(Tracker, "log_artifact", lambda self, p, a=None: uploaded.append(
        (a, sorted(f.name for f in Path(p).iterdir()))))
    monkeypatch.setattr(Tracker, "set_tags", lambda self, t: tags.update(t))

    class Buffer:  # the BufferedTracker's surface: it names the path and delivers later
        def log_artifact(self, path, artifact_path=None):
            queued.append((str(Path(path).resolve()), artifact_path))

    (tmp_path / R.OUTBOX / "dead-run" / "step-00000005").mkdir(parents=True)  # a killed process's leftovers
    ups = R.CheckpointUploads(Tracker("http://unused", "run-1"), tmp_path, final_step=50)
    assert not (tmp_path / R.OUTBOX / "dead-run").exists()
    ups.attach(Buffer())
    for step in (10, 20, 30):  # the server is away: nothing is delivered
        ups.ship(_step_folder(tmp_path, step))
    ups.ship(_step_folder(tmp_path, 50))  # the last step: the run is about to finish, not shipped
    assert [a for _, a in queued] == ["resumable/step-00000010", "resumable/step-00000020"]
    assert "stays local only" in caplog.text

    import shutil
    shutil.rmtree(tmp_path / "checkpoints")  # rotated away before delivery
    ups.tracker.log_artifact(*queued[0])  # the sender thread, once the server answers
    assert uploaded == [("resumable/step-00000010", ["meta.json", "state.safetensors"])]
    assert tags == {R.COMPLETE_TAG: "resumable/step-00000010"}
    assert not Path(queued[0][0]).exists() and Path(queued[1][0]).exists()

    shutil.rmtree(queued[1][0])  # removed by hand: skipped with a warning, never tagged
    ups.tracker.log_artifact(*queued[1])
    assert len(uploaded) == 1 and tags[R.COMPLETE_TAG] == "resumable/step-00000010"
    assert "gone before its upload" in caplog.text
    ups.ship(_step_folder(tmp_path, 40))  # the backlog is gone: shipping goes on
    assert queued[-1][1] == "resumable/step-00000040"


def _train(work: Path, uri: str, extra: list[str] = (), store: str = "tracking") -> list[str]:
    cmd = [sys.executable, "-m", "flows.cli", "train", str(ROOT / "configs/smoke.yaml"), "--variant", "nai-v-ztsnr",
           "--work-dir", str(work), "--tracking-uri", uri, "--no-progress"]
    for o in TINY + ["train.steps=150", "train.checkpoint_every=10", "train.threads=1",
                     f"train.checkpoint_store={store}"]:
        cmd += ["--set", o]
    return cmd + list(extra)


def _uploaded(client: MlflowClient) -> tuple[str, int] | None:
    """(run id, step) of the newest resumable checkpoint the server holds whole, if any."""
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], filter_string="tags.`nai3.kind` = 'train'"):
            tag = r.data.tags.get(COMPLETE_TAG)
            if tag:
                return r.info.run_id, int(tag.rsplit("-", 1)[1])
    return None


@pytest.mark.slow
def test_a_dead_workers_training_resumes_on_another_machine_from_mlflow(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI="")
    # the uninterrupted reference, tracked elsewhere (a FINISHED run on the server would be reused)
    ref = subprocess.run(_train(tmp_path / "ref", f"sqlite:///{tmp_path}/ref.db", store="local"),
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    (tmp_path / "server").mkdir()
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow(tmp_path / "server", port)
    try:
        client = MlflowClient(uri)
        worker_a, worker_b = tmp_path / "machine-a", tmp_path / "machine-b"  # nothing shared but the server
        proc = subprocess.Popen(_train(worker_a, uri), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline, shipped = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None:
            shipped = _uploaded(client)
            if shipped and shipped[1] >= 20:
                os.kill(proc.pid, signal.SIGKILL)  # the machine dies, its disk with it
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        assert shipped and proc.returncode == -signal.SIGKILL, "worker A finished before it could be killed"
        dead_run, step = shipped
        assert not (next((worker_a / "variants").glob("*")) / "checkpoint").exists()

        res = subprocess.run(_train(worker_b, uri, ["--resume"]), capture_output=True, text=True, env=env,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        out = json.loads(res.stdout[res.stdout.index("{"):])
        assert out["resumed_from"] >= step >= 20
        assert Path(out["checkpoint"]).resolve().is_relative_to(worker_b.resolve())
        resumed = client.get_run(out["run_id"])
        assert resumed.info.status == "FINISHED"
        assert resumed.data.tags[RESUMED_FROM_RUN] == dead_run
        assert resumed.data.tags[RESUMED_FROM_ARTIFACT] == f"resumable/step-{out['resumed_from']:08d}"
        assert resumed.data.tags["nai3.resumed_from_step"] == str(out["resumed_from"])
        assert client.get_run(dead_run).info.status == "KILLED"  # closed as an orphan before B trained

        ref_ck = next((tmp_path / "ref" / "variants").glob("*")) / "checkpoint"
        assert_same_weights(ref_ck, Path(out["checkpoint"]), "the remote resume")
        # every staged copy was delivered and removed; the last step (the run finishes) is not shipped
        run_dir = Path(out["checkpoint"]).parent
        assert not any((run_dir / "resumable-outbox").rglob("meta.json"))
        shipped_steps = {int(a.path.rsplit("-", 1)[1]) for a in client.list_artifacts(out["run_id"], "resumable")}
        assert shipped_steps and out["resumed_from"] < min(shipped_steps) and max(shipped_steps) < 150
    finally:
        _stop(server)
