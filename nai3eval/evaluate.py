"""One checkpoint's whole evaluation: the sweep and the probes on a shared prompt set, as a record.

The instruments (every point metric, the brightness references, the object counter) are built once
per evaluation run and shared by every variant, so the reference set is featurised once and every
variant is measured by the same instrument.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nai3train.config import EvalConfig

from .checkpoint import LoadedCheckpoint
from .counting import BenchmarkCounter, Counter, WD14Counter
from .frontends import frontend_points, run_frontends
from .metrics import InstrumentContext, InstrumentSettings, PointMetric, metric_classes
from .metrics.adherence import RARE_BELOW
from .metrics.pretrained import RealDataMetrics
from .pixels import RealImages, image_brightness
from .probes import ProbeContext, background_reference, run_probes
from .prompts import make_prompt_set
from .record import Record, Run
from .setting import Setting
from .sweep import PointSink, run_sweep, sweep_points


@dataclass
class Instruments:
    """What the reference set contributes (its tags, each image's brightness — never its pixels) and
    the metric objects that measure every point of every variant."""

    real_brightness: torch.Tensor  # per reference image, mean pixel in [0, 1]: the C2 references
    real_tags: list[list[str]]
    metrics: list[PointMetric]
    vocab: list[str] = field(default_factory=list)  # the tag names the tagger's predictions index
    problems: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # per instrument, on held-out real images
    disturbance: dict[str, dict] = field(default_factory=dict)  # per set-level instrument, its disturbance test
    rare_tags: frozenset[str] = frozenset()  # tags on < 5 % of the training images (eval.rare_prompts draws them)
    counter: Counter | None = None  # C4's object counter: the exact scorer (benchmark) or a WD14 tagger
    count_scales: tuple[float, ...] = (2.0,)  # canvas scales of the count probe


def build_instruments(settings: InstrumentSettings, real_images: RealImages, real_tags: list[list[str]], tagger,
                      tagger_vocab: list[str], tag_frequency: dict[str, float] | None = None,
                      exact_scorer: bool = False, tagger_accuracy: dict[str, float] | None = None,
                      cache_dir: str | None = None) -> Instruments:
    """Every registered metric that has something to measure with. ``settings``: the real-data
    metrics' local weights (``InstrumentSettings.of(cfg.eval)``). ``real_images``: the reference
    set, a tensor or a batch stream (each instrument reads it once, a batch at a time).
    ``exact_scorer``: the data is the embedded benchmark, so adherence can be read off the pixels
    (the primary adherence and counting instrument there). Each instrument's accuracy on the
    held-out real images travels with every result it measures. ``cache_dir``: where an instrument
    may keep what it computed from the reference set for the other processes of a run."""
    ctx = InstrumentContext(settings, real_images, real_tags, image_brightness(real_images), tagger, list(tagger_vocab),
                            tag_frequency, exact_scorer, tagger_accuracy, cache_dir=cache_dir)
    metrics = [m for cls in metric_classes() if (m := cls.build(ctx)) is not None]
    real = next((m for m in metrics if isinstance(m, RealDataMetrics)), None)
    rare = frozenset(t for t, f in (tag_frequency or {}).items() if f < RARE_BELOW)
    # C4 on the benchmark at 2× (the demo's budget); on a real model through WD14's count tags at 1.5× and 2×
    counter, scales = ((BenchmarkCounter(), (2.0,)) if exact_scorer else
                       (WD14Counter(real.wd14), (1.5, 2.0)) if real is not None and real.wd14 is not None else
                       (None, (2.0,)))
    return Instruments(ctx.real_brightness, real_tags, metrics, list(tagger_vocab), ctx.problems, ctx.accuracy,
                       ctx.disturbance, rare, counter, scales)


def evaluate_variant(ck: LoadedCheckpoint, ec: EvalConfig, instruments: Instruments, on_point: PointSink | None = None,
                     progress: bool = True, prompts: list[list[str]] | None = None, done: Record | None = None,
                     seed: int = 0) -> Record:
    """The CFG × σ sweep, the front-end presets (``eval.frontends``) and the pure-noise probes for one checkpoint (training seed ``seed``), on
    prompts drawn from the reference set's tags — or from ``prompts`` (a user's prompt file). Points
    measured in ``done`` (before an interrupted run) are taken as they are, not sampled again."""
    if not prompts and not any(instruments.real_tags):
        raise ValueError("no prompts: the reference images carry no tags (.txt sidecars or metadata.jsonl) to draw "
                         "prompts from; give a prompt file (nai3 eval --prompts FILE, or eval.prompt_file)")
    ps = make_prompt_set(prompts or instruments.real_tags, ec.prompts, ec.seeds_per_prompt, ck.sample_shape,
                         ec.seed, instruments.rare_tags, ec.rare_prompts)
    run = Run(ck.variant, seed, ps.prompts, ps.prompt_index.tolist(), list(instruments.problems),
              dict(instruments.accuracy), source=ck.source, disturbance=dict(instruments.disturbance))
    points = sweep_points(ec, ck.variant.top_sigma)
    record = Record()
    record.add_run(run)
    old = next(iter(done.runs.values()), None) if done is not None else None
    measured = set(done.settings(old, "sweep")) & set(points) if old is not None else set()
    for p in measured:
        for m, v in done.metrics_at(old, p).items():
            record.values[(run.key, p, m)] = v
    record.merge(run_sweep(ck, run, [p for p in points if p not in measured], ps, instruments.metrics, seed=ec.seed,
                           on_point=on_point, progress=progress))
    fronts = frontend_points(ec, ck.denoiser.schedule)  # sampled afresh on a resume: their r needs nai's images
    if fronts:
        record.merge(run_frontends(ck, run, fronts, ps, instruments.metrics, seed=ec.seed, on_point=on_point,
                                   progress=progress))
    cfg = min(ec.cfg_scales, key=lambda c: abs(c - 5.0))
    template = Setting("sweep", 0.0, cfg, sampler=ec.sampler, schedule=ec.schedule, steps=ec.steps)
    reference = background_reference(ps.per_image, instruments.real_brightness, instruments.real_tags)
    record.merge(run_probes(ProbeContext(ck, run, ps, reference, template, tuple(p.start for p in points),
                                         instruments.counter, instruments.count_scales, ec.seed, progress)))
    return record
