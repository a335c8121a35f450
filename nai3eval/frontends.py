"""A model as each front-end samples it: the sweep's prompts and noise on every preset's own σ list.

The σ lists are ``nai3train.diffusion.frontends``'; here each preset becomes a point of kind
``frontend`` (its ``start`` is the first σ that preset samples, SDXL units), sampled and measured by
the sweep's own path and metrics, at the swept CFG nearest 5 (the paper's recommendation) and the
sweep's sampler and steps. Each preset's images are then compared, image by image, with the ``nai``
preset's (the same prompts and noise): C9's ratio r — the RMS distance to the ``nai`` start over
the distance between same-prompt samples from independent noise — says how far a front-end moves
the picture, on the scale of what "another picture" means for this model and prompt.
"""
from __future__ import annotations

from typing import Sequence

import torch

from nai3train.config import EvalConfig
from nai3train.diffusion import Schedule
from nai3train.diffusion.frontends import FRONTENDS

from .checkpoint import LoadedCheckpoint
from .metrics import Output, PointMetric, Samples
from .pixels import to_unit
from .probes import rms_distance, same_prompt_distance
from .prompts import PromptSet
from .record import Record, Run
from .sampling import first_sigma
from .setting import Setting
from .sweep import PointSink, run_sweep

REFERENCE = "nai"  # the native ZTSNR start every other preset is compared with (C9's 20000)

FRONTEND_OUTPUTS = (
    Output("frontend_distance", "RMS pixel distance to the nai preset's image", per_image=True),
    Output("frontend_distance_mean", "RMS pixel distance to the nai preset's image"),
    Output("frontend_r", "ratio of distances (C9's r)", better="lower"))
"""What the front-end points record beside the metrics' outputs."""


def frontend_points(ec: EvalConfig, schedule: Schedule) -> list[Setting]:
    """One point per preset of ``eval.frontends`` (``nai`` added first: the others' reference), at the
    CFG nearest 5, its start the first σ the preset samples for this model."""
    if not ec.frontends:
        return []
    cfg = min(ec.cfg_scales, key=lambda c: abs(c - 5.0))
    names = [REFERENCE, *(n for n in ec.frontends if n != REFERENCE)]
    out = []
    for name in names:
        p = Setting("frontend", 0.0, cfg, sampler=ec.sampler, steps=ec.steps, cfg_rescale=ec.cfg_rescale,
                    schedule=FRONTENDS[name].spacing, frontend=name)
        out.append(p.at(start=first_sigma(schedule, p)))
    return out


def run_frontends(ck: LoadedCheckpoint, run: Run, points: Sequence[Setting], ps: PromptSet,
                  metrics: Sequence[PointMetric], seed: int = 0, on_point: PointSink | None = None,
                  progress: bool = True) -> Record:
    """Sample and measure each front-end point (``run_sweep``), then each one's distance to the
    ``nai`` preset's images. Only the reference's images are kept (as shown, in half precision), so
    the memory is one point's, whatever the number of presets."""
    reference: list[torch.Tensor] = []  # the nai preset's images, as shown
    r_scale: list[float] = []

    def keep(one: Record, p: Setting, samples: Samples) -> None:
        img = to_unit(samples.images).half()
        if p.frontend == REFERENCE:
            reference.append(img)
            r_scale.extend(same_prompt_distance(img.float(), ps))
            one.put_all(run, p, {"frontend_distance_mean": 0.0, "frontend_r": 0.0})
        else:
            d = rms_distance(img, reference[0])
            scale = sum(r_scale) / len(r_scale) if r_scale else float("nan")
            one.put(run, p, "frontend_distance", d.tolist())
            one.put_all(run, p, {"frontend_distance_mean": float(d.mean()),
                                 "frontend_r": float(d.mean()) / scale if scale else float("nan")})
        if on_point is not None:
            on_point(one, p, samples)

    return run_sweep(ck, run, points, ps, metrics, seed=seed, on_point=keep, progress=progress)
