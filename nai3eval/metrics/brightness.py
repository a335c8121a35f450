"""Claim C2: do black- and white-background prompts come out black and white?"""
from __future__ import annotations

import math

import torch

from ..pixels import to_unit_unclamped
from .base import InstrumentContext, Output, PointMetric, Samples

EXTREMES = ("black", "white")


class Brightness(PointMetric):
    """Output mean brightness for black/white-background prompts and its error against the real
    images with the same background (per image; NaN for other prompts), clipped as shown and
    unclamped (CFG overshoot lies outside [0, 1])."""

    outputs = (*(o for key in EXTREMES for o in (
        Output(f"brightness_{key}", "brightness on [0, 1]", column=key, fmt=".3f"),
        Output(f"brightness_err_{key}", "brightness on [0, 1]", better="lower"),
        Output(f"brightness_unclamped_{key}", "(x + 1)/2 before clipping"))),
        Output("brightness", "brightness on [0, 1]", per_image=True),
        Output("brightness_err", "brightness on [0, 1]", per_image=True, better="lower"),
        Output("brightness_err_unclamped", "(x + 1)/2 before clipping", per_image=True, better="lower"))
    order = 40

    def __init__(self, real_brightness: torch.Tensor, real_tags: list[list[str]]):
        """``real_brightness``: the reference images' brightness (``image_brightness``), one per tag list."""
        self.reference: dict[str, float] = {}
        for key in EXTREMES:
            sel = torch.tensor([f"{key}_background" in t for t in real_tags])
            if sel.any():
                self.reference[key] = float(real_brightness[sel].mean())

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "Brightness":
        return cls(ctx.real_brightness, ctx.real_tags)

    def measure(self, samples: Samples) -> dict:
        pixels = to_unit_unclamped(samples.images)
        bright = pixels.clamp(0, 1).flatten(1).mean(1)
        unclamped = pixels.flatten(1).mean(1)
        per_image = torch.full((len(bright),), math.nan)
        per_image_raw = torch.full((len(bright),), math.nan)
        prompts = samples.prompt_set.per_image
        out: dict = {}
        for key, ref in self.reference.items():
            sel = torch.tensor([f"{key}_background" in p for p in prompts])
            if sel.any():
                err = (bright - ref).abs()
                per_image[sel] = err[sel]
                per_image_raw[sel] = (unclamped - ref).abs()[sel]
                out[f"brightness_{key}"] = float(bright[sel].mean())
                out[f"brightness_err_{key}"] = float(err[sel].mean())
                out[f"brightness_unclamped_{key}"] = float(unclamped[sel].mean())
        return {**out, "brightness": bright.tolist(), "brightness_err": per_image.tolist(),
                "brightness_err_unclamped": per_image_raw.tolist()}
