"""The eval-only flow: evaluate existing checkpoints (folders, MLflow run ids or runs:/ URIs) with a
given sweep, and write the claims report — no training."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from nai3train.checkpoint import load_meta
from nai3train.config import load_config
from nai3train.tracking import Tracker, open_experiment, resolve_checkpoint

from .ablation import evaluate_and_report, prepare_data, prepare_tagger


@task(name="resolve-checkpoint", retries=2)
def resolve_task(ref: str, uri: str, work_dir: str) -> dict:
    ckpt = resolve_checkpoint(ref, uri, Path(work_dir) / "downloaded")
    return {"checkpoint": str(ckpt), "variant": load_meta(ckpt)["variant"]["name"], "source": ref}


@flow(name="nai3-eval", log_prints=True)
def eval_only(checkpoints: list[str], config: str | None = "configs/smoke.yaml", overrides: list[str] | None = None,
              work_dir: str = "runs", tracking_uri: str | None = None) -> dict:
    """Evaluate each checkpoint over the config's sweep (same prompts and noise for all) and report."""
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    if not checkpoints:
        raise ValueError("eval-only needs at least one checkpoint folder or MLflow run id (parameter checkpoints)")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri, experiment_id = open_experiment(cfg.experiment, tracking_uri)
    parent = Tracker.start(uri, experiment_id, f"eval-only/{cfg.name}", tags={"nai3.kind": "ablation",
                                                                              "nai3.mode": "eval-only"})
    try:
        parent.log_params({"checkpoints": ",".join(checkpoints)})
        data = prepare_data(config, overrides, str(work))
        tagger_dir = prepare_tagger(config, overrides, data, str(work), uri, parent.run_id)
        resolved = [resolve_task(c, uri, str(work)) for c in checkpoints]
        results, table, claims = evaluate_and_report(config, overrides, resolved, data, tagger_dir, uri, experiment_id,
                                                     parent.run_id, str(work), cfg.data.resolution)
        parent.finish(True)
    except BaseException:
        parent.finish(False)
        raise
    print("\n" + table + "\n" + "\n".join(claims))
    return {"parent_run_id": parent.run_id, "results": results}
