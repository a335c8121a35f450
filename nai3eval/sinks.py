"""Result sinks: where a sweep point goes after it is measured. The pipeline passes them to
``run_sweep`` as ``on_point``; the sweep itself never writes anything."""
from __future__ import annotations

import csv
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nai3train.tracking import Tracker

from .grid import save_grid
from .metrics import Samples
from .results import PointResult


@dataclass
class GridSink:
    """A PNG grid of each point's first images, named ``<variant>__<point>.png`` for the report."""

    folder: Path
    n: int = 16
    label: str | None = None  # the file's variant part (default: the result's variant name)

    def __call__(self, result: PointResult, samples: Samples) -> None:
        save_grid(samples.images[: self.n], Path(self.folder) / f"{self.label or result.variant}__{result.name}.png")


def write_per_image_csv(path: Path, result: PointResult, samples: Samples, vocab: list[str]) -> None:
    """One row per image: its prompt and seed, brightness, what the instrument found, finiteness."""
    ps, pi = samples.prompt_set, result.per_image
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "variant", "cfg_scale", "first_sigma", "prompt", "prompt_index", "seed_index",
                    "mean", "brightness", "tags_found", "recall", "finite"])
        seen: dict[int, int] = {}
        for i, p in enumerate(ps.prompt_index.tolist()):
            seen[p] = seen.get(p, -1) + 1
            found = ", ".join(vocab[k] for k in pi.found[i]) if pi.found else ""
            recall = f"{pi.recall[i]:.3f}" if pi.recall else ""
            mean = f"{pi.out_mean[i]:.5f}" if pi.out_mean else ""
            bright = f"{pi.brightness[i]:.5f}" if pi.brightness else ""
            w.writerow([i, result.variant, result.cfg_scale, result.first_sigma, ", ".join(ps.prompts[p]), p, seen[p],
                        mean, bright, found, recall, pi.finite[i] if pi.finite else ""])


@dataclass
class MLflowPointSink:
    """One MLflow child run per point under ``parent``: the settings as params and as metrics (so the
    UI can plot metrics against them), every scalar metric, a sample grid and the per-image table.
    ``variant_params`` (prediction, ztsnr, sigma_max, seed, …) let the UI group and colour by them."""

    parent: Tracker
    experiment_id: str
    variant_hash: str
    vocab: list[str]
    variant_params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, result: PointResult, samples: Samples) -> None:
        p = result.point
        began = int((time.time() - (result.seconds or 0.0)) * 1000)
        child = Tracker.start(self.parent.uri, self.experiment_id, f"eval/{result.variant}/{p.name}", parent=self.parent,
                              tags={"nai3.kind": "eval", "nai3.variant": result.variant,
                                    "nai3.variant_hash": self.variant_hash}, start_time_ms=began)
        try:
            child.log_params({"variant.name": result.variant, **{f"variant.{k}": v for k, v in self.variant_params.items()},
                              "eval.cfg_scale": p.cfg_scale, "eval.first_sigma": p.first_sigma,
                              "eval.sampler": p.sampler, "eval.schedule": p.schedule, "eval.steps": p.steps,
                              "eval.cfg_rescale": p.cfg_rescale, "eval.n_images": result.n_images,
                              "eval.extrapolated": result.extrapolated})
            finite = math.isfinite(p.first_sigma)
            child.log_metrics({"eval/cfg_scale": p.cfg_scale, "eval/cfg_rescale": p.cfg_rescale,
                               "eval/first_sigma": p.first_sigma if finite else 1e300,
                               "eval/log10_first_sigma": math.log10(p.first_sigma) if finite else 300.0,
                               **result.scalars()})
            with tempfile.TemporaryDirectory() as d:
                save_grid(samples.images[:32], Path(d) / "samples.png")
                write_per_image_csv(Path(d) / "per_image.csv", result, samples, self.vocab)
                child.log_artifact(d)
            child.finish(True)
        except Exception:
            child.finish(False)
            raise


@dataclass
class PointCache:
    """Each finished point as JSON under ``folder`` (written atomically as it finishes), so an
    evaluation killed half-way resumes without sampling its finished points again."""

    folder: Path

    def __call__(self, result: PointResult, samples: Samples) -> None:
        import json
        import os

        from nai3train.config import to_dict

        self.folder.mkdir(parents=True, exist_ok=True)
        f = self.folder / f"{result.name}.json"
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(to_dict(result)))
        os.replace(tmp, f)

    def load(self) -> dict[str, PointResult]:
        import json

        from .results import point_from_dict

        out = {}
        for f in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                r = point_from_dict(json.loads(f.read_text()))
            except (ValueError, TypeError, KeyError):
                continue  # a damaged entry is measured again
            out[r.name] = r
        return out
