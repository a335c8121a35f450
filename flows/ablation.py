"""The ablation flow: data → tagger → train each variant → evaluate each over the sweep → report.

Thin Prefect orchestration over :mod:`flows.pipeline`. The config is resolved once, logged on the
parent run, and that same object is handed to every task, so no task can see a different config
from the one the flow logged. Tasks exchange folders, run ids and typed results — never tensors
or models — so each can be retried on its own. MLflow runs: one parent per flow run; one child per
variant (training) and one per evaluation point.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nai3eval.record import Record
from nai3train.config import AblationConfig, load_config, stable_hash, to_dict
from nai3train.data import PreparedData
from nai3train.ops.run import TrainedVariant
from nai3train.ops.tracking import Tracker, flatten
from nai3train.ops.views import CLAIMS_VIEW, COMPARISON_VIEW, runs_page

from . import cost, fanout, local_units, pipeline, runs
from .identity import version_tags
from .locks import prefect_server_configured
from .pipeline import ReportOutput, TaggerRef, Workspace
from .summary import ui_command


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a run
        return logging.getLogger("nai3.flows")


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data_task(cfg: AblationConfig, ws: Workspace) -> PreparedData:
    data = pipeline.prepare_data(cfg, ws)
    _logger().info("data: %s (content hash %s)", data.train, data.content_hash[:12])
    return data


@task(name="prepare-tagger", cache_policy=NO_CACHE)
def prepare_tagger_task(cfg: AblationConfig, data: PreparedData, ws: Workspace, parent_run_id: str) -> TaggerRef:
    tagger = pipeline.prepare_tagger(cfg, data, ws)
    parent = pipeline.parent_logger(ws, parent_run_id)
    parent.log_metrics({f"tagger/{k}": v for k, v in tagger.report.__dict__.items()})
    parent.log_artifact(tagger.folder, "tagger")
    _logger().info("domain tagger: %s", tagger.report)
    return tagger


@task(name="train-variant", retries=1, cache_policy=NO_CACHE)
def train_task(cfg: AblationConfig, variant_name: str, data: PreparedData, ws: Workspace, parent_run_id: str,
               force: bool = False) -> TrainedVariant:
    variant = next(v for v in cfg.variants if v.name == variant_name)
    trained = pipeline.train(cfg, variant, data, ws, parent=pipeline.parent_logger(ws, parent_run_id),
                             force=force)
    if trained.reused:
        _logger().info("reused %s from FINISHED run %s", variant.name, trained.run_id)
    else:
        _logger().info("trained %s: loss %.4f, %.0f img/s (resumed from step %d)", variant.name, trained.final_loss,
                       trained.img_per_s, trained.resumed_from)
    return trained


@task(name="evaluate-variant", cache_policy=NO_CACHE)
def evaluate_task(cfg: AblationConfig, trained: TrainedVariant, data: PreparedData, tagger: TaggerRef, ws: Workspace,
                  parent_run_id: str, force: bool = False) -> Record:
    return pipeline.evaluate(cfg, trained, data, tagger, ws, parent=pipeline.parent_logger(ws, parent_run_id),
                             force=force)


@task(name="train-evaluate-unit", retries=1, cache_policy=NO_CACHE)
def unit_task(cfg: AblationConfig, variant_name: str, data: PreparedData, tagger: TaggerRef, ws: Workspace,
              parent_run_id: str, force: bool = False, threads: int = 1) -> tuple[TrainedVariant, Record]:
    """One (variant, seed) of ``cfg`` (a replicate's config) trained and evaluated in ``threads``
    threads: what one worker process of a parallel local run does (``flows/local_units.py``). A
    retry reuses a finished training run and resumes from the checkpoint and the measured points.
    The worker's MLflow calls (points, the stored evaluation, its cost) are delivered before the
    task returns: the process may end right after it."""
    local_units.enter_unit(fanout.Unit(variant_name, cfg.train.seed).label, threads)
    with pipeline.parent_logger(ws, parent_run_id).running(finish=False):
        trained = train_task.fn(cfg, variant_name, data, ws, parent_run_id, force)
        return trained, evaluate_task.fn(cfg, trained, data, tagger, ws, parent_run_id, force)


@task(name="report", cache_policy=NO_CACHE)
def report_task(cfg: AblationConfig, results: list[Record], trained: list[TrainedVariant], data: PreparedData,
                ws: Workspace, parent_run_id: str) -> ReportOutput:
    t0 = time.perf_counter()
    out = pipeline.report(cfg, results, trained, data, ws, parent=pipeline.parent_logger(ws, parent_run_id))
    return replace(out, seconds=time.perf_counter() - t0)


def log_cost(cfg: AblationConfig, ws: Workspace, data: PreparedData, out: ReportOutput, parent_run_id: str) -> list[str]:
    """What the night's decisions cost (``flows/cost.py``), logged on the parent run: ``cost/…``
    metrics and ``cost.json``; the lines to print."""
    units = cost.unit_costs(cfg, data.content_hash, ws.uri, ws.experiment_id)
    if not units:
        return []
    stages = cost.stage_table(units)
    # the claims as the report wrote them: to_dict() again would redo each claim's design simulations
    claims = cost.claim_costs(json.loads((out.folder / "report.json").read_text())["claims"], units)
    logger = pipeline.parent_logger(ws, parent_run_id)
    logger.log_metrics({**cost.metrics(stages, claims), "cost/report_seconds": out.seconds})
    logger.log_json({"units": [asdict(u) for u in units], "arms": stages,
                     "claims": [{**asdict(c), "to_go_h": c.to_go_h} for c in claims]}, "cost.json")
    return cost.lines(stages, claims, out.seconds)


def evaluate_and_report(cfg: AblationConfig, trained: list[TrainedVariant], data: PreparedData, tagger: TaggerRef,
                        ws: Workspace, parent_run_id: str, force: bool = False
                        ) -> tuple[list[Record], ReportOutput]:
    """Evaluate each trained variant and write the report: shared by the ablation and eval-only flows."""
    results = evaluate_all(cfg, trained, data, tagger, ws, parent_run_id, force)
    return results, report_task(cfg, results, trained, data, ws, parent_run_id)


def evaluate_all(cfg: AblationConfig, trained: list[TrainedVariant], data: PreparedData, tagger: TaggerRef,
                 ws: Workspace, parent_run_id: str, force: bool = False) -> list[Record]:
    """Each trained variant evaluated in this process, under its replicate's config."""
    return [evaluate_task(cfg.for_seed(t.seed) if t.seed in cfg.replicate_seeds else cfg, t, data, tagger, ws,
                          parent_run_id, force) for t in trained]


def fan_out(replicas: list[AblationConfig], data: PreparedData, tagger: TaggerRef, ws: Workspace, parent_run_id: str,
            deployment: str, attempts: int, force: bool
            ) -> tuple[list[TrainedVariant], list[Record], fanout.FanOutFailed | None]:
    """One ``deployment`` flow run per (variant, seed), waited for; then what the completed ones
    left in MLflow (the training run and its stored evaluation), and the failure naming the rest."""
    children = [fanout.Child(fanout.Unit(v.name, ck.train.seed), {
        "config": to_dict(ck), "variant": v.name, "parent_run_id": parent_run_id, "data_hash": data.content_hash,
        "tagger": Path(tagger.folder).name, "tagger_report": asdict(tagger.report), "work_dir": str(ws.work),
        "tracking_uri": ws.uri, "force": force}) for ck in replicas for v in ck.variants]
    fanout.ensure_zombie_automation()
    for child in children:
        fanout.submit(child, deployment)
    print(f"submitted {len(children)} (variant, seed) flow runs to {deployment}: "
          + ", ".join(f"{c.unit.label} → {c.name}" for c in children))
    failure = None
    try:
        fanout.wait(children, attempts, deployment=deployment)
    except fanout.FanOutFailed as e:
        failure = e
        _logger().error("%s", e)
    trained, results = [], []
    for ck in replicas:
        for v in ck.variants:
            child = next(c for c in children if c.unit == fanout.Unit(v.name, ck.train.seed))
            if child.state != "COMPLETED":
                continue
            got = pipeline.finished_training(ck, v, data, ws)
            result = got and pipeline.stored_result(ck, got, tagger, ws)
            if got is None or result is None:
                failure = failure or fanout.FanOutFailed(
                    f"{child.unit.label}: flow run '{child.name}' completed but MLflow holds no finished training "
                    f"run and evaluation for it under this training identity ({runs.training_identity().digest}): does that "
                    "worker run the same code?")
                continue
            trained.append(got)
            results.append(result)
    return trained, results, failure


def run_here(cfg: AblationConfig, replicas: list[AblationConfig], data: PreparedData, tagger: TaggerRef,
             ws: Workspace, parent_run_id: str, force: bool, units: int | None
             ) -> tuple[list[TrainedVariant], list[Record], fanout.FanOutFailed | None]:
    """Every (variant, seed) on this machine, several at a time where the layout allows: the
    completed ones and the failure naming the rest (None if all completed), as ``fan_out``."""
    n = sum(len(ck.variants) for ck in replicas)
    plan = local_units.layout(cfg, n, local_units.requested_units(units))
    print(plan.line())
    pipeline.parent_logger(ws, parent_run_id).set_tags({"nai3.units": str(plan.workers),
                                                        "nai3.unit_threads": str(plan.threads)})
    if plan.parallel:
        if cfg.eval.inception:  # its reference statistics first, on every core: each unit then reads them
            pipeline.instruments(cfg, data, tagger)
        return local_units.run_units(replicas, data, tagger, ws, parent_run_id, force, plan)
    trained = [train_task(ck, v.name, data, ws, parent_run_id, force) for ck in replicas for v in ck.variants]
    return trained, evaluate_all(cfg, trained, data, tagger, ws, parent_run_id, force), None


def nightly_plan(cfg: AblationConfig, ws: Workspace, data: PreparedData, all_arms: bool = False):
    """(the nightly's plan, with the seed it trains — None with ``all_arms`` —, the seeds each arm
    has finished, the night's seeds: every finished one and the new one)."""
    from .plan import plan_nightly

    have = runs.seeds_by_arm(cfg, data.content_hash, ws.uri, ws.experiment_id)
    if all_arms:
        return None, have, runs.next_seeds(have)
    state = pipeline.claims_state(ws)
    recipes = runs.ledger_recipes(cfg, data.content_hash)
    plan = plan_nightly(cfg, state.spec(), state.ledger(), runs.decider_hash(cfg), recipes)
    seeds = runs.next_seeds(have, plan.train)
    return replace(plan, seed=seeds[-1] if plan.train else None), have, seeds


def _replica(cfg: AblationConfig, seed: int, plan, have: dict[str, set[int]]) -> AblationConfig:
    """The config of replicate ``seed``: every arm, or under a plan the arms it trains and those that
    already finished this seed (reused, so the report keeps them)."""
    ck = cfg.for_seed(seed)
    if plan is None:
        return ck
    keep = tuple(v for v in ck.variants if v.name in plan.train or seed in have.get(v.name, set()))
    return ck.model_copy(update={"variants": keep})


def show_plan(config: str | None, overrides: list[str] | None, work_dir: str, tracking_uri: str | None,
              settings: AblationConfig | None = None) -> list[str]:
    """``nai3 ablation --plan``: the nightly's plan at the current ledger, nothing trained."""
    cfg = resolve(config, overrides, settings)
    ws = Workspace.open(cfg, work_dir, tracking_uri)
    pipeline.pin_claims_spec(ws)
    data = prepare_data_task(cfg, ws)
    plan, have, _ = nightly_plan(cfg, ws, data)
    return ["seeds finished: " + ", ".join(f"{v} {sorted(k)}" for v, k in have.items()), *plan.lines()]


def resolve(config: str | None, overrides: list[str] | None, settings: AblationConfig | None) -> AblationConfig:
    """The flow's config: ``settings`` as given (the typed form in the Prefect UI), else the YAML file
    with overrides; validated before any work."""
    return settings if settings is not None else load_config(config, list(overrides or []))


def start_parent(cfg: AblationConfig, ws: Workspace, name: str, tags: dict[str, str]) -> Tracker:
    parent = Tracker.start(ws.uri, ws.experiment_id, name,
                           tags={"prefect.flow_run_id": runs.current_flow_run_id(),
                                 "nai3.config_hash": stable_hash(to_dict(cfg))[:12],
                                 "nai3.train_identity": runs.training_identity().digest,
                                 "nai3.eval_identity": runs.evaluation_identity().digest, **version_tags(), **tags})
    parent.log_params(flatten({k: v for k, v in to_dict(cfg).items() if k != "variants"}))
    parent.log_json(to_dict(cfg), "config.resolved.json")
    return parent


@flow(name="nai3-ablation", log_prints=True)
def ablation(config: str | None = "configs/smoke.yaml", overrides: list[str] | None = None, work_dir: str = "runs",
             tracking_uri: str | None = None, force: bool = False, settings: AblationConfig | None = None,
             next_seed: bool = False, variant_deployment: str | None = None, attempts: int = 2,
             all_arms: bool = False, units: int | None = None) -> dict:
    """Train every variant of the matrix and evaluate each over its CFG × σ sweep.

    ``config`` is a YAML file and ``overrides`` ``key.path=value`` strings — or ``settings`` the whole
    config as a typed object. ``tracking_uri`` defaults to $MLFLOW_TRACKING_URI, else the SQLite
    store under ./mlflow. ``next_seed`` (the nightly): replicates accumulate across runs — train the
    next training seed no arm has finished yet, reuse every seed already finished in the experiment,
    and report over all of them (``train.seeds`` is ignored). The new seed trains only the arms the
    open claims still need (``flows/plan.py``; ``all_arms``: every arm, as before).

    ``variant_deployment`` (e.g. ``nai3-variant/train-eval``): fan out — each (variant, seed) runs
    as a flow run of that deployment on whichever worker is free (``flows/fanout.py``), a crashed
    one is submitted again (``attempts`` runs in all), and the report is written from MLflow once
    all are final. Without it, or without a Prefect server (the ephemeral API), everything runs
    in this process: ``units`` (variant, seed) units at a time in worker processes
    (``flows/local_units.py``; default: as many as cores and memory allow, 1: one after another).
    """
    cfg = resolve(config, overrides, settings)
    ws = Workspace.open(cfg, work_dir, tracking_uri)
    pipeline.pin_claims_spec(ws)  # an edited spec under a registered version decides nothing
    data = prepare_data_task(cfg, ws)
    plan, have = None, {}
    if next_seed:
        plan, have, seeds = nightly_plan(cfg, ws, data, all_arms)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seeds": seeds})})
        print(f"accumulating replicates: seeds {list(cfg.replicate_seeds)} (the last one new unless already running)")
        if plan is not None:
            print("nightly plan: " + "\n              ".join(plan.lines()))
    parent = start_parent(cfg, ws, f"ablation/{cfg.name}", {"nai3.kind": "ablation"})
    # from here on MLflow may come and go: the work goes on, the logging waits (nai3train/ops/buffered.py)
    with pipeline.parent_logger(ws, parent.run_id).running() as logger:
        logger.log_params({"variants": ",".join(v.name for v in cfg.variants)})
        tagger = prepare_tagger_task(cfg, data, ws, parent.run_id)
        if cfg.skipped_variants:
            logger.log_json(list(cfg.skipped_variants), "skipped_variants.json")
            for s in cfg.skipped_variants:
                print(f"skipped variant {s}")
        if plan is not None:
            logger.log_json(plan.to_dict(), "plan.json")
        replicas = [ck for ck in (_replica(cfg, k, plan, have) for k in cfg.replicate_seeds) if ck.variants]
        logger.log_params({"train.replicate_seeds": ",".join(map(str, cfg.replicate_seeds))})
        fanning_out = bool(variant_deployment) and prefect_server_configured()
        if variant_deployment and not fanning_out:
            print(f"no Prefect server configured (PREFECT_API_URL): {variant_deployment} is not used, every "
                  "(variant, seed) runs in this process")
        if fanning_out:
            trained, results, failure = fan_out(replicas, data, tagger, ws, parent.run_id, variant_deployment, attempts,
                                                force)
        else:
            trained, results, failure = run_here(cfg, replicas, data, tagger, ws, parent.run_id, force, units)
        if failure is not None and not results:
            raise failure
        out = report_task(cfg, results, trained, data, ws, parent.run_id)
        if failure is not None:
            raise failure  # after the report over the (variant, seed) runs that completed
        print("\n" + out.table)
        print("\nClaims (effect [95 % CI]) — full report: " + str(out.folder / "report.html"))
        print("\n".join(out.summary))
        try:
            cost_lines = log_cost(cfg, ws, data, out, parent.run_id)
        except Exception as e:  # the cost is read from MLflow: an outage must not fail a finished night
            cost_lines = []
            _logger().warning("the decisions' cost was not computed: %s", str(e)[:300])
        if cost_lines:
            print("\nWhat the decisions cost on this machine (flows/cost.py; cost.json on the parent run):\n"
                  + "\n".join(cost_lines))
        print(f"\nMLflow parent run {parent.run_id} in experiment '{cfg.experiment}'.")
        print(f"Open the MLflow UI:  {ui_command(ws.uri)}")
        print(f"Compare the runs:    {runs_page(ws.uri, ws.experiment_id, COMPARISON_VIEW)}")
        print(f"Claims, look by look: {runs_page(ws.uri, ws.experiment_id, CLAIMS_VIEW, charts=True)}")
    return {"parent_run_id": parent.run_id, "experiment_id": ws.experiment_id, "tracking_uri": ws.uri,
            "results": results, "trained": trained}
