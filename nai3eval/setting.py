"""What a measurement was taken at: one frozen, typed value per setting.

A σ is a float in SDXL units (∞ allowed), never a string; ``name`` exists for humans (file names,
MLflow run names, table rows) and is never parsed back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from nai3train.config import to_dict
from nai3train.diffusion.frontends import FRONTENDS

Kind = Literal["sweep", "frontend", "x0", "mean_leak", "practical_infinity", "count"]
KINDS: tuple[str, ...] = ("sweep", "frontend", "x0", "mean_leak", "practical_infinity", "count")
"""sweep: a CFG × start point of the sweep; frontend: the sweep's prompts and noise sampled on a
front-end's own σ schedule (``frontend``; ``start`` is the first σ it samples); x0: the denoiser
D(ε, σ) on pure noise (no sampling); mean_leak: the designed mean-leak probe; practical_infinity:
samples from several starts on the same noise; count: samples on a larger canvas whose objects are
counted."""


def sigma_text(s: float) -> str:
    return "inf" if math.isinf(s) else f"{s:g}"


@dataclass(frozen=True)
class Setting:
    """How one set of images was made (or, for ``x0``, one denoiser call was taken)."""

    kind: Kind
    start: float  # the first σ, SDXL units; +∞ allowed
    cfg_scale: float | None = None  # None: no guidance was involved (the x̂0 probe)
    canvas: float = 1.0  # the side, as a multiple of the model's native side
    # on a larger canvas: the σ table scaled to its dimension (as if trained there), or — False —
    # the native table as it is, the naive start a user gets without the dimension rescale (C4)
    rescaled: bool = True
    sampler: str = "euler"
    steps: int = 28
    schedule: str = "native"
    cfg_rescale: float = 0.0
    frontend: str = ""  # kind ``frontend``: the preset whose σ list was sampled (nai3train.diffusion.frontends)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown setting kind {self.kind!r}; known: {KINDS}")
        if (self.kind == "frontend") != bool(self.frontend):
            raise ValueError("a front-end is named by, and only by, a setting of kind 'frontend'")

    @property
    def name(self) -> str:
        """A display name (``cfg5-sigma20000-euler28`` for a sweep point), for humans only."""
        body = f"sigma{sigma_text(self.start)}" if self.cfg_scale is None else \
            f"cfg{self.cfg_scale:g}-sigma{sigma_text(self.start)}-{self.sampler}{self.steps}"
        if self.canvas != 1.0:
            body += f"-x{self.canvas:g}" + ("" if self.rescaled else "-naive")
        if self.frontend:
            return f"frontend-{self.frontend}-{body}"
        return body if self.kind == "sweep" else f"{self.kind}-{body}"

    def at(self, **changes) -> "Setting":
        return replace(self, **changes)

    def sort_key(self) -> tuple:
        preset = list(FRONTENDS).index(self.frontend) if self.frontend in FRONTENDS else len(FRONTENDS)
        return (KINDS.index(self.kind), preset, self.canvas, not self.rescaled,
                -1.0 if self.cfg_scale is None else self.cfg_scale, self.start, self.sampler, self.steps)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Setting":
        return cls(**{**d, "start": float(d["start"])})
