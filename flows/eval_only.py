"""The eval-only flow: evaluate existing checkpoints (folders, MLflow run ids or runs:/ URIs) with a
given sweep, and write the claims report — no training."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nai3train.checkpoint import load_model_meta
from nai3train.config import AblationConfig
from nai3train.ops.run import TrainedVariant
from nai3train.ops.tracking import resolve_checkpoint

from .ablation import evaluate_and_report, prepare_data_task, prepare_tagger_task, resolve, start_parent
from .pipeline import Workspace, parent_logger


@task(name="resolve-checkpoint", retries=2, cache_policy=NO_CACHE)
def resolve_task(ref: str, ws: Workspace) -> TrainedVariant:
    ckpt = resolve_checkpoint(ref, ws.uri, Path(ws.work) / "downloaded")
    return TrainedVariant(load_model_meta(ckpt)["variant"]["name"], str(ckpt), None)


@flow(name="nai3-eval", log_prints=True)
def eval_only(checkpoints: list[str], config: str | None = "configs/smoke.yaml", overrides: list[str] | None = None,
              work_dir: str = "runs", tracking_uri: str | None = None, settings: AblationConfig | None = None) -> dict:
    """Evaluate each checkpoint over the config's sweep (same prompts and noise for all) and report."""
    cfg = resolve(config, overrides, settings)
    if not checkpoints:
        raise ValueError("eval-only needs at least one checkpoint folder or MLflow run id (parameter checkpoints)")
    ws = Workspace.open(cfg, work_dir, tracking_uri)
    parent = start_parent(cfg, ws, f"eval-only/{cfg.name}", {"nai3.kind": "ablation", "nai3.mode": "eval-only"})
    with parent_logger(ws, parent.run_id).running() as logger:
        logger.log_params({"checkpoints": ",".join(checkpoints)})
        data = prepare_data_task(cfg, ws)
        tagger = prepare_tagger_task(cfg, data, ws, parent.run_id)
        resolved = [resolve_task(c, ws) for c in checkpoints]
        results, out = evaluate_and_report(cfg, resolved, data, tagger, ws, parent.run_id)
        print("\n" + out.table + "\n" + "\n".join(out.summary))
    return {"parent_run_id": parent.run_id, "results": results}
