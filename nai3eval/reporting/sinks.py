"""Result sinks: where a sweep point goes after it is measured. The pipeline passes them to
``run_sweep`` as ``on_point``; the sweep itself never writes anything."""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nai3train.ops.atomic import atomic_write

from .grid import save_grid
from ..metrics import Samples, declared_outputs
from ..record import PerImage, Record, Run
from ..setting import Setting


def grid_label(run: Run) -> str:
    """The variant part of a sample grid's file name: ``<variant>`` for seed 0, else ``<variant>@seed<k>``."""
    return run.name if run.seed == 0 else f"{run.name}@seed{run.seed}"


def grid_name(run: Run, setting: Setting) -> str:
    return f"{grid_label(run)}__{setting.name}"


def _only(record: Record) -> Run:
    return next(iter(record.runs.values()))


@dataclass
class GridSink:
    """A PNG grid of each point's first images, named ``grid_name`` for the report."""

    folder: Path
    n: int = 16

    def __call__(self, record: Record, setting: Setting, samples: Samples) -> None:
        save_grid(samples.images[: self.n], Path(self.folder) / f"{grid_name(_only(record), setting)}.png")


def write_per_image_csv(path: Path, record: Record, setting: Setting, samples: Samples, vocab: list[str]) -> None:
    """One row per image: its prompt and seed, then every declared per-image output measured."""
    run = _only(record)
    have = record.metrics_at(run, setting)
    cols = [o.name for o in declared_outputs() if o.per_image and isinstance(have.get(o.name), PerImage)]
    ps = samples.prompt_set
    first = have.get("first_sigma", setting.start)  # as sampled
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["index", "variant", "cfg_scale", "first_sigma", "prompt", "prompt_index", "seed_index", *cols])
    seen: dict[int, int] = {}
    for i, p in enumerate(ps.prompt_index.tolist()):
        seen[p] = seen.get(p, -1) + 1
        values = [have[c].values[i] for c in cols]
        values = [", ".join(vocab[k] for k in v) if c == "found" else v for c, v in zip(cols, values)]
        w.writerow([i, run.name, setting.cfg_scale, first, ", ".join(ps.prompts[p]), p, seen[p], *values])
    atomic_write(path, f.getvalue())


@dataclass
class MLflowPointSink:
    """One MLflow child run per point under ``parent``: the settings as params and as metrics (so the
    UI can plot metrics against them), every scalar measured, a sample grid and the per-image table.
    ``variant_params`` (prediction, ztsnr, sigma_max, seed, …) let the UI group and colour by them;
    ``tags`` say what made the numbers (evaluation identity, library versions).

    ``parent`` is the flow's buffered logger (``nai3train.ops.buffered``): the child run is created
    when the server answers, so an outage delays the logging, never the sweep. The grid and the
    table are written under ``folder`` first and stay there (the journal names them)."""

    parent: Any  # Tracker or BufferedTracker: both have log_child
    experiment_id: str
    variant_hash: str
    vocab: list[str]
    folder: Path
    variant_params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # what made the numbers: identities, library versions

    def __call__(self, record: Record, p: Setting, samples: Samples) -> None:
        run = _only(record)
        scalars = {m: v for m, v in record.metrics_at(run, p).items() if isinstance(v, float)}
        began = int((time.time() - scalars.get("seconds", 0.0)) * 1000)
        artifacts = Path(self.folder) / grid_name(run, p)
        artifacts.mkdir(parents=True, exist_ok=True)
        save_grid(samples.images[:32], artifacts / "samples.png")
        write_per_image_csv(artifacts / "per_image.csv", record, p, samples, self.vocab)
        first = scalars.get("first_sigma", p.start)  # the σ actually sampled first (SDXL units)
        finite = math.isfinite(first)
        self.parent.log_child(
            self.experiment_id, key=f"{self.parent.run_id}/{self.variant_hash}/{run.seed}/{p.name}",
            name=f"eval/{run.name}/{p.name}", start_time_ms=began,
            tags={**self.tags, "nai3.kind": "eval", "nai3.variant": run.name, "nai3.variant_hash": self.variant_hash},
            params={"variant.name": run.name, **{f"variant.{k}": v for k, v in self.variant_params.items()},
                    "eval.cfg_scale": p.cfg_scale, "eval.first_sigma": first, "eval.start": p.start,
                    "eval.frontend": p.frontend or "nai3", "eval.kind": p.kind,
                    "eval.sampler": p.sampler, "eval.schedule": p.schedule, "eval.steps": p.steps,
                    "eval.cfg_rescale": p.cfg_rescale, "eval.n_images": len(samples.images),
                    "eval.extrapolated": p.start > run.variant.top_sigma},
            metrics={**{f"eval/{m}": v for m, v in scalars.items() if math.isfinite(v)},
                     "eval/cfg_scale": p.cfg_scale, "eval/cfg_rescale": p.cfg_rescale,
                     "eval/first_sigma": first if finite else 1e300,
                     "eval/log10_first_sigma": math.log10(first) if finite else 300.0},
            artifact_dir=str(artifacts))


@dataclass
class PointCache:
    """Each finished point as a one-point record under ``folder`` (written atomically as it
    finishes), so an evaluation killed half-way resumes without sampling its finished points again."""

    folder: Path

    def __call__(self, record: Record, setting: Setting, samples: Samples) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"{setting.name}.json", json.dumps(record.to_dict()))

    def load(self) -> Record:
        """Every point cached so far, as one record; a damaged entry (or one of another format) is
        measured again."""
        out = Record()
        for f in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                out.merge(Record.from_dict(json.loads(f.read_text())))
            except (ValueError, TypeError, KeyError):
                continue
        return out
