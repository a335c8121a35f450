"""The unit of work of a fanned-out nightly: one (variant, seed) trained and evaluated, as its own
flow run (deployment ``nai3-variant/train-eval``) that any worker on any machine can pick up.

The parent (``flows/ablation.py``) prepares the data and the domain tagger once, then submits one
of these per (variant, seed) with the resolved config of that replicate. Here the data is
re-derived (the benchmark is synthesised deterministically; a folder must be on a path every
worker sees) and must hash to what the parent measured; the tagger comes from the parent's run
when this machine does not have it, so every worker scores with the very same instrument.
Training and evaluation each hold their run key's cluster-wide lock (``flows/locks.py``), so two
parents that want the same (variant, seed) train and evaluate it once. Results go to MLflow; the
parent reads them from there.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import flow

from nai3eval.tagger import TaggerReport
from nai3train.config import AblationConfig, from_dict

from .ablation import evaluate_task, prepare_data_task, train_task
from .pipeline import TaggerRef, Workspace, parent_logger


class DataMismatch(RuntimeError):
    """This worker's data is not the data the parent measured."""


def local_tagger(ws: Workspace, name: str, report: dict, parent_run_id: str) -> TaggerRef:
    """The parent's domain tagger on this machine: the work folder's copy, else downloaded from
    the parent run's ``tagger`` artifact (never retrained here: the instrument must be one)."""
    folder = ws.work / name
    if not (folder / "tagger.json").is_file():
        from mlflow.tracking import MlflowClient

        with tempfile.TemporaryDirectory(dir=ws.work) as tmp:
            got = Path(MlflowClient(ws.uri).download_artifacts(parent_run_id, "tagger", tmp))
            if not (got / "tagger.json").is_file():
                raise FileNotFoundError(f"parent run {parent_run_id} holds no domain tagger (artifact 'tagger')")
            shutil.rmtree(folder, ignore_errors=True)
            shutil.move(str(got), folder)
    return TaggerRef(str(folder), TaggerReport(**report))


@flow(name="nai3-variant", log_prints=True)
def train_eval(config: dict, variant: str, parent_run_id: str, data_hash: str, tagger: str, tagger_report: dict,
               work_dir: str = "runs", tracking_uri: str | None = None, force: bool = False) -> dict:
    """Train ``variant`` of the replicate whose resolved config is ``config`` (its ``train.seed``
    is the seed), evaluate it over the sweep, and log both as children of ``parent_run_id``.

    ``data_hash`` is the content hash of the data the parent prepared, ``tagger`` the folder name
    of its domain tagger (with ``tagger_report`` its validation figures).
    """
    cfg = from_dict(AblationConfig, config)
    ws = Workspace.open(cfg, work_dir, tracking_uri)
    data = prepare_data_task(cfg, ws)
    if data.content_hash != data_hash:
        raise DataMismatch(f"the data on this worker ({data.train}) hashes to {data.content_hash[:12]}, the parent's "
                           f"to {data_hash[:12]}: point data.path at a folder every worker sees, unchanged")
    ref = local_tagger(ws, tagger, tagger_report, parent_run_id)
    # delivered before this flow run completes: the parent reads the stored evaluation from MLflow
    with parent_logger(ws, parent_run_id).running(finish=False):
        trained = train_task(cfg, variant, data, ws, parent_run_id, force)
        result = evaluate_task(cfg, trained, data, ref, ws, parent_run_id, force)
    print(f"{variant} seed {cfg.train.seed}: training run {trained.run_id}"
          f"{' (reused)' if trained.reused else ''}, "
          f"{sum(len(result.settings(r, 'sweep')) for r in result.runs.values())} evaluation points")
    return {"variant": variant, "seed": cfg.train.seed, "training_run_id": trained.run_id, "reused": trained.reused}
