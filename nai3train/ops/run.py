"""One variant's training as an MLflow run: params, the resolved config, data reports, the
checkpoint as an artifact, and a status that says what happened.

Whether to train at all (reuse of a finished run, locks) is the pipeline's business
(``flows/runs.py``); this module trains when asked. The run directory is keyed by the caller, so
a retried or re-started training of the same thing resumes from its newest checkpoint.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import AblationConfig, VariantConfig, to_dict
from ..data import BucketedDataset, PreparedData, TagWeighting, Vocabulary, default_buckets, scan_folder
from ..data.tag_weights import weight_histogram
from .buffered import BufferedTracker
from .threads import torch_threads_in_use
from .remote_checkpoint import CheckpointUploads, fetch_for_resume
from .tracking import Tracker, flatten
from ..trainer import TrainingDiverged, train_variant

log = logging.getLogger(__name__)


@dataclass
class TrainedVariant:
    """A trained (or reused) variant: where its checkpoint is and which MLflow run holds it."""

    variant: str
    checkpoint: str
    run_id: str | None
    reused: bool = False
    img_per_s: float = math.nan
    final_loss: float = math.nan
    resumed_from: int = 0
    seed: int = 0  # the training seed of this replicate


COST_TRAIN = "cost/train_seconds"  # wall seconds of this process's training (a resume: its part)
THREADS_TAG = "nai3.threads"  # the torch threads it ran with: wall × threads is its CPU time


def load_training_set(cfg: AblationConfig, data: PreparedData) -> BucketedDataset:
    return BucketedDataset.from_scan(scan_folder(data.train, data.scan_cache), default_buckets(cfg.data.resolution))


def train_untracked(cfg: AblationConfig, variant: VariantConfig, data: PreparedData, out: Path,
                    resume: bool) -> TrainedVariant:
    """accelerate/torchrun rank > 0: train in step with rank 0, which tracks and saves."""
    train = load_training_set(cfg, data)
    result = train_variant(cfg, variant, train, Vocabulary.build(train.tags), out, resume=resume, progress=False)
    return TrainedVariant(variant.name, str(result.checkpoint), None, False, result.img_per_s, result.final_loss,
                          result.resumed_from, cfg.train.seed)


def train_tracked(cfg: AblationConfig, variant: VariantConfig, data: PreparedData, out: Path, uri: str,
                  experiment_id: str, parent: Tracker | None = None, resume: bool = True, progress: bool = True,
                  tags: dict[str, str] | None = None, documents: dict[str, dict] | None = None) -> TrainedVariant:
    """Train ``variant`` under ``out`` as a new MLflow run (child of ``parent`` when given).

    On a non-finite loss the run is marked FAILED, the last good checkpoint is logged, and the
    error is raised again. With ``train.checkpoint_store: tracking`` each resumable checkpoint is
    also logged to the run, and a resume starts from the newest one an unfinished run with the same
    ``nai3.run_key`` tag logged when the run folder has none as new (``remote_checkpoint.py``).
    ``documents`` (artifact path → JSON-able) are logged with the run: the identity it was made by."""
    train = load_training_set(cfg, data)
    vocab = Vocabulary.build(train.tags)
    started = Tracker.start(uri, experiment_id, f"train/{variant.name}", parent=parent,
                            tags={"nai3.kind": "train", "nai3.variant": variant.name, "nai3.seed": str(cfg.train.seed),
                                  "nai3.variant_hash": variant.config_hash(), "nai3.data_hash": data.content_hash[:16],
                                  "nai3.run_dir": str(out), **(tags or {})})
    started.log_dataset(f"{cfg.data.kind}:{Path(data.train).name}", data.content_hash, data.train, "training",
                        {"images": len(train), "skipped": len(train.skipped)})
    uploads = CheckpointUploads(started, out, cfg.train.steps) if cfg.train.checkpoint_store == "tracking" else None
    # from here on MLflow may come and go: training never waits on it (nai3train/ops/buffered.py)
    run = BufferedTracker(uploads.tracker if uploads else started, out / f"mlflow-journal-{started.run_id}.jsonl")
    try:
        run.log_params(flatten({"variant": to_dict(variant), "train": to_dict(cfg.train), "model": to_dict(cfg.model),
                                "data": to_dict(cfg.data)}))
        run.log_json({"variant": to_dict(variant), **{k: v for k, v in to_dict(cfg).items() if k != "variants"}},
                     "config.resolved.json")
        run.log_json(train.skipped, "skipped_files.json")
        for name, doc in (documents or {}).items():
            run.log_json(doc, name)
        report = train.report()
        run.log_json(report, "bucketing_report.json")
        weights = TagWeighting().weights(train.tags)
        run.log_json(weight_histogram(weights), "tag_weights_histogram.json")
        run.log_metrics({"data/images": len(train), "data/skipped_files": len(train.skipped),
                         "data/pixels_kept": report["mean_pixels_kept"],
                         "data/pixels_kept_centre_square": report["mean_pixels_kept_centre_square"],
                         "data/tag_weight_max": float(weights.max()), "data/tag_weight_min": float(weights.min())})
        if uploads:
            uploads.attach(run)
            if resume:
                fetch_for_resume(run, experiment_id, (tags or {}).get("nai3.run_key"), out)
        t0 = time.perf_counter()
        result = train_variant(cfg, variant, train, vocab, out, tracker=run, resume=resume, progress=progress,
                               on_checkpoint=uploads.ship if uploads else None)
        run.log_metrics({COST_TRAIN: time.perf_counter() - t0})  # the cost of a seed (flows/cost.py)
        run.set_tags({THREADS_TAG: str(torch_threads_in_use())})
        run.log_artifact(result.checkpoint, "checkpoint")
        run.finish(True)
    except TrainingDiverged as e:
        if e.last_checkpoint is not None:
            run.log_artifact(e.last_checkpoint, "last_good_checkpoint")
        run.set_tags({"nai3.error": str(e)[:5000]})
        run.finish(False)
        run.close_quietly()
        raise
    except BaseException as e:
        run.set_tags({"nai3.error": f"{type(e).__name__}: {e}"[:5000]})
        run.finish(False)
        run.close_quietly()
        raise
    run.close()  # raises TrackingOutage (work done, journal named) if the server stayed away
    log.info("trained %s: loss %.4f, %.0f img/s", variant.name, result.final_loss, result.img_per_s)
    return TrainedVariant(variant.name, str(result.checkpoint), run.run_id, False, result.img_per_s,
                          result.final_loss, result.resumed_from, cfg.train.seed)
