"""Run identity and reuse, in one place: run keys, code versions, locks, and finding finished work.

* A training run is reused when a FINISHED run has the same run key (variant, training and model
  config, data content), the same *training identity* (the code and libraries that can change
  trained weights, :mod:`flows.identity`) and a numerics fingerprint that matches today's
  (:mod:`flows.fingerprint`): editing a progress bar, the report or a metric never throws away a
  trained variant, and the nightly's seeds keep accumulating.
* An evaluation is reused when the training run already stores an evaluation with the same key
  (sweep settings, instrument, *evaluation identity*: sampling, probes, metrics and the math and
  models they run — not claims, report or plots, which re-decide from the stored record).
* Two flow runs that want the same run key take its lock (:mod:`flows.locks`: cluster-wide with a
  Prefect server, per machine without one): the second waits, then finds the finished run and
  reuses it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

from nai3eval.record import Record
from . import identity
from .fingerprint import BoundaryBreach, Fingerprint, check
from .identity import Identity
from nai3train.config import AblationConfig, EvalConfig, VariantConfig, stable_hash, to_dict
from nai3train.config.locate import locate
from nai3train.ops.buffered import BufferedTracker
from nai3train.ops.tracking import Tracker

log = logging.getLogger(__name__)


def current_flow_run_id() -> str:
    """The Prefect flow run this process works for, "" outside one: tagged on the MLflow runs it
    starts (``prefect.flow_run_id``), so a run in the MLflow UI leads to its flow run's logs and
    worker — and, of two flow runs that wanted one run key, to the one that actually trained it."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "")
    except Exception:  # prefect's runtime context unavailable (plain `nai3` CLI, torchrun ranks)
        return ""


def training_identity() -> Identity:
    return identity.training_identity()


def evaluation_identity() -> Identity:
    return identity.evaluation_identity()


# train options that say where things are kept, not what is trained: a run key never depends on
# them (a run can switch to train.checkpoint_store: tracking and still resume and be reused)
NOT_IN_RUN_KEY = ("checkpoint_store", "keep_checkpoints", "gradient_checkpointing")
# train settings added later that can change numbers: in a key only when set, so every key made
# before them (and every decider the claims spec pins) stays what it was
ONLY_WHEN_SET = {"compile": False}


def _train_fields(cfg: AblationConfig) -> dict:
    return {k: v for k, v in to_dict(cfg.train).items() if ONLY_WHEN_SET.get(k, object()) != v}


def _train_identity(cfg: AblationConfig, *leave_out: str) -> dict:
    return {k: v for k, v in _train_fields(cfg).items() if k not in NOT_IN_RUN_KEY + leave_out}


