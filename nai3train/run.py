"""One variant's training as an MLflow run: what ``nai3 train`` and the flow's train task share.

The run directory is keyed by the variant hash, the training/model config and the data hash, so
a retried or re-started training of the same thing resumes from its newest checkpoint, and a
changed config never resumes from a stale one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from pathlib import Path

from .config import AblationConfig, VariantConfig, flatten, stable_hash, to_dict
from .data import BucketedDataset, TagWeighting, Vocabulary, default_buckets, scan_folder
from .data.tag_weights import weight_histogram
from .tracking import Tracker
from .trainer import TrainingDiverged, train_variant

log = logging.getLogger(__name__)


def code_version() -> str:
    """Identity of the training and evaluation code: a hash of the package sources, so a finished
    run is reused only by the code that produced it (works without git)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for pkg in ("nai3train", "nai3eval"):
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def run_lock(work_dir: str | Path, key: str):
    """An exclusive lock per run key on this machine: two flow runs that want the same variant at
    the same time train it once; the second waits, then finds the finished run and reuses it."""
    folder = Path(work_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def find_finished(uri: str, experiment_id: str, key: str, version: str):
    """The newest FINISHED training run with this run key and code version, if any."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`nai3.run_key` = '{key}' and tags.`nai3.code_version` = '{version}' "
                                       "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def run_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    return stable_hash({"variant": variant.config_hash(), "train": to_dict(cfg.train), "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


def run_training(cfg: AblationConfig, variant: VariantConfig, data: dict, work_dir: str | Path, uri: str,
                 experiment_id: str, parent: Tracker | None = None, resume: bool = True,
                 progress: bool = True, force: bool = False) -> dict:
    """Train ``variant`` on ``data`` (from ``prepare_dataset``), logging to a new MLflow run —
    unless a FINISHED run with the same run key (variant, training config, data) and code version
    exists: then its checkpoint is reused and nothing trains (``force`` retrains from scratch).

    On a non-finite loss the run is marked FAILED, the last good checkpoint is logged, and the
    error is raised again.
    """
    key = run_key(cfg, variant, data["content_hash"])
    out = Path(work_dir) / "variants" / f"{variant.name}-{key}"
    if int(os.environ.get("RANK", "0")) != 0:
        return _train_worker(cfg, variant, data, out, resume)
    version = code_version()
    with run_lock(work_dir, key):
        done = None if force else find_finished(uri, experiment_id, key, version)
        if done is not None:
            ckpt = _reuse_checkpoint(uri, done.info.run_id, out)
            log.info("reusing %s from FINISHED run %s", variant.name, done.info.run_id)
            return {"variant": variant.name, "checkpoint": str(ckpt), "run_id": done.info.run_id, "reused": True,
                    "img_per_s": done.data.metrics.get("train/img_per_s", float("nan")),
                    "final_loss": done.data.metrics.get("train/loss", float("nan")), "resumed_from": 0}
        if force:
            shutil.rmtree(out, ignore_errors=True)
        return _train_tracked(cfg, variant, data, out, uri, experiment_id, parent, resume, progress,
                              {"nai3.run_key": key, "nai3.code_version": version})


def _reuse_checkpoint(uri: str, run_id: str, out: Path) -> Path:
    from .checkpoint import load_meta

    local = out / "checkpoint"
    try:
        load_meta(local)
        return local
    except FileNotFoundError:
        from mlflow.tracking import MlflowClient

        return Path(MlflowClient(uri).download_artifacts(run_id, "checkpoint", str(out / "downloaded")))


def _train_worker(cfg: AblationConfig, variant: VariantConfig, data: dict, out: Path, resume: bool) -> dict:
    """accelerate/torchrun rank > 0: train in step with rank 0, which tracks and saves."""
    train = BucketedDataset.from_scan(scan_folder(data["train"]), default_buckets(cfg.data.resolution))
    result = train_variant(cfg, variant, train, Vocabulary.build(train.tags), out, resume=resume, progress=False)
    return {"variant": variant.name, "checkpoint": str(result.checkpoint), "run_id": None, "reused": False,
            "img_per_s": result.img_per_s, "final_loss": result.final_loss, "resumed_from": result.resumed_from}


def _train_tracked(cfg: AblationConfig, variant: VariantConfig, data: dict, out: Path, uri: str, experiment_id: str,
                   parent: Tracker | None, resume: bool, progress: bool, extra_tags: dict) -> dict:
    train = BucketedDataset.from_scan(scan_folder(data["train"]), default_buckets(cfg.data.resolution))
    vocab = Vocabulary.build(train.tags)
    run = Tracker.start(uri, experiment_id, f"train/{variant.name}", parent=parent,
                        tags={"nai3.kind": "train", "nai3.variant": variant.name,
                              "nai3.variant_hash": variant.config_hash(), "nai3.data_hash": data["content_hash"][:16],
                              "nai3.run_dir": str(out), **extra_tags})
    try:
        run.log_params(flatten({"variant": to_dict(variant), "train": to_dict(cfg.train), "model": to_dict(cfg.model),
                                "data": to_dict(cfg.data)}))
        run.log_json({"variant": to_dict(variant), **{k: v for k, v in to_dict(cfg).items() if k != "variants"}},
                     "config.resolved.json")
        run.log_json(train.skipped, "skipped_files.json")
        report = train.report()
        run.log_json(report, "bucketing_report.json")
        weights = TagWeighting().weights(train.tags)
        run.log_json(weight_histogram(weights), "tag_weights_histogram.json")
        run.log_metrics({"data/images": len(train), "data/skipped_files": len(train.skipped),
                         "data/pixels_kept": report["mean_pixels_kept"],
                         "data/pixels_kept_centre_square": report["mean_pixels_kept_centre_square"],
                         "data/tag_weight_max": float(weights.max()), "data/tag_weight_min": float(weights.min())})
        result = train_variant(cfg, variant, train, vocab, out, tracker=run, resume=resume, progress=progress)
        run.log_artifact(result.checkpoint, "checkpoint")
        run.finish(True)
    except TrainingDiverged as e:
        if e.last_checkpoint is not None:
            run.log_artifact(e.last_checkpoint, "last_good_checkpoint")
        run.set_tags({"nai3.error": str(e)[:5000]})
        run.finish(False)
        raise
    except BaseException as e:
        run.set_tags({"nai3.error": f"{type(e).__name__}: {e}"[:5000]})
        run.finish(False)
        raise
    log.info("trained %s: loss %.4f, %.0f img/s", variant.name, result.final_loss, result.img_per_s)
    return {"variant": variant.name, "checkpoint": str(result.checkpoint), "run_id": run.run_id, "reused": False,
            "img_per_s": result.img_per_s, "final_loss": result.final_loss, "resumed_from": result.resumed_from}
