"""Parallel (variant, seed) units on one machine: the layout from cores and memory, progress lines
that name their unit, and a failed unit reported by name after the others complete."""
import io
import time

import pytest

from flows import local_units
from flows.fanout import FanOutFailed
from nai3train.config import load_config
from nai3train.ops import progress as progress_module
from nai3train.ops.progress import progress

GiB = 1 << 30


def _smoke(*overrides: str):
    return load_config("configs/smoke.yaml", list(overrides))


def test_layout_splits_the_cores_between_units_memory_permitting(monkeypatch):
    monkeypatch.setattr(local_units, "_cuda", lambda: False)
    monkeypatch.delenv("NAI3_THREADS", raising=False)
    cfg = _smoke()
    got = local_units.layout(cfg, units=4, cores=2, memory=20 * GiB)
    assert (got.workers, got.threads) == (2, 1) and got.parallel and "2 at a time" in got.line()
    got = local_units.layout(cfg, units=8, cores=16, memory=20 * GiB)
    assert (got.workers, got.threads) == (8, 2)
    got = local_units.layout(cfg, units=3, cores=16, memory=20 * GiB)  # no more workers than units
    assert (got.workers, got.threads) == (3, 5)
    got = local_units.layout(cfg, units=8, cores=16, memory=5 * GiB)  # memory for two units only
    assert (got.workers, got.threads) == (2, 8) and "memory for 2" in got.why
    assert not local_units.layout(cfg, units=4, cores=2, memory=3 * GiB).parallel
    assert not local_units.layout(cfg, units=1, cores=16, memory=20 * GiB).parallel


def test_layout_honours_the_request_the_threads_setting_and_big_models(monkeypatch):
    monkeypatch.setattr(local_units, "_cuda", lambda: False)
    monkeypatch.delenv("NAI3_THREADS", raising=False)
    cfg = _smoke()
    one = local_units.layout(cfg, units=4, requested=1, cores=2, memory=20 * GiB)
    assert not one.parallel and "one after another" in one.line()
    assert local_units.layout(cfg, units=4, requested=3, cores=2, memory=20 * GiB).workers == 3
    two_threads = _smoke("train.threads=2")  # the config's threads win: two cores hold one such unit
    assert not local_units.layout(two_threads, units=4, cores=2, memory=20 * GiB).parallel
    monkeypatch.setenv("NAI3_THREADS", "2")  # so does the environment's
    assert not local_units.layout(cfg, units=4, cores=2, memory=20 * GiB).parallel
    assert local_units.layout(cfg, units=4, cores=8, memory=20 * GiB).threads == 2
    monkeypatch.delenv("NAI3_THREADS")
    monkeypatch.setattr(local_units, "available_memory", lambda: None)  # no /proc/meminfo: the request stands
    assert local_units.layout(cfg, units=4, requested=3, cores=2).workers == 3
    assert local_units.layout(cfg, units=2, requested=3, cores=2).why == "3 asked, 2 unit(s)"
    sdxl = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kind": "sdxl"})})
    assert "to itself" in local_units.layout(sdxl, units=4, cores=16, memory=100 * GiB).why
    monkeypatch.setattr(local_units, "_cuda", lambda: True)
    assert "GPU" in local_units.layout(cfg, units=4, cores=16, memory=100 * GiB).why


def test_requested_units_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv(local_units.ENV, raising=False)
    assert local_units.requested_units(None) is None and local_units.requested_units(3) == 3
    monkeypatch.setenv(local_units.ENV, "2")
    assert local_units.requested_units(None) == 2 and local_units.requested_units(1) == 1
    monkeypatch.setenv(local_units.ENV, "many")
    with pytest.raises(ValueError, match="NAI3_UNITS"):
        local_units.requested_units(None)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_units_progress_is_lines_led_by_its_label_even_on_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)
    monkeypatch.setenv("NAI3_PROGRESS", "lines")
    monkeypatch.setenv("NAI3_UNIT", "v-ztsnr@seed3")
    out = _Terminal()
    for _ in progress(range(4), desc="train v-ztsnr", stream=out):
        time.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) >= 2
    assert all(line.startswith("[v-ztsnr@seed3] train v-ztsnr") for line in lines)


