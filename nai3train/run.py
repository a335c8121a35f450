"""One variant's training as an MLflow run: what ``nai3 train`` and the flow's train task share.

The run directory is keyed by the variant hash, the training/model config and the data hash, so
a retried or re-started training of the same thing resumes from its newest checkpoint, and a
changed config never resumes from a stale one.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import AblationConfig, VariantConfig, flatten, stable_hash, to_dict
from .data import BucketedDataset, TagWeighting, Vocabulary, default_buckets, scan_folder
from .data.tag_weights import weight_histogram
from .tracking import Tracker
from .trainer import TrainingDiverged, train_variant

log = logging.getLogger(__name__)


def run_key(cfg: AblationConfig, variant: VariantConfig, data_hash: str) -> str:
    return stable_hash({"variant": variant.config_hash(), "train": to_dict(cfg.train), "model": to_dict(cfg.model),
                        "resolution": cfg.data.resolution, "data": data_hash})[:12]


def run_training(cfg: AblationConfig, variant: VariantConfig, data: dict, work_dir: str | Path, uri: str,
                 experiment_id: str, parent: Tracker | None = None, resume: bool = True,
                 progress: bool = True) -> dict:
    """Train ``variant`` on ``data`` (from ``prepare_dataset``), logging to a new MLflow run.

    On a non-finite loss the run is marked FAILED, the last good checkpoint is logged, and the
    error is raised again.
    """
    train = BucketedDataset.from_scan(scan_folder(data["train"]), default_buckets(cfg.data.resolution))
    vocab = Vocabulary.build(train.tags)
    out = Path(work_dir) / "variants" / f"{variant.name}-{run_key(cfg, variant, data['content_hash'])}"
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate/torchrun worker: rank 0 tracks and saves
        result = train_variant(cfg, variant, train, vocab, out, resume=resume, progress=False)
        return {"variant": variant.name, "checkpoint": str(result.checkpoint), "run_id": None,
                "img_per_s": result.img_per_s, "final_loss": result.final_loss, "resumed_from": result.resumed_from}
    run = Tracker.start(uri, experiment_id, f"train/{variant.name}", parent=parent,
                        tags={"nai3.kind": "train", "nai3.variant": variant.name,
                              "nai3.variant_hash": variant.config_hash(), "nai3.data_hash": data["content_hash"][:16],
                              "nai3.run_dir": str(out)})
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
    return {"variant": variant.name, "checkpoint": str(result.checkpoint), "run_id": run.run_id,
            "img_per_s": result.img_per_s, "final_loss": result.final_loss, "resumed_from": result.resumed_from}
