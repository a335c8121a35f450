"""The shape every point metric has (torchmetrics' ``update`` / ``compute`` / ``reset``) and the
declaration of what it returns.

A metric declares its outputs once (``Output``: name, unit, per-image or set-level, which
direction is better, a column header where the points table shows it). ``compute()`` returns
exactly those names; the MLflow metric names, the console and report tables, the per-image CSV and
the claims' metric names all come from the declarations, so adding a metric is its own module
(found by ``nai3eval.metrics``) and its test, nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ..pixels import RealImages
from ..prompts import PromptSet


@dataclass(frozen=True)
class Output:
    """One declared output of a metric."""

    name: str
    unit: str
    per_image: bool = False
    better: Literal["lower", "higher"] | None = None  # None: a reading, not a quality
    column: str = ""  # header in the points table (console, report, CSV); "" = not a column
    fmt: str = ".4g"


@dataclass
class Samples:
    """What a sampled point hands to its metrics: pixels in [−1, 1] on the CPU, each image's
    starting-noise mean (model units) and the prompt set they came from."""

    images: torch.Tensor
    start_means: torch.Tensor
    prompt_set: PromptSet

    @classmethod
    def cat(cls, parts: list["Samples"]) -> "Samples":
        if len(parts) == 1:
            return parts[0]
        ps = parts[0].prompt_set
        index = torch.cat([p.prompt_set.prompt_index for p in parts])
        noise = torch.cat([p.prompt_set.noise for p in parts])
        return cls(torch.cat([p.images for p in parts]), torch.cat([p.start_means for p in parts]),
                   PromptSet(ps.prompts, index, noise))


# The instruments' own random draws (KID subsets, the disturbance test's noise): one fixed seed, so
# that no instrument depends on a training seed, an evaluation seed or the sweep settings.
INSTRUMENT_SEED = 1234


@dataclass(frozen=True)
class InstrumentSettings:
    """What building the instruments reads from a configuration: the local weights of the
    real-data metrics, and nothing else (a sweep's settings never enter an instrument)."""

    inception_weights: str | None = None
    clip_path: str | None = None
    wd14_model: str | None = None
    wd14_tags: str | None = None
    inception: bool = True  # FD/KID in Inception features (the standard one unless inception_weights is given)

    @classmethod
    def of(cls, ec: Any) -> "InstrumentSettings":
        """The instrument settings of an ``EvalConfig``."""
        return cls(ec.inception_weights, ec.clip_path, ec.wd14_model, ec.wd14_tags, ec.inception)


@dataclass
class InstrumentContext:
    """What building the instruments may read (the reference set, the trained tagger, the
    real-data weights) and what it reports back (problems, each instrument's held-out accuracy)."""

    settings: InstrumentSettings
    real_images: RealImages
    real_tags: list[list[str]]
    real_brightness: torch.Tensor
    tagger: Any = None
    tagger_vocab: list[str] = field(default_factory=list)
    tag_frequency: dict[str, float] | None = None
    benchmark: bool = False  # the data is the embedded benchmark: adherence can be read off the pixels
    tagger_accuracy: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    disturbance: dict[str, dict] = field(default_factory=dict)  # per instrument, ``Disturbance.summary()``
    # where an instrument may keep what it computed from the reference set, for other processes of
    # the same run (None: computed in this process, kept nowhere)
    cache_dir: str | None = None


class PointMetric:
    """Streams a point's samples (``update``), returns its declared outputs (``compute``)."""

    outputs: ClassVar[tuple[Output, ...]] = ()
    order: ClassVar[int] = 100  # column order of its outputs among the metrics

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "PointMetric | None":
        """The instance this evaluation uses, or None where it has nothing to measure with."""
        return cls()

    def update(self, samples: Samples) -> None:
        self.__dict__.setdefault("_parts", []).append(samples)

    def reset(self) -> None:
        self.__dict__["_parts"] = []

    def compute(self) -> dict[str, Any]:
        """The declared outputs measured on every sample since ``reset`` (None values left out)."""
        parts = self.__dict__.get("_parts") or []
        if not parts:
            return {}
        got = {k: v for k, v in self.measure(Samples.cat(parts)).items() if v is not None}
        undeclared = set(got) - {o.name for o in self.outputs}
        if undeclared:
            raise RuntimeError(f"{type(self).__name__} returned undeclared outputs {sorted(undeclared)}")
        return got

    def measure(self, samples: Samples) -> dict[str, Any]:
        raise NotImplementedError