@pytest.mark.slow
def test_a_failed_unit_is_named_after_the_others_complete(tmp_path, monkeypatch):
    """Two units in two processes; one's model cannot be built (8 groups do not divide 30
    channels): the other trains and evaluates, and the failure names the broken unit."""
    from flows import pipeline

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cfg = _smoke("data.train_size=64", "data.eval_size=16", "train.steps=2", "train.batch_size=8",
                 "eval.prompts=2", "eval.seeds_per_prompt=2", "eval.steps=2", "eval.tagger_steps=5",
                 "eval.cfg_scales=[1.0]", "eval.first_sigmas=[14.6]")
    cfg = cfg.model_copy(update={"variants": cfg.variants[:1]})
    ws = pipeline.Workspace.open(cfg, tmp_path / "work", f"sqlite:///{tmp_path}/mlflow.db")
    data = pipeline.prepare_data(cfg, ws)
    tagger = pipeline.prepare_tagger(cfg, data, ws)
    parent = pipeline.Tracker.start(ws.uri, ws.experiment_id, "parent", tags={})
    good = cfg.for_seed(0)
    bad = cfg.for_seed(1)
    bad = bad.model_copy(update={"model": bad.model.model_copy(update={"block_out_channels": [30, 60, 60]})})
    plan = local_units.Layout(2, 1, "test")
    trained, results, failure = local_units.run_units([good, bad], data, tagger, ws, parent.run_id, False, plan)
    assert [(t.variant, t.seed) for t in trained] == [("sdxl-eps", 0)] and len(results) == 1
    # what the worker logged reached MLflow before its process ended: the stored evaluation and its cost
    from mlflow.tracking import MlflowClient

    run = MlflowClient(ws.uri).get_run(trained[0].run_id)
    assert any(k.startswith("nai3.eval.") for k in run.data.tags) and run.data.metrics["cost/eval_seconds"] > 0
    assert isinstance(failure, FanOutFailed)
    assert "1 of 2" in str(failure) and "sdxl-eps@seed1" in str(failure) and "sdxl-eps@seed0" not in str(failure)


def _run_bar(monkeypatch, load: float) -> str:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("NAI3_UNIT", raising=False)
    monkeypatch.setattr(progress_module, "WINDOW_S", 0.02)
    monkeypatch.setattr(progress_module._Watched, "load", staticmethod(lambda: load))
    out = io.StringIO()
    bar = progress(total=60, desc="train v", stream=out)
    for i in range(60):
        time.sleep(0.002 if i < 30 else 0.03)  # 500 it/s, then ~33 it/s: a fifteenth of the median
        bar.update(1)
    bar.close()
    return out.getvalue()


def test_a_collapsed_rate_on_overcommitted_cores_is_said_once(monkeypatch):
    text = _run_bar(monkeypatch, load=64.0)
    said = [line for line in text.splitlines() if "compete" in line]
    assert len(said) == 1 and said[0].startswith("train v: slowed to") and "NAI3_THREADS" in said[0]
    assert "compete" not in _run_bar(monkeypatch, load=0.5)  # slow but the cores are free: our own doing


def test_the_longest_units_go_first_and_measured_costs_decide_when_every_arm_has_one():
    """Submitted longest first (a pool gives the next unit to the first free worker, so a long unit
    submitted last runs alone): by the arms' measured CPU-seconds when all are known, else the
    σ = ∞ arms (which also run the practical-infinity and count probes) before the others."""
    from flows.fanout import Unit

    cfg = _smoke("train.seeds=[0,1]")
    jobs = [(Unit(v.name, s), cfg.for_seed(s)) for s in cfg.replicate_seeds for v in cfg.variants]
    labels = lambda js: [u.label for u, _ in js]  # noqa: E731
    assert labels(jobs) == ["sdxl-eps@seed0", "nai-v-ztsnr@seed0", "sdxl-eps@seed1", "nai-v-ztsnr@seed1"]
    assert labels(local_units.longest_first(jobs)) == [
        "nai-v-ztsnr@seed0", "nai-v-ztsnr@seed1", "sdxl-eps@seed0", "sdxl-eps@seed1"]
    # measured: the ε arm is the longer one here, so it goes first; one arm unmeasured: the rule again
    assert labels(local_units.longest_first(jobs, {"sdxl-eps": 300.0, "nai-v-ztsnr": 200.0})) == [
        "sdxl-eps@seed0", "sdxl-eps@seed1", "nai-v-ztsnr@seed0", "nai-v-ztsnr@seed1"]
    assert labels(local_units.longest_first(jobs, {"sdxl-eps": 300.0}))[0] == "nai-v-ztsnr@seed0"
