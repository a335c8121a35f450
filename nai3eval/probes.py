"""Pure-noise probes: the paper's core claims measured directly on the denoiser and sampler, each a
kind of ``Setting`` whose measurements go into the record beside the sweep's.

* x0 at infinity (C1, kind ``x0``): D(ε, σ) at σ = ∞ and at the practical 20000 against the data
  mean for the prompt — each image's brightness against the real images with the same background.
  v-prediction has a finite exact limit; ε-prediction returns ∞·(ε − F): its non-finite fraction
  and magnitude are measured, never raised.
* Practical infinity (C9, kind ``practical_infinity``): samples from 20000, ∞, 317, 136 and 56 on
  the same unit noise; each image's RMS distance to its 20000 sample, and the scale: the distance
  between samples of the same prompt from independent noise.
* Count on a larger canvas (C4, kind ``count``): objects counted off the pixels of samples on a
  1.5× or 2× canvas from 14.6 and 20000 (the canvas's own σ table), and from 14.6 on the native
  table (the naive start) — a wrong count is the incoherence the paper's σ_max fixes.
* Mean leak (C3, kind ``mean_leak``): a designed probe — per prompt, noise whose mean is set to
  {−2, −1, 0, 1, 2}/√D — sampled from the highest start the variant was trained for.
Every sampled probe goes through ``generate``, at the swept CFG nearest 5 (the paper's recommendation).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from nai3train.diffusion.samplers import initial_state
from nai3train.ops.progress import progress as progress_bar

from .checkpoint import LoadedCheckpoint
from .counting import Counter, wrong_counts
from .metrics import Output
from .pixels import finite_images, to_unit
from .prompts import PromptSet
from .record import Record, Run
from .sampling import generate
from .setting import Setting

PROBE_OUTPUTS = (
    Output("nonfinite_frac", "fraction of images", better="lower"),  # x0
    Output("max_abs", "model pixel units"),  # x0
    Output("brightness_err_mean", "brightness on [0, 1]", better="lower"),  # x0
    Output("brightness_err", "brightness on [0, 1]", per_image=True, better="lower"),  # x0
    Output("level", "noise mean × √D", per_image=True),  # mean_leak
    Output("noise_mean", "noise mean (unit noise)", per_image=True),  # mean_leak
    Output("out_mean", "model pixel units", per_image=True),  # mean_leak
    Output("distance", "RMS pixel distance to the reference start", per_image=True),  # practical_infinity
    Output("distance_mean", "RMS pixel distance to the reference start"),  # practical_infinity
    Output("reference_start", "σ, SDXL units"),  # practical_infinity
    Output("same_prompt_distance", "RMS pixel distance", per_image=True),  # practical_infinity, reference start
    Output("wrong_count", "1 wrong, 0 right, NaN no count", per_image=True, better="lower"),  # count
    Output("height", "pixels"), Output("width", "pixels"))  # count
"""What the probes record, declared as the metrics declare theirs (the claims may read these names)."""

PRACTICAL_STARTS = (20000.0, math.inf, 317.0, 136.0, 56.0)  # the reference first
COUNT_STARTS = (14.6, 20000.0)
LEAK_LEVELS = (-2.0, -1.0, 0.0, 1.0, 2.0)


@dataclass
class ProbeContext:
    """What every probe of one checkpoint shares: the model, the prompt set, the per-image
    reference brightness, the sampling settings (``template``: CFG nearest 5), the swept starts."""

    ck: LoadedCheckpoint
    run: Run
    ps: PromptSet
    reference: torch.Tensor  # per image of ``ps``, the real brightness of its background
    template: Setting
    starts: tuple[float, ...]
    counter: Counter | None = None
    count_scales: tuple[float, ...] = (2.0,)
    seed: int = 0
    progress: bool = True


def background_reference(prompts: list[list[str]], real_brightness: torch.Tensor, real_tags: list[list[str]]
                         ) -> torch.Tensor:
    """Per prompt, the mean brightness in [0, 1] of real images with the same background tag
    (``real_brightness``: each real image's, ``pixels.image_brightness``)."""
    out = []
    for p in prompts:
        bg = next((t for t in p if t.endswith("_background")), None)
        sel = torch.tensor([bg in t for t in real_tags]) if bg else torch.zeros(len(real_tags), dtype=torch.bool)
        out.append(float(real_brightness[sel].mean()) if sel.any() else float(real_brightness.mean()))
    return torch.tensor(out)


@torch.no_grad()
def x0_probe(c: ProbeContext, record: Record, sigma_sdxl: float) -> None:
    """Brightness error of D(ε, σ) per image against the reference of its background."""
    ck, ps = c.ck, c.ps
    sigma = ck.denoiser.schedule.to_model(sigma_sdxl)
    cond, _ = ck.conditioning(ps, slice(None))
    x = initial_state(ps.noise.to(ck.bundle.device), sigma)
    d = ck.bundle.to_pixels(ck.denoiser(x, sigma, cond)).float().cpu()
    finite = finite_images(d)
    mean = torch.where(finite, ((d.flatten(1) + 1) / 2).mean(1), torch.full((len(d),), math.nan))
    err = (mean - c.reference).abs()
    record.put_all(c.run, Setting("x0", sigma_sdxl), {
        "nonfinite_frac": float((~finite).float().mean()),
        "max_abs": float(torch.nan_to_num(d.abs(), nan=math.inf).max()),
        "brightness_err_mean": float(err[finite].mean()) if finite.any() else math.nan,
        "brightness_err": err.tolist()})


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, the RMS distance of two image sets in [0, 1] (as shown): C9's distance."""
    return (a.float() - b.float()).flatten(1).pow(2).mean(1).sqrt()


def same_prompt_distance(images: torch.Tensor, ps: PromptSet) -> list[float]:
    """Per image, the mean RMS distance to the other images of its prompt (independent noise): what
    "different" means for this model and prompt, the scale that makes C9's distances comparable."""
    flat = images.flatten(1)
    pid = ps.prompt_index
    out = []
    for i in range(len(flat)):
        others = torch.nonzero((pid == pid[i]) & (torch.arange(len(pid)) != i)).flatten()
        if len(others) == 0:
            return []
        out.append(float((flat[others] - flat[i]).pow(2).mean(1).sqrt().mean()))
    return out


@torch.no_grad()
def practical_infinity(c: ProbeContext, record: Record, starts: tuple[float, ...] = PRACTICAL_STARTS) -> None:
    """Claim C9: per-image RMS distance between samples started at ``starts[0]`` and at each other
    start, from the same noise and sampler — on two images per prompt, which also give the scale
    (their distance to each other, recorded at the reference start)."""
    ps = c.ps
    keep = torch.cat([torch.nonzero(ps.prompt_index == p).flatten()[:2] for p in range(len(ps.prompts))])
    ps = PromptSet(ps.prompts, ps.prompt_index[keep], ps.noise[keep])  # two per prompt: d and its scale d_ref
    pid = ps.prompt_index.tolist()
    at = {s: c.template.at(kind="practical_infinity", start=s) for s in starts}
    outs = {s: to_unit(generate(c.ck, at[s], ps, seed=0).images) for s in starts}
    ref = outs[starts[0]]
    scale = same_prompt_distance(ref, ps)
    if scale:
        record.put(c.run, at[starts[0]], "same_prompt_distance", scale, pid)
    for s in starts[1:]:
        d = rms_distance(outs[s], ref)
        record.put(c.run, at[s], "distance", d.tolist(), pid)
        record.put_all(c.run, at[s], {"distance_mean": float(d.mean()), "reference_start": starts[0]})


@torch.no_grad()
def mean_leak_probe(c: ProbeContext, record: Record, start: float, levels: tuple[float, ...] = LEAK_LEVELS) -> None:
    """Claim C3's designed probe: each prompt's first noise with its mean removed, then set to
    level/√D for every level; sampled at (CFG, ``start``). Exact balance across prompts and a
    dose-response, with a regressor (the unit noise mean) of the same unit at every start."""
    ps = c.ps
    first = [int(torch.nonzero(ps.prompt_index == p)[0]) for p in range(len(ps.prompts))]
    base = ps.noise[first]
    dim = base[0].numel()
    centred = base - base.flatten(1).mean(1).view(-1, *([1] * (base.dim() - 1)))
    noise = torch.cat([centred + lv / math.sqrt(dim) for lv in levels])
    index = torch.arange(len(first)).repeat(len(levels))
    setting = c.template.at(kind="mean_leak", start=start)
    images = generate(c.ck, setting, PromptSet(ps.prompts, index, noise)).images
    level = [lv for lv in levels for _ in first]
    pid = index.tolist()
    record.put(c.run, setting, "level", level, pid)
    record.put(c.run, setting, "noise_mean", [lv / math.sqrt(dim) for lv in level], pid)
    record.put(c.run, setting, "out_mean", images.flatten(1).mean(1).tolist(), pid)


def canvas(ck: LoadedCheckpoint, scale: float) -> tuple[int, int]:
    """``scale``× the native side, rounded to a size the model can sample."""
    m = ck.bundle.size_multiple
    return tuple(max(m, round(scale * side / m) * m) for side in ck.image_size)


@torch.no_grad()
def count_probe(c: ProbeContext, record: Record, scale: float = 2.0, starts: tuple[float, ...] = COUNT_STARTS) -> None:
    """Claim C4: one image per prompt sampled at ``scale``× the native side (its own dimension
    scale) from each start on the same fresh noise (drawn from the evaluation seed: shared by the
    arms of a replicate), objects counted by the counter against the prompt's number. Also from
    the lowest start with the native σ table unchanged (``rescaled=False``): the naive baseline,
    SDXL's 14.6 on a larger canvas without the dimension rescale."""
    size = canvas(c.ck, scale)
    big = c.ck.at_size(size)
    gen = torch.Generator().manual_seed(c.seed + 7919)
    index = torch.arange(len(c.ps.prompts))  # one image per prompt: the canvas costs scale² of the sweep's
    wide = PromptSet(c.ps.prompts, index, torch.randn((len(index), *big.sample_shape), generator=gen))
    runs = [(big, c.template.at(kind="count", start=s, canvas=scale)) for s in starts]
    runs.append((c.ck.at_size(size, rescaled=False), c.template.at(kind="count", start=min(starts), canvas=scale,
                                                                    rescaled=False)))
    for ck, setting in runs:
        wrong = wrong_counts(c.counter, wide.per_image, generate(ck, setting, wide).images)
        record.put(c.run, setting, "wrong_count", wrong, index.tolist())
        record.put_all(c.run, setting, {"height": big.image_size[0], "width": big.image_size[1]})


def run_probes(c: ProbeContext) -> Record:
    """Both x̂0 probes for every checkpoint; the designed mean-leak probe from the highest swept start
    the variant was trained for (14.6 without ZTSNR, the top start with it: C3 compares exactly
    these); for ZTSNR variants the practical-infinity probe and, with a counter (the exact scorer
    on the benchmark, a WD14 tagger for anime models), the count probe at each canvas scale."""
    record = Record()
    record.add_run(c.run)
    probes: list[Callable[[], None]] = [lambda: x0_probe(c, record, math.inf), lambda: x0_probe(c, record, 20000.0)]
    top = c.ck.variant.top_sigma
    trained = [s for s in c.starts if s <= top * 1.001]  # the starts this variant was trained to begin from
    if trained:
        probes.append(lambda: mean_leak_probe(c, record, max(trained)))
    if math.isinf(top):
        probes.append(lambda: practical_infinity(c, record))
        if c.counter is not None:
            c.run.counter = c.counter.name
            probes += [functools.partial(count_probe, c, record, scale) for scale in c.count_scales]
    for probe in progress_bar(probes, desc=f"probes {c.run.name}", enabled=c.progress):
        probe()
    return record
