"""Evaluate a checkpoint over a sweep of (CFG scale × starting σ) with common random numbers.

``run_sweep`` is pure: it samples each point through ``generate``, hands the samples to the metric
objects and puts what they compute into the measurement record; it writes nothing. Whatever should
happen to a point's images (MLflow child runs, grids, the resume cache) is a sink the caller passes
as ``on_point``. σ are in SDXL units throughout; the checkpoint's schedule maps them to model units.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

from nai3train.ops.progress import progress as progress_bar

from nai3train.config import EvalConfig

from .checkpoint import LoadedCheckpoint
from .metrics import Output, PointMetric, Samples
from .prompts import PromptSet
from .record import Record, Run
from .sampling import first_sigma, generate
from .setting import Setting

SWEEP_OUTPUTS = (Output("first_sigma", "σ, SDXL units: the first σ sampled (∞: the exact ∞)"),
                 Output("seconds", "wall seconds to sample and measure the point"))
"""What ``run_sweep`` records with every point beside the metrics' outputs."""

PointSink = Callable[[Record, Setting, Samples], None]
"""Called with a record holding one finished point (its run and measurements), the point and its samples."""


def sweep_points(ec: EvalConfig, top_sigma: float = math.inf) -> list[Setting]:
    """CFG × starting σ; a start of +∞ only where the variant was trained on σ = ∞ (ZTSNR).

    Finite starts above the trained maximum are kept: an extrapolation, flagged as such per point."""
    return [Setting("sweep", s, c, sampler=ec.sampler, schedule=ec.schedule, steps=ec.steps, cfg_rescale=ec.cfg_rescale)
            for s in ec.first_sigmas if not (math.isinf(s) and math.isfinite(top_sigma)) for c in ec.cfg_scales]


def measure_point(metrics: Sequence[PointMetric], samples: Samples) -> dict:
    """Every metric's declared outputs for one point's samples."""
    out: dict = {}
    for metric in metrics:
        metric.reset()
        metric.update(samples)
        out.update(metric.compute())
    return out


def run_sweep(ck: LoadedCheckpoint, run: Run, points: Sequence[Setting], ps: PromptSet,
              metrics: Sequence[PointMetric], seed: int = 0, on_point: PointSink | None = None,
              progress: bool = True, batch: int = 64) -> Record:
    """Sample each point and measure it with every metric; no I/O (``on_point`` may do some)."""
    n_batches = math.ceil(len(ps) / batch)
    bar = progress_bar(total=sum(p.steps for p in points) * n_batches, desc=f"eval {ck.name}", enabled=progress)
    record = Record()
    record.add_run(run)
    try:
        for point in points:
            t0 = time.perf_counter()
            samples = generate(ck, point, ps, batch=batch, seed=seed, on_step=lambda: bar.update(1))
            values = measure_point(metrics, samples)
            values["seconds"] = time.perf_counter() - t0
            values["first_sigma"] = first_sigma(ck.denoiser.schedule, point)  # as sampled, beside the asked start
            one = Record()
            one.add_run(run)
            one.put_all(run, point, values)
            if on_point is not None:  # before the merge: what a sink adds to the point is kept with it
                on_point(one, point, samples)
            record.merge(one)
    finally:
        bar.close()
    return record
