"""The measurement record: every number an evaluation produced, in one typed table.

A measurement is keyed by (evaluated run, setting, metric name). Its value is a scalar or a
per-image list in the order of the images it was taken on, with their prompt ids; images of the
same prompt set pair image by image across runs, so any two runs or settings compare paired.
An evaluated run (``Run``) is one checkpoint — a variant at one training seed — with the prompts
it was evaluated on. The claims and the report only query this table (``scalar``,
``per_image``, ``sweep_at``, ``nearest_cfg``); the JSON round trip is generic, one for all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import numpy as np

from nai3train.config import VariantConfig, from_dict, to_dict

from .setting import Setting

FORMAT = 2  # the stored-evaluation format; a stored evaluation of another format is evaluated again


@dataclass
class Run:
    """One evaluated checkpoint: the variant as trained, its training seed, and the prompt set."""

    variant: VariantConfig
    seed: int
    prompts: list[list[str]]
    prompt_index: list[int]
    problems: list[str] = field(default_factory=list)
    instruments: dict[str, dict[str, float]] = field(default_factory=dict)  # accuracy on held-out real images
    counter: str = ""  # the instrument that counted objects for the count probe
    source: str = ""  # where the parameterisation came from
    disturbance: dict[str, dict] = field(default_factory=dict)  # per instrument, its disturbance test

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def key(self) -> tuple[str, int]:
        return self.variant.name, self.seed

    def to_dict(self) -> dict:
        return {"variant": to_dict(self.variant), "seed": self.seed, "prompts": self.prompts,
                "prompt_index": self.prompt_index, "problems": self.problems, "instruments": self.instruments,
                "counter": self.counter, "source": self.source, "disturbance": self.disturbance}

    @classmethod
    def from_dict(cls, d: dict) -> "Run":
        return cls(**{**d, "variant": from_dict(VariantConfig, d["variant"], "variant")})


@dataclass(frozen=True)
class PerImage:
    """Per-image values and the prompt of each image (``None``: the run's own prompt set)."""

    values: list[Any]
    prompt_index: list[int] | None = None


Value = float | PerImage


def _dec(v: Any) -> Any:
    """The inverse of ``to_dict``'s strings for non-finite floats."""
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


@dataclass
class Record:
    """Measurements keyed by (run key, setting, metric)."""

    runs: dict[tuple[str, int], Run] = field(default_factory=dict)
    values: dict[tuple[tuple[str, int], Setting, str], Value] = field(default_factory=dict)

    # ---------------------------------------------------------------- writing
    def add_run(self, run: Run) -> Run:
        self.runs[run.key] = run
        return run

    def put(self, run: Run, setting: Setting, metric: str, value: Any, prompt_index: Iterable[int] | None = None
            ) -> None:
        """A scalar (a number) or per-image values (a list), with their prompt ids when the images
        are not the run's own prompt set."""
        if isinstance(value, (list, tuple, np.ndarray)):
            value = PerImage(list(value.tolist() if isinstance(value, np.ndarray) else value),
                             None if prompt_index is None else [int(i) for i in prompt_index])
        else:
            value = float(value)
        self.values[(run.key, setting, metric)] = value

    def put_all(self, run: Run, setting: Setting, values: dict[str, Any]) -> None:
        for metric, v in values.items():
            self.put(run, setting, metric, v)

    def merge(self, other: "Record") -> "Record":
        self.runs.update(other.runs)
        self.values.update(other.values)
        return self

    def relabel(self, name: str, seed: int) -> "Record":
        """The same measurements under another run name and training seed (a single-run record)."""
        out = Record()
        for run in self.runs.values():
            run = Run(**{**run.__dict__, "variant": run.variant.model_copy(update={"name": name}), "seed": seed})
            out.add_run(run)
        only = next(iter(out.runs.values()), None)
        for (_, s, m), v in self.values.items():
            out.values[(only.key, s, m)] = v
        return out

    # ---------------------------------------------------------------- queries
    @property
    def seeds(self) -> list[int]:
        return sorted({k[1] for k in self.runs})

    def runs_at(self, seed: int) -> list[Run]:
        return [r for r in self.runs.values() if r.seed == seed]

    def settings(self, run: Run, kind: str | None = None) -> list[Setting]:
        found = {s for (k, s, _) in self.values if k == run.key and (kind is None or s.kind == kind)}
        return sorted(found, key=Setting.sort_key)

    def metrics_at(self, run: Run, setting: Setting) -> dict[str, Value]:
        return {m: v for (k, s, m), v in self.values.items() if k == run.key and s == setting}

    def get(self, run: Run, setting: Setting, metric: str) -> Value | None:
        return self.values.get((run.key, setting, metric))

    def scalar(self, run: Run, setting: Setting, metric: str) -> float | None:
        v = self.get(run, setting, metric)
        return v if isinstance(v, float) else None

    def per_image(self, run: Run, setting: Setting, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(values as floats, each image's prompt id), or None where this was not measured."""
        v = self.get(run, setting, metric)
        if not isinstance(v, PerImage) or not v.values:
            return None
        pid = run.prompt_index if v.prompt_index is None else v.prompt_index
        return np.asarray(v.values, dtype=float), np.asarray(pid)

    def cfg_scales(self) -> list[float]:
        return sorted({s.cfg_scale for (_, s, _) in self.values if s.kind == "sweep"})

    def nearest_cfg(self, want: float) -> float | None:
        """The swept CFG scale nearest ``want`` (the paper recommends 5; probes and claims use it)."""
        scales = self.cfg_scales()
        return min(scales, key=lambda c: abs(c - want)) if scales else None

    def sweep_at(self, run: Run, cfg: float, start: float | Literal["max"]) -> Setting | None:
        """The sweep point of ``run`` at ``cfg`` whose start is nearest ``start`` (or the highest)."""
        pts = [s for s in self.settings(run, "sweep") if s.cfg_scale == cfg]
        if not pts:
            return None
        if start == "max":
            return max(pts, key=lambda s: s.start)
        return min(pts, key=lambda s: abs(s.start - float(start)))

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        rows = []
        for (key, s, m), v in self.values.items():
            row = {"run": list(key), "setting": s.to_dict(), "metric": m}
            if isinstance(v, PerImage):
                row["values"] = to_dict(v.values)
                if v.prompt_index is not None:
                    row["prompt_index"] = v.prompt_index
            else:
                row["value"] = to_dict(v)
            rows.append(row)
        return {"format": FORMAT, "runs": [r.to_dict() for r in self.runs.values()], "measurements": rows}

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        """A record back from ``to_dict``; another format is refused (``ValueError``), never misread."""
        if d.get("format") != FORMAT:
            raise ValueError(f"measurement record of format {d.get('format')!r}, this code reads {FORMAT}")
        out = cls()
        for r in d["runs"]:
            out.add_run(Run.from_dict(r))
        for row in d["measurements"]:
            key = (row["run"][0], int(row["run"][1]))
            v = PerImage(_dec(row["values"]), row.get("prompt_index")) if "values" in row else float(_dec(row["value"]))
            out.values[(key, Setting.from_dict(row["setting"]), row["metric"])] = v
        return out
