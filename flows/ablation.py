"""The ablation flow: data → tagger → train each variant → evaluate each over the sweep → summary.

Tasks receive the config path and overrides (strings) and exchange paths and MLflow run ids —
never tensors or models — so a task can run in any worker and be retried on its own. MLflow
runs: one parent per flow run; one child per variant (training) and one per evaluation point.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from prefect import flow, get_run_logger, task

from nai3train.config import AblationConfig, flatten, load_config, stable_hash, to_dict
from nai3train.data import load_folder, prepare_dataset, scan_folder
from nai3train.tracking import Tracker, open_experiment

from .summary import format_table, ui_command


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a run (tests of the task bodies)
        return logging.getLogger("nai3.flows")


@task(name="prepare-data")
def prepare_data(config: str | None, overrides: list[str], work_dir: str) -> dict:
    """Synthesise the benchmark (skipped when an identical one is already there) or point at a folder."""
    data = prepare_dataset(load_config(config, overrides).data, work_dir)
    _logger().info("data: %s (content hash %s)", data["train"], data["content_hash"][:12])
    return data


def tagger_folder_name(data: dict, cfg: AblationConfig) -> str:
    return f"tagger-{data['content_hash'][:12]}-{cfg.eval.tagger_steps}"


@task(name="prepare-tagger")
def prepare_tagger(config: str | None, overrides: list[str], data: dict, work_dir: str, uri: str,
                   parent_run_id: str) -> str:
    """Train the domain tagger once per dataset (cached by content hash) and log its accuracy."""
    from nai3eval.tagger import ensure_tagger

    cfg = load_config(config, overrides)
    folder, report = ensure_tagger(data["train"], data["eval"], cfg.data.resolution, cfg.eval.tagger_steps,
                                   cfg.train.seed, Path(work_dir) / tagger_folder_name(data, cfg))
    parent = Tracker(uri, parent_run_id)
    parent.log_metrics({f"tagger/{k}": v for k, v in report.__dict__.items()})
    parent.log_artifact(folder, "tagger")
    _logger().info("domain tagger: %s", report)
    return str(folder)


@task(name="train-variant", retries=1)
def train_variant_task(config: str | None, overrides: list[str], variant_name: str, data: dict, work_dir: str,
                       uri: str, experiment_id: str, parent_run_id: str, force: bool = False) -> dict:
    """Train one variant — or reuse its FINISHED run (same config, data and code). A retry, or a
    re-run after a crash, resumes from the newest checkpoint."""
    from nai3train.run import run_training

    cfg = load_config(config, overrides)
    variant = next(v for v in cfg.variants if v.name == variant_name)
    trained = run_training(cfg, variant, data, work_dir, uri, experiment_id, parent=Tracker(uri, parent_run_id),
                           force=force)
    if trained["reused"]:
        Tracker(uri, parent_run_id).set_tags({f"nai3.reused.{variant.name}": trained["run_id"]})
        _logger().info("reused %s from FINISHED run %s", variant.name, trained["run_id"])
    else:
        _logger().info("trained %s: loss %.4f, %.0f img/s (resumed from step %d)", variant.name,
                       trained["final_loss"], trained["img_per_s"], trained["resumed_from"])
    return trained


@task(name="evaluate-variant")
def evaluate_task(config: str | None, overrides: list[str], trained: dict, data: dict, tagger_dir: str, uri: str,
                  experiment_id: str, parent_run_id: str, work_dir: str, force: bool = False) -> dict:
    """The CFG × σ sweep and the pure-noise probes for one trained variant — or, when this training
    run was already evaluated with the same sweep, tagger and code, that evaluation reused."""
    from mlflow.tracking import MlflowClient

    from nai3eval.sweep import evaluate_checkpoint
    from nai3eval.tagger import load_tag_frequency, load_tagger
    from nai3train.run import code_version

    cfg = load_config(config, overrides)
    run_id = trained.get("run_id")
    key = stable_hash({"eval": to_dict(cfg.eval), "tagger": Path(tagger_dir).name, "code": code_version(),
                       "run": run_id})[:12]
    if run_id and not force:
        name = MlflowClient(uri).get_run(run_id).data.tags.get(f"nai3.eval.{key}")
        if name:
            local = MlflowClient(uri).download_artifacts(run_id, name, str(Path(work_dir) / "downloaded" / key))
            Tracker(uri, parent_run_id).set_tags({f"nai3.reused_eval.{trained['variant']}": run_id})
            _logger().info("reused the evaluation of %s (training run %s)", trained["variant"], run_id)
            return json.loads(Path(local).read_text())
    ev = load_folder(data["eval"], cfg.data.resolution)
    tagger, tagger_vocab, _ = load_tagger(tagger_dir)
    result = evaluate_checkpoint(trained["checkpoint"], cfg.eval, ev.images, ev.tags, tagger, tagger_vocab,
                                 parent=Tracker(uri, parent_run_id), experiment_id=experiment_id,
                                 variant_name=trained["variant"], tag_frequency=load_tag_frequency(tagger_dir),
                                 grid_dir=Path(work_dir) / "results" / "grids")
    if run_id:
        train_run = Tracker(uri, run_id)
        train_run.log_json(result, f"eval-{key}.json")
        train_run.set_tags({f"nai3.eval.{key}": f"eval-{key}.json"})
    return result


@task(name="report")
def report_task(results: list[dict], trained: list[dict], data: dict, resolution: int, uri: str, parent_run_id: str,
                work_dir: str) -> tuple[str, list[str]]:
    """Results table, claims report (Markdown, HTML, plots) and results.json on the parent run."""
    from nai3eval.report import summary_lines, write_report
    from nai3train.data.card import claim_measurements

    parent = Tracker(uri, parent_run_id)
    out = Path(work_dir) / "results"
    out.mkdir(parents=True, exist_ok=True)
    rows = [p for r in results for p in r["points"]]
    table = format_table(rows)
    extra = claim_measurements(scan_folder(data["train"]), resolution)
    (out / "results.json").write_text(json.dumps({"variants": results, "training": trained, **extra}, default=str))
    (out / "results.md").write_text("# nai3 ablation results\n\n```\n" + table + "\n```\n")
    grids = {p.stem: p for p in sorted((out / "grids").glob("*.png"))}
    claims, folder = write_report(results, out / "report", extra["bucketing"], extra["normalisation"], grids)
    for g in grids.values():
        (folder / g.name).write_bytes(g.read_bytes())
    parent.log_artifact(out / "results.json", "results")
    parent.log_artifact(out / "results.md", "results")
    parent.log_artifact(folder, "report")
    parent.log_metrics({f"claims/{c.id}_supported": float(c.verdict == "supported") for c in claims})
    parent.set_tags({f"nai3.claim.{c.id}": c.verdict for c in claims})
    return table, summary_lines(claims)


def evaluate_and_report(config: str | None, overrides: list[str], checkpoints: list[dict], data: dict,
                        tagger_dir: str, uri: str, experiment_id: str, parent_run_id: str, work_dir: str,
                        resolution: int, force: bool = False) -> tuple[list[dict], str, list[str]]:
    """Evaluate each checkpoint ({"checkpoint", "variant", optional training "run_id"}) and write the
    report: shared by the ablation and eval-only flows."""
    results = [evaluate_task(config, overrides, c, data, tagger_dir, uri, experiment_id, parent_run_id, work_dir,
                             force) for c in checkpoints]
    table, claims = report_task(results, checkpoints, data, resolution, uri, parent_run_id, work_dir)
    return results, table, claims


@flow(name="nai3-ablation", log_prints=True)
def ablation(config: str | None = "configs/smoke.yaml", overrides: list[str] | None = None, work_dir: str = "runs",
             tracking_uri: str | None = None, force: bool = False) -> dict:
    """Train every variant of the matrix in ``config`` and evaluate each over its CFG × σ sweep.

    ``overrides`` are ``key.path=value`` strings; the config is validated before any work.
    ``tracking_uri`` defaults to $MLFLOW_TRACKING_URI, else the SQLite store under ./mlflow.
    """
    overrides = list(overrides or [])
    cfg: AblationConfig = load_config(config, overrides)  # refuse a bad config before any work
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri, experiment_id = open_experiment(cfg.experiment, tracking_uri)
    try:
        from prefect.runtime import flow_run

        flow_run_id = str(flow_run.id or "")
    except Exception:
        flow_run_id = ""
    parent = Tracker.start(uri, experiment_id, f"ablation/{cfg.name}",
                           tags={"nai3.kind": "ablation", "prefect.flow_run_id": flow_run_id,
                                 "nai3.config_hash": stable_hash(to_dict(cfg))[:12]})
    try:
        parent.log_params(flatten({k: v for k, v in to_dict(cfg).items() if k != "variants"}))
        parent.log_params({"variants": ",".join(v.name for v in cfg.variants)})
        parent.log_json(to_dict(cfg), "config.resolved.json")
        data = prepare_data(config, overrides, str(work))
        tagger_dir = prepare_tagger(config, overrides, data, str(work), uri, parent.run_id)
        if cfg.skipped_variants:
            parent.log_json(list(cfg.skipped_variants), "skipped_variants.json")
            for s in cfg.skipped_variants:
                print(f"skipped variant {s}")
        trained = [train_variant_task(config, overrides, v.name, data, str(work), uri, experiment_id, parent.run_id,
                                      force) for v in cfg.variants]
        results, table, claims = evaluate_and_report(config, overrides, trained, data, tagger_dir, uri, experiment_id,
                                                     parent.run_id, str(work), cfg.data.resolution, force)
        parent.finish(True)
    except BaseException:
        parent.finish(False)
        raise
    print("\n" + table)
    print("\nClaims (effect [95 % CI]) — full report: " + str(work / "results" / "report" / "report.html"))
    print("\n".join(claims))
    print(f"\nMLflow parent run {parent.run_id} in experiment '{cfg.experiment}'.")
    print(f"Open the MLflow UI:  {ui_command(uri)}")
    return {"parent_run_id": parent.run_id, "experiment_id": experiment_id, "tracking_uri": uri,
            "results": results, "trained": trained}
