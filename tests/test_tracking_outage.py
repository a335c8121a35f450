"""The MLflow server goes away during training (fault matrix, issue 14), against a real server.

1. It comes back (killed at step 60, back 3 s later): training never stopped, the buffered metrics arrive with their own steps, the
   checkpoint is logged and the run ends FINISHED.
2. It stays away past the patience: training still completes and its checkpoint is on disk, the
   error names the journal and the command; once the server is back `nai3 relog` delivers it all.
"""
import logging
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .servers import _free_port, _stop, start_mlflow


def _steps_logged(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "train/loss"))


def _kill_when(path_glob: Path, proc_box: dict, key: str, timeout: float = 120) -> threading.Thread:
    """Kill the server in ``proc_box[key]`` as soon as a file matching ``path_glob`` exists (its
    folders may hold wildcards too)."""
    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and not list(Path(path_glob.anchor).glob(str(path_glob.relative_to(
                path_glob.anchor)))):
            time.sleep(0.01)
        _stop(proc_box[key])

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_training_survives_an_mlflow_outage_and_relogs_after_a_long_one(tmp_path, tiny_config, monkeypatch, caplog):
    from flows.cli import main as nai3
    from nai3train.ops.buffered import TrackingOutage
    from nai3train.data import prepare_dataset
    from nai3train.ops.run import train_tracked
    from nai3train.ops.tracking import ensure_experiment

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    box = {"mlflow": start_mlflow(tmp_path, port)}
    try:
        cfg = tiny_config(["train.steps=240", "train.log_every=10", "train.checkpoint_every=60", "train.threads=1"])
        variant = cfg.variants[0]
        data = prepare_dataset(cfg.data, tmp_path / "work")
        exp = ensure_experiment(MlflowClient(uri), "outage", None)
        caplog.set_level(logging.WARNING, logger="nai3train.ops.buffered")

        # 1. down after the first checkpoint, back while training goes on (or just after it ends)
        out1 = tmp_path / "run1"
        watcher = _kill_when(out1 / "checkpoints" / "step-00000060", box, "mlflow")
        restarter = threading.Thread(target=lambda: (watcher.join(), time.sleep(3),
                                                     box.__setitem__("mlflow", start_mlflow(tmp_path, port,
                                                                                            log_name="mlflow2.log"))))
        restarter.start()
        monkeypatch.setenv("NAI3_TRACKING_PATIENCE_S", "180")
        done = train_tracked(cfg, variant, data, out1, uri, exp, progress=False)
        restarter.join()
        assert "is not answering" in caplog.text, "the outage was never seen: the test did not test anything"
        run = MlflowClient(uri).get_run(done.run_id)
        assert run.info.status == "FINISHED"
        assert _steps_logged(uri, done.run_id) == list(range(10, 241, 10))  # nothing lost, none twice
        assert "checkpoint" in {f.path for f in MlflowClient(uri).list_artifacts(done.run_id)}
        assert not list(out1.glob("mlflow-journal-*.jsonl"))  # delivered, so removed

        # 2. down for good during training: the work completes, the error says how to re-log
        out2 = tmp_path / "run2"
        caplog.clear()
        _kill_when(out2 / "checkpoints" / "step-00000060", box, "mlflow").join(timeout=0)
        monkeypatch.setenv("NAI3_TRACKING_PATIENCE_S", "2")
        cfg2 = tiny_config(["train.steps=240", "train.log_every=10", "train.checkpoint_every=60",
                            "train.threads=1", "train.seed=1"])
        with pytest.raises(TrackingOutage) as err:
            train_tracked(cfg2, cfg2.variants[0], data, out2, uri, exp, progress=False)
        msg = str(err.value)
        journal = next(out2.glob("mlflow-journal-*.jsonl"))
        assert str(journal) in msg and "nai3 relog" in msg
        assert (out2 / "checkpoint" / "meta.json").is_file()

        box["mlflow"] = start_mlflow(tmp_path, port, log_name="mlflow3.log")
        assert nai3(["relog", str(journal), "--tracking-uri", uri]) == 0
        run_id = journal.stem.removeprefix("mlflow-journal-")
        run = MlflowClient(uri).get_run(run_id)
        assert run.info.status == "FINISHED"
        assert _steps_logged(uri, run_id) == list(range(10, 241, 10))
        assert "checkpoint" in {f.path for f in MlflowClient(uri).list_artifacts(run_id)}
        assert not journal.exists()
    finally:
        _stop(box.get("mlflow"))


