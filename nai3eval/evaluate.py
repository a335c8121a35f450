"""One checkpoint's whole evaluation: the sweep and the probes on a shared prompt set.

The instruments (tagger metrics, brightness references, real-data metrics) are built once per
evaluation run and shared by every variant, so the reference set is featurised once and every
variant is measured by the same instrument.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nai3train.config import EvalConfig, to_dict

from .counting import BenchmarkCounter, Counter, WD14Counter
from .metrics import (RARE_BELOW, Brightness, ExactScorer, MeanLeak, PointMetric, RealDataMetrics, RealImages, TaggerMetrics,
                      image_brightness, real_batches)
from .probes import run_probes
from .prompts import make_prompt_set
from .results import PointResult, VariantResult
from .sweep import LoadedCheckpoint, PointSink, run_sweep, sweep_points
from .tagger import Tagger


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
    rare_tags: frozenset[str] = frozenset()  # tags on < 5 % of the training images (eval.rare_prompts draws them)
    counter: Counter | None = None  # C4's object counter: the exact scorer (benchmark) or a WD14 tagger
    count_scales: tuple[float, ...] = (2.0,)  # canvas scales of the count probe


def build_instruments(ec: EvalConfig, real_images: RealImages, real_tags: list[list[str]], tagger: Tagger | None,
                      tagger_vocab: list[str], tag_frequency: dict[str, float] | None = None,
                      exact_scorer: bool = False, tagger_accuracy: dict[str, float] | None = None) -> Instruments:
    """``real_images``: the reference set, a tensor or a batch stream (``FolderDataset.batches``:
    each instrument reads it once, a batch at a time). ``exact_scorer``: the data is the embedded
    benchmark, so adherence can be read off the pixels (the primary adherence and counting
    instrument there). Each instrument's accuracy on the held-out real images travels with every
    result it measures."""
    metrics: list[PointMetric] = [ExactScorer(tag_frequency)] if exact_scorer else []
    accuracy = {"exact scorer": ExactScorer.accuracy(torch.cat(list(real_batches(real_images))), real_tags)
                } if exact_scorer else {}
    if tagger is not None:
        metrics.append(TaggerMetrics(tagger, tagger_vocab, real_images, tag_frequency))
        if tagger_accuracy:
            accuracy["domain tagger"] = dict(tagger_accuracy)
    brightness = image_brightness(real_images)
    metrics += [MeanLeak(), Brightness(brightness, real_tags)]
    real = RealDataMetrics(real_images, ec.inception_weights, ec.clip_path, ec.wd14_model, ec.wd14_tags)
    if real.active:
        metrics.append(real)
    rare = frozenset(t for t, f in (tag_frequency or {}).items() if f < RARE_BELOW)
    # C4 on the benchmark at 2× (the demo's budget); on a real model through WD14's count tags at 1.5× and 2×
    counter, scales = ((BenchmarkCounter(), (2.0,)) if exact_scorer else
                       (WD14Counter(real.wd14), (1.5, 2.0)) if real.wd14 is not None else (None, (2.0,)))
    return Instruments(brightness, real_tags, metrics, list(tagger_vocab), list(real.problems), accuracy, rare,
                       counter, scales)


def evaluate_variant(ck: LoadedCheckpoint, ec: EvalConfig, instruments: Instruments, on_point: PointSink | None = None,
                     progress: bool = True, prompts: list[list[str]] | None = None,
                     done: dict[str, PointResult] | None = None) -> VariantResult:
    """The CFG × σ sweep and the pure-noise probes for one checkpoint, on prompts drawn from the
    reference set's tags — or from ``prompts`` (a user's prompt file) when given. Points in ``done``
    (by name: measured before an interrupted run) are taken as they are, not sampled again."""
    ps = make_prompt_set(prompts or instruments.real_tags, ec.prompts, ec.seeds_per_prompt, ck.sample_shape,
                         ec.seed, instruments.rare_tags, ec.rare_prompts)
    points = sweep_points(ec, ck.variant.top_sigma)
    done = done or {}
    fresh = run_sweep(ck, [p for p in points if p.name not in done], ps, instruments.metrics, seed=ec.seed,
                      on_point=on_point, progress=progress)
    by_name = {**done, **{r.name: r for r in fresh}}
    results = [by_name[p.name] for p in points]
    probes = run_probes(ck, ps, instruments.real_brightness, instruments.real_tags, ec.cfg_scales, ec.steps, ec.sampler,
                        ec.schedule, starts=tuple(p.first_sigma for p in points),
                        counter=instruments.counter, seed=ec.seed, count_scales=instruments.count_scales)
    return VariantResult(variant=ck.name, variant_config=to_dict(ck.variant), prompts=ps.prompts,
                         prompt_index=ps.prompt_index.tolist(), points=results, probes=probes,
                         problems=list(instruments.problems), instruments=dict(instruments.accuracy))
