"""Instruments a researcher brings as local files: Inception FID (clean-fid), CLIPScore
(torchmetrics) and WD14 tag adherence.

A missing or corrupt file is reported once (logged and kept in the evaluation's problems) and the
sweep goes on without that metric: any failure to load an instrument costs that instrument, not the run.
"""
from __future__ import annotations

import logging

from ..pixels import RealImages, real_batches
from .base import InstrumentContext, Output, PointMetric, Samples

log = logging.getLogger(__name__)


class RealDataMetrics(PointMetric):
    outputs = (Output("fid_inception", "FID, Inception pool3", better="lower", column="FID"),
               Output("clip_score", "CLIPScore", better="higher", column="CLIP"),
               Output("wd14_precision", "fraction of found tags", better="higher"),
               Output("wd14_recall", "fraction of prompted tags", better="higher", column="WD14 recall", fmt=".3f"))
    order = 50

    def __init__(self, real_images: RealImages, inception_weights: str = "", clip_path: str = "",
                 wd14_model: str = "", wd14_tags: str = ""):
        from .. import realdata

        self.problems: list[str] = []
        self.inception = self.clip = self.wd14 = None
        if inception_weights:
            try:  # the reference set is featurised here, once, streamed
                self.inception = realdata.InceptionReference(realdata.InceptionFeatures(inception_weights),
                                                             real_batches(real_images, 32))
            except Exception as e:  # noqa: BLE001 - missing, truncated, wrong format: all skip the metric
                self._skip(f"Inception FID ({inception_weights})", e)
        if clip_path:
            try:
                self.clip = realdata.load_clip(clip_path)
            except Exception as e:  # noqa: BLE001
                self._skip(f"CLIPScore ({clip_path})", e)
        if wd14_model or wd14_tags:
            try:
                self.wd14 = realdata.WD14Tagger(wd14_model, wd14_tags)
            except Exception as e:  # noqa: BLE001
                self._skip(f"WD14 tag adherence ({wd14_model}, {wd14_tags})", e)

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "RealDataMetrics | None":
        w = ctx.settings
        real = cls(ctx.real_images, w.inception_weights, w.clip_path, w.wd14_model, w.wd14_tags)
        ctx.problems += real.problems
        return real if real.active else None

    @property
    def active(self) -> bool:
        return any(m is not None for m in (self.inception, self.clip, self.wd14))

    def _skip(self, what: str, e: Exception) -> None:
        msg = f"{what} skipped: {type(e).__name__}: {str(e)[:500]}"
        log.warning(msg)
        self.problems.append(msg)

    def measure(self, samples: Samples) -> dict:
        from .. import realdata

        fake, prompts = samples.images, samples.prompt_set.per_image
        out: dict = {}
        if self.inception is not None:
            out["fid_inception"] = self.inception.fid(fake)
        if self.clip is not None:
            texts = [", ".join(p).replace("_", " ") for p in prompts]
            out["clip_score"] = realdata.clip_score(fake, texts, "", loaded=self.clip)
        if self.wd14 is not None:
            out["wd14_precision"], out["wd14_recall"] = self.wd14.adherence(fake, prompts)
        return out
