"""The nai3 pipeline in plain Python: prepare data → tagger → train → evaluate → report.

Every stage takes the resolved config object (the one the flow logged), never a path to re-parse;
the Prefect flows wrap these stages as tasks and every CLI command calls them directly, so there
is exactly one way each stage is done. Stages exchange typed references (folders, run ids,
results), never models or tensors.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

from nai3eval.evaluate import Instruments, build_instruments, evaluate_variant
from nai3eval.metrics import InstrumentSettings
from nai3eval.claims import ClaimsOutcome, ClaimsSpec
from nai3eval.claims import heldout
from nai3eval.claims.state import ClaimsState
from nai3eval.reporting.columns import points_table
from nai3eval.reporting.report import claim_row, summary_lines, write_report
from nai3eval.prompts import read_prompt_file
from nai3eval.record import Record
from nai3eval.reporting.sinks import GridSink, MLflowPointSink, PointCache, grid_name
from nai3eval.checkpoint import load_model
from nai3eval.tagger import TaggerReport, ensure_tagger, load_tag_frequency, load_tagger
from nai3train.checkpoint import load_meta
from nai3train.config import AblationConfig, VariantConfig, stable_hash, to_dict
from nai3train.config.locate import locate
from nai3train.data import PreparedData, load_folder, prepare_dataset, scan_folder
from nai3train.ops.run import TrainedVariant, train_tracked, train_untracked
from nai3train.ops.threads import apply_threads, torch_threads_in_use
from nai3train.ops.atomic import atomic_write
from nai3train.ops.buffered import BufferedTracker, shared, transient
from nai3train.ops.secrets import redact
from nai3train.ops.tracking import Tracker, open_experiment
from nai3train.ops.views import claims_view_tags, comparison_view_tags

from . import runs
from .fingerprint import Fingerprint, fingerprint
from .identity import instrument_identity, version_tags
from .locks import run_lock
from .summary import format_table, frontends_text

log = logging.getLogger("nai3.pipeline")


@dataclass(frozen=True)
class Workspace:
    """Where a pipeline run keeps its files and logs its runs."""

    work: Path
    uri: str
    experiment_id: str

    @classmethod
    def open(cls, cfg: AblationConfig, work_dir: str | Path, tracking_uri: str | None = None) -> "Workspace":
        work = Path(work_dir).resolve()
        if work.exists() and not work.is_dir():
            raise ValueError(f"work folder {work} is a file: --work-dir must name a folder")
        work.mkdir(parents=True, exist_ok=True)
        uri, experiment_id = open_experiment(cfg.experiment, tracking_uri)
        return cls(work, uri, experiment_id)


def claims_state(ws: Workspace, journal: Tracker | BufferedTracker | None = None) -> ClaimsState:
    """The store's claims state (``nai3eval.claims.state``) with this workspace's parts: the ledger
    experiment (``LEDGER_EXPERIMENT``: the ledger belongs to the recipe and the spec, not to one
    experiment), the claims lock (cluster-wide with a Prefect server, per machine without one), the
    ledger copy under ``<work>/journals``, and ``journal`` (the run's buffered logger) for ledger
    entries written while MLflow is away."""
    from mlflow.tracking import MlflowClient

    ledger_id = _ledger_experiment(ws)
    return ClaimsState(MlflowClient(ws.uri), ws.uri, ledger_id,
                       ws.work / "journals" / f"ledger-{ledger_id}.json",
                       lambda: run_lock(ws.work, f"claims-{ledger_id}"), transient,
                       (lambda tags: journal.set_experiment_tags(ledger_id, tags, only_new=True))
                       if journal is not None else None)


def _ledger_experiment(ws: Workspace) -> str:
    """The store's ledger experiment (created on first use); while MLflow does not answer, the id
    this work folder found before (a report must not wait for the server)."""
    from nai3eval.claims.ledger import LEDGER_EXPERIMENT
    from nai3train.ops.tracking import open_experiment

    known = ws.work / "journals" / f"ledger-experiment-{hashlib.sha256(ws.uri.encode()).hexdigest()[:12]}.txt"
    try:
        _, ledger_id = open_experiment(LEDGER_EXPERIMENT, ws.uri)
    except Exception as e:
        if not (transient(e) and known.is_file()):
            raise
        return known.read_text().strip()
    if not known.is_file() or known.read_text().strip() != ledger_id:
        atomic_write(known, ledger_id)
    return ledger_id


def pin_claims_spec(ws: Workspace) -> ClaimsSpec:
    """The claims spec, pinned in the experiment before any work (``ClaimsState.pin``)."""
    return claims_state(ws).pin()


def parent_logger(ws: Workspace, run_id: str) -> BufferedTracker:
    """The flow's parent run as this process's buffered logger (``nai3train.ops.buffered.shared``):
    evaluation points, stored evaluations and the report go through it, so an MLflow outage
    delays their logging, never the work. Its journal lies under ``<work>/journals``."""
    return shared(Tracker(ws.uri, run_id), ws.work / "journals")


@dataclass(frozen=True)
class TaggerRef:
    folder: str
    report: TaggerReport


def prepare_data(cfg: AblationConfig, ws: Workspace) -> PreparedData:
    """Synthesise the benchmark (skipped when an identical one is already there) or point at a folder.
    Under a lock: two flow runs started together must not write (or hash) the same folder at once."""
    with run_lock(ws.work, f"data-{stable_hash(to_dict(cfg.data))[:12]}"):
        return prepare_dataset(cfg.data, ws.work)


def prepare_tagger(cfg: AblationConfig, data: PreparedData, ws: Workspace) -> TaggerRef:
    """The domain tagger, trained once per dataset (cached by content hash). Its seed is the data
    seed, never the training seed: the instrument must not change with what it measures."""
    folder = ws.work / f"tagger-{data.content_hash[:12]}-{cfg.eval.tagger_steps}-{instrument_identity().digest}"
    with run_lock(ws.work, folder.name):
        path, report = ensure_tagger(data.train, data.eval, cfg.data.resolution, cfg.eval.tagger_steps,
                                     cfg.data.seed, folder, data.scan_cache)
    return TaggerRef(str(path), report)


def train(cfg: AblationConfig, variant: VariantConfig, data: PreparedData, ws: Workspace, parent: Tracker | None = None,
          resume: bool = True, force: bool = False, progress: bool = True) -> TrainedVariant:
    """Train one variant — or reuse a FINISHED run with the same run key and training code
    (``force`` retrains from scratch). A retry, or a re-run after a crash (on this worker or on
    another one sharing the work folder), resumes from the newest checkpoint of the run directory;
    with ``train.checkpoint_store: tracking`` from the dead run's newest one in MLflow on any worker."""
    key = runs.run_key(cfg, variant, data.content_hash)
    out = ws.work / "variants" / f"{variant.name}-{key}"
    if int(os.environ.get("RANK", "0")) != 0:
        return train_untracked(cfg, variant, data, out, resume)
    ident = runs.training_identity()
    fp = fingerprint(cfg, variant, ws.work / "cache" / "fingerprints")
    with run_lock(ws.work, key):
        done = None if force else finished_training(cfg, variant, data, ws, out, fp)
        if done is not None:
            log.info("reusing %s from FINISHED run %s", variant.name, done.run_id)
            if parent is not None:
                parent.set_tags({f"nai3.reused.{variant.name}": done.run_id})
            return done
        for orphan in runs.close_orphaned_runs(ws.uri, ws.experiment_id, key):
            log.warning("training run %s of %s was left RUNNING by a dead process: marked KILLED", orphan,
                        variant.name)
        if force:
            shutil.rmtree(out, ignore_errors=True)
        _forget_other_code(out, variant.name, f"{ident.digest} {fp.text}")
        # a forced retrain starts over: never from this run folder's, nor a dead run's remote, checkpoint
        return train_tracked(cfg, variant, data, out, ws.uri, ws.experiment_id, parent, resume and not force, progress,
                             {"nai3.run_key": key, "nai3.train_identity": ident.digest, "nai3.fingerprint": fp.text,
                              "prefect.flow_run_id": runs.current_flow_run_id(),
                              "nai3.recipe_key": runs.recipe_key(cfg, variant, data.content_hash), **version_tags()},
                             {"identity-training.json": ident.to_dict()})


CODE_MARK = "training_identity"


def _forget_other_code(out: Path, name: str, version: str) -> None:
    """Resume only checkpoints written under this training identity and fingerprint (``version``).
    The run folder is keyed by config and data, not code: after a change to the training code its
    newest checkpoint (the old code's final one, say) would be "resumed" with no step left,
    answering new code with old weights. Such checkpoints are dropped here (the old runs keep
    theirs in MLflow) and the training starts over."""
    mark = out / CODE_MARK
    have = mark.read_text().strip() if mark.is_file() else None
    if have != version and any((out / d).exists() for d in ("checkpoints", "checkpoint")):
        log.warning("%s: the checkpoints in %s were written by other training code (%s, now %s): starting over",
                    name, out, have or "unrecorded", version)
        for d in ("checkpoints", "checkpoint"):
            shutil.rmtree(out / d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(mark, version)


def finished_training(cfg: AblationConfig, variant: VariantConfig, data: PreparedData, ws: Workspace,
                      out: Path | None = None, fp: Fingerprint | None = None) -> TrainedVariant | None:
    """The FINISHED training run of this (variant, seed) under today's training identity (and, when
    given, a fingerprint that matches ``fp``), if any; its checkpoint is made local under ``out``
    (without ``out`` it is named by its MLflow URI)."""
    done = runs.find_finished_training(ws.uri, ws.experiment_id, runs.run_key(cfg, variant, data.content_hash),
                                       runs.training_identity().digest, fp)
    if done is None:
        return None
    run_id = done.info.run_id
    checkpoint = str(_reuse_checkpoint(ws.uri, run_id, out)) if out is not None else f"runs:/{run_id}/checkpoint"
    return TrainedVariant(variant.name, checkpoint, run_id, True, done.data.metrics.get("train/img_per_s", float("nan")),
                          done.data.metrics.get("train/loss", float("nan")), seed=cfg.train.seed)


def _reuse_checkpoint(uri: str, run_id: str, out: Path) -> Path:
    local = out / "checkpoint"
    try:
        load_meta(local)
        return local
    except FileNotFoundError:
        from mlflow.tracking import MlflowClient

        return Path(MlflowClient(uri).download_artifacts(run_id, "checkpoint", str(out / "downloaded")))




@functools.lru_cache(maxsize=4)
def _instruments(weights: tuple[str, ...], eval_dir: str, resolution: int, tagger_dir: str,
                 benchmark: bool, scan_cache: str | None) -> Instruments:
    ec = InstrumentSettings(*weights)
    # streamed by each instrument, never held; a reference folder of a researcher's needs no tags
    ev = load_folder(eval_dir, resolution, cache_file=scan_cache, untagged=not benchmark)
    cache = str(Path(scan_cache).parent / "instruments") if scan_cache else None  # shared by a night's unit processes
    if not tagger_dir:
        return build_instruments(ec, ev.batches, ev.tags, None, [], None, benchmark, cache_dir=cache)
    tagger, vocab, report = load_tagger(tagger_dir)
    return build_instruments(ec, ev.batches, ev.tags, tagger, vocab, load_tag_frequency(tagger_dir), benchmark,
                             {"recall": report.val_recall, "precision": report.val_precision,
                              "label_accuracy": report.val_label_accuracy}, cache_dir=cache)


def instruments(cfg: AblationConfig, data: PreparedData, tagger: TaggerRef | None) -> Instruments:
    """The reference set and metric objects, built once per process for a given reference set,
    tagger and real-data weights — shared by every variant and every training seed (the evaluation
    seed and sweep settings do not enter an instrument). ``tagger``: ``None`` where the domain
    tagger was not trained on the data the prompts come from (a researcher's own model)."""
    weights = astuple(InstrumentSettings.of(cfg.eval))
    return _instruments(weights, data.eval, cfg.data.resolution, tagger.folder if tagger else "", data.benchmark,
                        data.scan_cache)


def _instrument_name(tagger: TaggerRef | None) -> str:
    return Path(tagger.folder).name if tagger else "no-tagger"


def parameterization_text(variant: VariantConfig, source: str) -> str:
    """How the model was read, as the console and the MLflow tag say it."""
    table = "nai3 SDXL ZTSNR (exact ∞, practical 20000)" if variant.ztsnr else "nai3 SDXL (σ_max 14.6146)"
    return f"{variant.prediction}-prediction, ztsnr={variant.ztsnr}, from {source}; σ table: {table}"


@dataclass(frozen=True)
class ModelOptions:
    """How to read a model a researcher holds: parameterisation overrides, the sampling size and
    the prompts (``None``: what the model and the config say)."""

    prediction: str | None = None
    ztsnr: bool | None = None
    resolution: int | None = None
    prompts: tuple[tuple[str, ...], ...] | None = None
    model_config: str | None = None  # the local diffusers folder a single-file checkpoint takes configs from


def evaluate(cfg: AblationConfig, trained: TrainedVariant, data: PreparedData, tagger: TaggerRef | None,
             ws: Workspace, parent: Tracker | None = None, force: bool = False, progress: bool = True,
             options: ModelOptions = ModelOptions()) -> Record:
    """The CFG × σ sweep and the pure-noise probes for one trained variant (or any model
    ``load_model`` reads) — or, when its training run already stores an evaluation with the same
    sweep, instrument and evaluation code, that one. Two workers evaluating the same training run
    take turns (the evaluation key's lock), so the second reuses what the first stored."""
    key = runs.eval_key(cfg.eval, _instrument_name(tagger), trained.run_id, asdict(options))
    if not trained.run_id:
        return _evaluate(cfg, trained, data, tagger, ws, parent, force, progress, options, key)
    with run_lock(ws.work, f"eval-{key}"):
        return _evaluate(cfg, trained, data, tagger, ws, parent, force, progress, options, key)


def _evaluate(cfg: AblationConfig, trained: TrainedVariant, data: PreparedData, tagger: TaggerRef | None,
              ws: Workspace, parent: Tracker | None, force: bool, progress: bool, options: ModelOptions, key: str) -> Record:
    if trained.run_id and not force:
        stored = _stored(cfg, trained, ws, key)
        if stored is not None:
            if parent is not None:
                parent.set_tags({f"nai3.reused_eval.{trained.variant}": trained.run_id})
            log.info("reused the evaluation of %s (training run %s)", trained.variant, trained.run_id)
            return stored
    inst = instruments(cfg, data, tagger)
    ck = load_model(trained.checkpoint, options.prediction, options.ztsnr, options.resolution,
                    model_config=options.model_config)
    log.info("evaluating %s as %s%s (from %s)", trained.variant, ck.variant.prediction,
             " + ZTSNR" if ck.variant.ztsnr else "", ck.source)
    weights = Path(trained.checkpoint) / "ema.safetensors"
    identity = [str(Path(trained.checkpoint).resolve())] + ([weights.stat().st_size, weights.stat().st_mtime_ns]
                                                            if weights.is_file() else [])
    cache = PointCache(ws.work / "evals" / f"{trained.variant}-{stable_hash([key, identity])[:12]}")
    done = Record() if force else cache.load().relabel(trained.variant, cfg.train.seed)
    n_done = sum(len(done.settings(r, "sweep")) for r in done.runs.values())
    if n_done:
        log.info("resuming the evaluation of %s: %d point(s) already measured", trained.variant, n_done)
        if parent is not None:
            parent.set_tags({f"nai3.resumed_eval_points.{trained.variant}": n_done})
    sinks = [cache, GridSink(ws.work / "results" / "grids")]
    if parent is not None:
        v = ck.variant
        sinks.append(MLflowPointSink(parent, ws.experiment_id, v.config_hash(), inst.vocab,
                                     ws.work / "results" / "points" / parent.run_id[:12],
                                     {"prediction": v.prediction, "ztsnr": v.ztsnr, "sigma_max": v.top_sigma,
                                      "seed": cfg.train.seed}, evaluation_tags()))
    if parent is not None:
        parent.set_tags({f"nai3.parameterization.{trained.variant}": parameterization_text(ck.variant, ck.source)})
    apply_threads(cfg.train.threads)
    prompts = [list(p) for p in options.prompts] if options.prompts else (
        read_prompt_file(locate(cfg.eval.prompt_file, "eval.prompt_file")) if cfg.eval.prompt_file else None)
    ck.variant = ck.variant.model_copy(update={"name": trained.variant})
    t0 = time.perf_counter()
    result = evaluate_variant(ck, cfg.eval, inst, on_point=lambda r, p, s: [sink(r, p, s) for sink in sinks],
                              progress=progress, prompts=prompts, done=done, seed=cfg.train.seed)
    if trained.run_id:
        on_run = parent.routed(trained.run_id) if parent is not None else Tracker(ws.uri, trained.run_id)
        runs.store_evaluation(on_run, key, result)
        on_run.log_metrics({COST_EVAL: time.perf_counter() - t0})  # the cost of a seed (flows/cost.py)
        on_run.set_tags({EVAL_THREADS_TAG: str(torch_threads_in_use())})
    return result


def evaluation_tags() -> dict[str, str]:
    """What every evaluation run records about the code and libraries that measured it."""
    return {"nai3.eval_identity": runs.evaluation_identity().digest, **version_tags()}


def stored_result(cfg: AblationConfig, trained: TrainedVariant, tagger: TaggerRef | None, ws: Workspace,
                  options: ModelOptions = ModelOptions()) -> Record | None:
    """The evaluation ``evaluate`` stored on ``trained``'s run for this sweep, if there is one."""
    return _stored(cfg, trained, ws, runs.eval_key(cfg.eval, _instrument_name(tagger), trained.run_id, asdict(options)))


def _stored(cfg: AblationConfig, trained: TrainedVariant, ws: Workspace, key: str) -> Record | None:
    try:
        stored = runs.stored_evaluation(ws.uri, trained.run_id, key, ws.work / "downloaded")
    except Exception as e:
        if not transient(e):
            raise
        log.warning("MLflow at %s does not answer (%s): %s is evaluated (again) without looking for a stored "
                    "evaluation; its finished points come from the work folder", redact(ws.uri), str(e)[:200],
                    trained.variant)
        return None
    return stored.relabel(trained.variant, cfg.train.seed) if stored is not None else None


COST_EVAL = "cost/eval_seconds"  # on the training run: wall seconds of its latest evaluation
EVAL_THREADS_TAG = "nai3.eval_threads"


@dataclass
class ReportOutput:
    table: str
    claims: ClaimsOutcome
    folder: Path
    restarts: tuple[str, ...] = ()  # "K restarts for <arm>: …" after a change of training identity
    seconds: float = float("nan")  # the report's own wall time (flows/cost.py)

    @property
    def summary(self) -> list[str]:
        return summary_lines(self.claims) + list(self.restarts)


def report(cfg: AblationConfig, results: list[Record], trained: list[TrainedVariant], data: PreparedData | None,
           ws: Workspace, parent: Tracker | None = None, out: Path | None = None) -> ReportOutput:
    """Results table, claims report (Markdown, HTML, plots), and results.json — on the parent run.
    ``data``: the training data, for the checks of it; ``None`` for a model nai3 did not train (the
    checks of training data are left out). The report shows the sample grids of its own runs only."""
    from nai3train.data.card import claim_measurements

    out = out or ws.work / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = Record()
    for r in results:
        record.merge(r)
    table = format_table(record)
    extra = None
    if data is not None:
        train_scan, heldout_scan = scan_folder(data.train, data.scan_cache), scan_folder(data.eval, data.scan_cache)
        extra = claim_measurements(train_scan, cfg.data.resolution, heldout_scan)
        extra["normalisation"].update(heldout.measure(train_scan, heldout_scan))  # C8's sampling error
    recipes = runs.ledger_recipes(cfg, data.content_hash) if data is not None else {}
    context = {"config": cfg.name, "config_hash": runs.decider_hash(cfg), "recipes": recipes}  # the ledger's identity
    atomic_write(out / "results.json", json.dumps({"record": record.to_dict(), "training": [asdict(t) for t in trained],
                                                  "claims_context": context, **(extra or {})}, default=str))
    atomic_write(out / "results.md", "# nai3 ablation results\n\n```\n" + points_table(record).text() + "\n```\n")
    names = {grid_name(r, s) for r in record.runs.values() for s in record.settings(r)}  # this record's points only
    grids = {p.stem: p for p in sorted((ws.work / "results" / "grids").glob("*.png")) if p.stem in names}

    run_id = parent.run_id if parent is not None else ""
    experiment = parent if parent is not None else Tracker(ws.uri, "")
    seeds = _provenance(cfg, data, ws)
    state = claims_state(ws, experiment)

    def decide(spec, ledger):
        claims, folder = write_report(record, out / "report", extra, grids, spec=spec, ledger=ledger, run_id=run_id,
                                      config=cfg.name, provenance=seeds, config_hash=context["config_hash"],
                                      recipes=recipes)
        return (claims, folder), claims.new_ledger_entries(run_id)

    claims, folder = state.decide(decide, record=data is not None)  # a researcher's model: no ledger
    experiment.set_experiment_tags(ws.experiment_id, {**comparison_view_tags(), **claims_view_tags(
        [(c.id, c.role) for c in claims.spec.claims if c.role != "check" and not c.parts])})
    for g in grids.values():
        atomic_write(folder / g.name, g.read_bytes())
    if parent is not None:
        parent.log_artifact(out / "results.json", "results")
        parent.log_artifact(out / "results.md", "results")
        parent.log_artifact(folder, "report")
        if seeds is not None:
            parent.set_tags(seeds.tags())
            parent.log_json(seeds.to_dict(), "identities.json")
        parent.set_tags({"nai3.claims_spec_sha256": claims.spec.sha256, "nai3.claims_spec_version": claims.spec.version,
                         **{f"nai3.claim.{c.id}": c.verdict for c in [*claims.claims, *claims.checks]}})
        for k, metrics in claims.metrics_by_seeds().items():
            parent.log_metrics(metrics, step=k)
        parent.log_table([claim_row(c, claims.spec.alpha) for c in [*claims.claims, *claims.checks]],
                         "report/claims_table.json")
        _claims_run(ws, cfg.name, folder / "report.json", run_id)
    return ReportOutput(table + frontends_text(record, claims.spec), claims, folder,
                        tuple(seeds.restarts()) if seeds is not None else ())


def _claims_run(ws: Workspace, config: str, report_json: Path, parent_run_id: str) -> None:
    """The night's looks on the config's claims run (``flows/claims_run.py``); an MLflow that does
    not answer costs that night's points on the chart, never the night."""
    from . import claims_run

    try:
        claims_run.record_night(ws.uri, ws.experiment_id, config, json.loads(report_json.read_text())["claims"],
                                parent_run_id)
    except Exception as e:  # after the ledger is written: a chart's failure must not fail the night
        log.warning("tonight's looks are not on the claims run's chart (%s: %s)", type(e).__name__, str(e)[:200])


def _provenance(cfg: AblationConfig, data: PreparedData | None, ws: Workspace):
    """The seeds of each arm under each training identity (``runs.provenance``); ``None`` for a model
    nai3 did not train, or while MLflow does not answer (the report then goes without the section)."""
    if data is None:
        return None
    try:
        return runs.provenance(ws.uri, ws.experiment_id, cfg, data.content_hash, runs.training_identity(),
                               ws.work / "downloaded" / "identities")
    except Exception as e:
        if not transient(e):
            raise
        log.warning("MLflow does not answer (%s): the report goes without the seeds by identity", str(e)[:200])
        return None


def read_results(path: str | Path) -> tuple[Record, dict]:
    """A results.json written by ``report``: the measurement record and the data measurements."""
    res = json.loads(Path(path).read_text())
    if "record" not in res:
        raise ValueError(f"{path} was written by an older nai3 (no measurement record): evaluate again")
    return Record.from_dict(res["record"]), res
