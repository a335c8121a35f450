"""Run identity and reuse, in one place: run keys, code versions, locks, and finding finished work.

* A training run is reused when a FINISHED run has the same run key (variant, training and model
  config, data content) and the same *training* code version (``nai3train``): editing the report or
  a metric never throws away a trained variant.
* An evaluation is reused when the training run already stores an evaluation with the same key
  (sweep settings, instrument, evaluation code version: ``nai3eval`` plus the diffusion math and
  model bundles it samples through).
* Two flow runs that want the same run key take its lock (:mod:`flows.locks`: cluster-wide with a
  Prefect server, per machine without one): the second waits, then finds the finished run and
  reuses it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from nai3eval.record import Record
from nai3train.config import AblationConfig, EvalConfig, VariantConfig, stable_hash, to_dict
from nai3train.config.locate import locate
from nai3train.buffered import BufferedTracker
from nai3train.tracking import Tracker

ROOT = Path(__file__).resolve().parent.parent


def current_flow_run_id() -> str:
    """The Prefect flow run this process works for, "" outside one: tagged on the MLflow runs it
    starts (``prefect.flow_run_id``), so a run in the MLflow UI leads to its flow run's logs and
    worker — and, of two flow runs that wanted one run key, to the one that actually trained it."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "")
    except Exception:  # prefect's runtime context unavailable (plain `nai3` CLI, torchrun ranks)
        return ""


def source_version(*parts: str) -> str:
    """A hash of the Python sources under the given package paths (works without git)."""
    h = hashlib.sha256()
    for part in parts:
        for f in sorted((ROOT / part).rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def training_code_version() -> str:
    return source_version("nai3train")


def evaluation_code_version() -> str:
    return source_version("nai3eval", "nai3train/diffusion", "nai3train/models")


# train options that say where things are kept, not what is trained: a run key never depends on
# them (a run can switch to train.checkpoint_store: tracking and still resume and be reused)
NOT_IN_RUN_KEY = ("checkpoint_store",)


def _train_identity(cfg: AblationConfig, *leave_out: str) -> dict:
    return {k: v for k, v in to_dict(cfg.train).items() if k not in NOT_IN_RUN_KEY + leave_out}


def run_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    return stable_hash({"variant": variant.config_hash(), "train": _train_identity(cfg), "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


def recipe_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    """What replicates of one arm share: the run key without the training seed. Seeds of the same
    recipe (and training code) found in the experiment are the evidence that accumulates."""
    train = _train_identity(cfg, "seed", "seeds")
    return stable_hash({"variant": variant.config_hash(), "train": train, "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


def finished_seeds(uri: str, experiment_id: str, recipe: str, version: str) -> set[int]:
    """Training seeds with a FINISHED run of this recipe and training code version."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`nai3.recipe_key` = '{recipe}' and tags.`nai3.code_version` = "
                                       f"'{version}' and attributes.status = 'FINISHED'", max_results=5000)
    return {int(r.data.tags["nai3.seed"]) for r in runs if r.data.tags.get("nai3.seed", "").isdigit()}


def next_seeds(cfg: AblationConfig, data_hash: str, uri: str, experiment_id: str) -> tuple[int, ...]:
    """The nightly's seeds: every seed any arm has finished (so gaps are filled and nothing is
    dropped from the report) plus the smallest seed not yet finished by every arm."""
    version = training_code_version()
    have = [finished_seeds(uri, experiment_id, recipe_key(cfg, v, data_hash), version) for v in cfg.variants]
    every = set.intersection(*have) if have else set()
    new = next(k for k in itertools.count() if k not in every)
    return tuple(sorted(set().union(*have) | {new}))


def eval_key(ec: EvalConfig, instrument: str, training_run_id: str | None, options: dict | None = None) -> str:
    """Key of a stored evaluation: sweep settings, instrument, evaluation code, the training run,
    and how the model was read (parameterisation overrides, size, prompts). A prompt file counts by
    its content, not its path: an edited file is evaluated again, a moved one is not."""
    sweep = to_dict(ec)
    if ec.prompt_file:
        sweep["prompt_file"] = hashlib.sha256(locate(ec.prompt_file, "eval.prompt_file").read_bytes()).hexdigest()
    return stable_hash({"eval": sweep, "tagger": instrument, "code": evaluation_code_version(),
                        "run": training_run_id, "options": options or {}})[:12]


def find_finished_training(uri: str, experiment_id: str, key: str, version: str):
    """The newest FINISHED training run with this run key and training code version, if any."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`nai3.run_key` = '{key}' and tags.`nai3.code_version` = '{version}' "
                                       "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def close_orphaned_runs(uri: str, experiment_id: str, key: str) -> list[str]:
    """Mark RUNNING training runs of ``key`` KILLED: called under the run key's lock, so whoever
    started them is dead (a worker killed with its machine); the retry resumes their checkpoint."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    stale = client.search_runs([experiment_id], filter_string=f"tags.`nai3.run_key` = '{key}' and "
                                                             "attributes.status = 'RUNNING'", max_results=100)
    for r in stale:
        client.set_tag(r.info.run_id, "nai3.error", "its process died holding the run key (killed worker?); "
                                                    "a later run resumed from its checkpoint")
        client.set_terminated(r.info.run_id, "KILLED")
    return [r.info.run_id for r in stale]


def stored_evaluation(uri: str, run_id: str, key: str, download_to: Path) -> Record | None:
    """The evaluation stored on a training run under ``key``, if there is one in this code's
    record format (one of another format is evaluated again, never misread)."""
    from mlflow.tracking import MlflowClient

    name = MlflowClient(uri).get_run(run_id).data.tags.get(f"nai3.eval.{key}")
    if not name:
        return None
    local = MlflowClient(uri).download_artifacts(run_id, name, str(download_to / key))
    try:
        return Record.from_dict(json.loads(Path(local).read_text()))
    except (ValueError, KeyError, TypeError):
        return None


def store_evaluation(run: Tracker | BufferedTracker, key: str, result: Record) -> None:
    """The evaluation as an artifact of its training run ``run``, found again by ``key``. The record
    first, then the tag that points at it: a reader never finds a tag without its record."""
    run.log_json(result.to_dict(), f"eval-{key}.json")
    run.set_tags({f"nai3.eval.{key}": f"eval-{key}.json"})