def run_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    return stable_hash({"variant": variant.config_hash(), "train": _train_identity(cfg), "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


def recipe_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    """What replicates of one arm share: the run key without the training seed. Seeds of the same
    recipe (and training code) found in the experiment are the evidence that accumulates."""
    train = _train_identity(cfg, "seed", "seeds")
    return stable_hash({"variant": variant.config_hash(), "train": train, "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


# what a deciding config's hash ignores: where things live, how often to log or save, threads and
# the names (a config's name and experiment say nothing about the numbers it produces), and what is
# measured beside the claims without feeding one (the front-end presets, Inception)
NOT_IN_DECIDER = {"train": ("seed", "seeds", "log_every", "checkpoint_every", "checkpoint_store", "threads",
                            "keep_checkpoints", "gradient_checkpointing"),
                  "data": ("path",), "model": ("path",),
                  "eval": ("inception_weights", "clip_path", "frontends", "inception")}


def decider_hash(cfg: AblationConfig) -> str:
    """The hash the claims spec pins a deciding config by (``deciders``): its data, model, training
    recipe (seeds excluded: they accumulate), evaluation grid and prompts, and its variants. A
    config of the same name with another grid decides nothing; a renamed one decides nothing either."""
    d = {**to_dict(cfg), "train": _train_fields(cfg)}
    doc = {part: {k: v for k, v in d[part].items() if k not in NOT_IN_DECIDER.get(part, ())}
           for part in ("data", "model", "train", "eval")}
    return stable_hash({**doc, "variants": sorted(v.config_hash() for v in cfg.variants)})


def ledger_recipes(cfg: AblationConfig, data_hash: str) -> dict[str, str]:
    """Per variant, what its seeds are replicates of for the claims ledger: the recipe key under
    today's training identity (seeds of another identity are never pooled, so their looks are
    another estimand's)."""
    ident = training_identity().digest
    return {v.name: f"{recipe_key(cfg, v, data_hash)}@{ident}" for v in cfg.variants}


def finished_runs(uri: str, experiment_id: str, recipe: str) -> list:
    """Every FINISHED training run of this recipe, under any identity (newest first)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`nai3.recipe_key` = '{recipe}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=5000)


def finished_seeds(uri: str, experiment_id: str, recipe: str, train_identity: str,
                   fingerprint: Fingerprint | None = None) -> set[int]:
    """Training seeds with a FINISHED run of this recipe under this training identity (and, when
    given, a fingerprint that matches it): seeds of other identities are never pooled."""
    return {int(r.data.tags["nai3.seed"]) for r in finished_runs(uri, experiment_id, recipe)
            if same_numerics(r, train_identity, fingerprint) and r.data.tags.get("nai3.seed", "").isdigit()}


def same_numerics(run, train_identity: str, fingerprint: Fingerprint | None) -> bool:
    """Whether a stored training run was made by code and libraries that give today's numbers."""
    if run.data.tags.get("nai3.train_identity") != train_identity:
        return False
    stored = Fingerprint.parse(run.data.tags.get("nai3.fingerprint"))
    return fingerprint is None or stored is None or stored.matches(fingerprint)


def seeds_by_arm(cfg: AblationConfig, data_hash: str, uri: str, experiment_id: str) -> dict[str, set[int]]:
    """Per variant, the seeds finished under today's training identity."""
    train_identity = training_identity().digest
    return {v.name: finished_seeds(uri, experiment_id, recipe_key(cfg, v, data_hash), train_identity)
            for v in cfg.variants}


def next_seeds(have: dict[str, set[int]], training: tuple[str, ...] | None = None) -> tuple[int, ...]:
    """The nightly's seeds: every seed any arm has finished (so gaps are filled and nothing is
    dropped from the report) plus the smallest seed not yet finished by every arm that trains
    (``training``: the plan's arms; default all)."""
    if training is not None and not training:
        return tuple(sorted(set().union(*have.values())))  # nothing trains: no new seed
    arms = [have[v] for v in (training if training is not None else have)]
    every = set.intersection(*arms) if arms else set()
    new = next(k for k in itertools.count() if k not in every)
    return tuple(sorted(set().union(*have.values()) | {new}))


def eval_key(ec: EvalConfig, instrument: str, training_run_id: str | None, options: dict | None = None) -> str:
    """Key of a stored evaluation: sweep settings, instrument, evaluation code, the training run,
    and how the model was read (parameterisation overrides, size, prompts). A prompt file counts by
    its content, not its path: an edited file is evaluated again, a moved one is not."""
    sweep = to_dict(ec)
    if not ec.frontends:  # added later: an evaluation without front-ends keeps the key it had
        del sweep["frontends"]
    if ec.prompt_file:
        sweep["prompt_file"] = hashlib.sha256(locate(ec.prompt_file, "eval.prompt_file").read_bytes()).hexdigest()
    return stable_hash({"eval": sweep, "tagger": instrument, "code": evaluation_identity().digest,
                        "run": training_run_id, "options": options or {}})[:12]


def find_finished_training(uri: str, experiment_id: str, key: str, train_identity: str,
                           fingerprint: Fingerprint | None = None):
    """The newest FINISHED training run with this run key and training identity whose fingerprint
    matches ``fingerprint``, if any. One whose identity matches but whose fingerprint does not is
    the identity's boundary being wrong: said loudly (and the run is not reused)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`nai3.run_key` = '{key}' and tags.`nai3.train_identity` = "
                                       f"'{train_identity}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    for r in found:
        if fingerprint is None:
            return r
        try:
            check(Fingerprint.parse(r.data.tags.get("nai3.fingerprint")), fingerprint, f"training run {r.info.run_id}")
            return r
        except BoundaryBreach as e:
            log.error("%s; it is not reused", e)
    return None


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


def provenance(uri: str, experiment_id: str, cfg: AblationConfig, data_hash: str, current: Identity,
               download_to: Path):
    """Per arm, the FINISHED training seeds under each training identity with their library versions,
    and for every older identity what differs today (from the manifest its runs logged)."""
    from mlflow.tracking import MlflowClient

    from nai3eval.reporting.provenance import IdentitySeeds, Provenance

    rows, witness = [], {}
    for v in cfg.variants:
        groups: dict[str, dict] = {}
        for r in finished_runs(uri, experiment_id, recipe_key(cfg, v, data_hash)):
            tags = r.data.tags
            ident = tags.get("nai3.train_identity", "unrecorded")
            g = groups.setdefault(ident, {"seeds": set(), "versions": set()})
            if tags.get("nai3.seed", "").isdigit():
                g["seeds"].add(int(tags["nai3.seed"]))
            g["versions"].add(", ".join(f"{k} {tags[f'nai3.version.{k}']}" for k in ("torch", "diffusers")
                                        if f"nai3.version.{k}" in tags) or "unrecorded")
            witness.setdefault(ident, r.info.run_id)
        rows += [IdentitySeeds(v.name, ident, tuple(sorted(g["seeds"])), "; ".join(sorted(g["versions"])),
                               ident == current.digest) for ident, g in groups.items()]
    changes = {}
    for ident, run_id in witness.items():
        if ident in (current.digest, "unrecorded"):
            continue
        try:
            local = MlflowClient(uri).download_artifacts(run_id, "identity-training.json", str(download_to / ident))
            changes[ident] = tuple(current.changes_from(Identity.from_dict(json.loads(Path(local).read_text()))))
        except Exception as e:  # a run without its manifest still counts its seeds; the change goes unnamed
            log.warning("the identity manifest of run %s could not be read (%s)", run_id, str(e)[:200])
    return Provenance(tuple(rows), current.digest, changes)