def test_only_the_server_not_answering_counts_as_an_outage():
    """A broken stdout pipe (an orphaned flow-run process printing after its worker died) is a local
    failure: retrying it as an outage would hold the run's lock for the whole patience."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    from nai3train.ops.buffered import transient

    assert transient(MlflowException("connection refused", error_code=INTERNAL_ERROR))
    assert transient(requests.exceptions.ConnectionError("refused"))
    assert not transient(MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE))
    assert not transient(BrokenPipeError(32, "Broken pipe"))
    assert not transient(OSError(28, "No space left on device"))


def _eval_children(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                   "tags.`nai3.kind` = 'eval'", max_results=1000)


@pytest.mark.slow
def test_evaluation_survives_an_mlflow_outage_and_relogs_after_a_long_one(tmp_path, tiny_config, monkeypatch, caplog):
    """Issue 25: the evaluation half. The server dies as the first point is measured. (1) It comes
    back 3 s later: every point has exactly one FINISHED child run with its grid, the evaluation is
    stored on the training run, the report reaches the parent, which ends FINISHED. (2) It stays
    away: the sweep and the report still complete on disk, the error names the journal, and
    ``nai3 relog`` delivers the same runs once the server is back."""
    from flows import pipeline
    from flows.cli import main as nai3
    from nai3train.ops.buffered import TrackingOutage
    from nai3train.ops.tracking import Tracker, ensure_experiment

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    box = {"mlflow": start_mlflow(tmp_path, port)}
    try:
        cfg = tiny_config(["train.steps=4", "eval.tagger_steps=20", "eval.cfg_scales=[1,2,3,4]",
                           "eval.first_sigmas=[14.6]", "eval.steps=20", "train.threads=1"])
        ws = pipeline.Workspace(tmp_path / "w", uri, ensure_experiment(MlflowClient(uri), cfg.experiment, None))
        pipeline.pin_claims_spec(ws)  # as every flow does at its start
        data = pipeline.prepare_data(cfg, ws)
        tagger = pipeline.prepare_tagger(cfg, data, ws)
        trained = pipeline.train(cfg, cfg.variants[0], data, ws, progress=False)
        caplog.set_level(logging.WARNING, logger="nai3train.ops.buffered")

        def evaluate_and_report(seed_cfg, restart_after: float | None):
            first_point = ws.work / "evals" / "*" / "*.json"
            for f in ws.work.glob("evals/*/*.json"):
                f.unlink()
            watcher = _kill_when(first_point, box, "mlflow")
            if restart_after is not None:
                threading.Thread(target=lambda: (watcher.join(), time.sleep(restart_after), box.__setitem__(
                    "mlflow", start_mlflow(tmp_path, port, log_name=f"mlflow-{time.time()}.log"))), daemon=True).start()
            parent = Tracker.start(uri, ws.experiment_id, "ablation/outage")
            got: dict = {}
            try:
                with pipeline.parent_logger(ws, parent.run_id).running() as logger:
                    got["result"] = pipeline.evaluate(seed_cfg, trained, data, tagger, ws, logger, force=True,
                                                      progress=False)
                    got["out"] = pipeline.report(seed_cfg, [got["result"]], [trained], data, ws, logger)
            finally:
                watcher.join(timeout=0)
            return parent.run_id, got

        def delivered(parent_id: str, result) -> None:
            n_points = sum(len(result.settings(r, "sweep")) for r in result.runs.values())
            children = _eval_children(uri, parent_id)
            assert len(children) == n_points >= 4  # every point once, none twice
            assert all(c.info.status == "FINISHED" for c in children)
            assert all({"samples.png", "per_image.csv"} <= {f.path for f in MlflowClient(uri).list_artifacts(
                c.info.run_id)} for c in children)
            parent = MlflowClient(uri).get_run(parent_id)
            assert parent.info.status == "FINISHED"
            assert "report" in {f.path for f in MlflowClient(uri).list_artifacts(parent_id)}
            assert any(k.startswith("nai3.eval.") for k in MlflowClient(uri).get_run(trained.run_id).data.tags)

        # 1. down at the first point, back 3 s later
        monkeypatch.setenv("NAI3_TRACKING_PATIENCE_S", "180")
        parent_id, got = evaluate_and_report(cfg, restart_after=3)
        assert "is not answering" in caplog.text, "the outage was never seen: the test did not test anything"
        delivered(parent_id, got["result"])
        assert not list((ws.work / "journals").glob("mlflow-journal-*.jsonl"))  # delivered, so removed

        # 2. down for good: the work completes on disk, the error names the journal
        caplog.clear()
        monkeypatch.setenv("NAI3_TRACKING_PATIENCE_S", "2")
        with pytest.raises(TrackingOutage) as err:
            evaluate_and_report(cfg, restart_after=None)
        journal = next((ws.work / "journals").glob("mlflow-journal-*.jsonl"))
        assert str(journal) in str(err.value) and "nai3 relog" in str(err.value)
        report = ws.work / "results" / "report"
        assert (report / "report.html").is_file() and (ws.work / "results" / "results.json").is_file()
        parent_id = journal.stem.removeprefix("mlflow-journal-").rsplit("-", 1)[0]
        assert len(list(ws.work.glob("evals/*/*.json"))) >= 4  # every point measured and kept

        box["mlflow"] = start_mlflow(tmp_path, port, log_name="mlflow-back.log")
        assert nai3(["relog", str(journal), "--tracking-uri", uri]) == 0
        from nai3eval.record import Record
        import json

        result = Record.from_dict(json.loads((ws.work / "results" / "results.json").read_text())["record"])
        delivered(parent_id, result)
        assert not journal.exists()
    finally:
        _stop(box.get("mlflow"))
