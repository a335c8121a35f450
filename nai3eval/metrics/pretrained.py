"""Instruments a researcher brings as local files: CLIPScore (torchmetrics) and WD14 tag adherence
(Inception FD/KID, standard or from the researcher's file, is ``inception.py``).

A missing or corrupt file is reported once (logged and kept in the evaluation's problems) and the
sweep goes on without that metric: any failure to load an instrument costs that instrument, not the run.
"""
from __future__ import annotations

import logging

from .base import InstrumentContext, Output, PointMetric, Samples

log = logging.getLogger(__name__)


class RealDataMetrics(PointMetric):
    outputs = (Output("clip_score", "CLIPScore", better="higher", column="CLIP"),
               Output("wd14_precision", "fraction of found tags", better="higher"),
               Output("wd14_recall", "fraction of prompted tags", better="higher", column="WD14 recall", fmt=".3f"))
    order = 50

    def __init__(self, clip_path: str = "", wd14_model: str = "", wd14_tags: str = ""):
        from .. import realdata

        self.problems: list[str] = []
        self.clip = self.wd14 = None
        if clip_path:
            try:
                self.clip = realdata.load_clip(clip_path)
            except Exception as e:  # noqa: BLE001 - missing, truncated, wrong format: all skip the metric
                self._skip(f"CLIPScore ({clip_path})", e)
        if wd14_model or wd14_tags:
            try:
                self.wd14 = realdata.WD14Tagger(wd14_model, wd14_tags)
            except Exception as e:  # noqa: BLE001
                self._skip(f"WD14 tag adherence ({wd14_model}, {wd14_tags})", e)

    @classmethod
    def build(cls, ctx: InstrumentContext) -> "RealDataMetrics | None":
        w = ctx.settings
        real = cls(w.clip_path, w.wd14_model, w.wd14_tags)
        ctx.problems += real.problems
        return real if real.active else None

    @property
    def active(self) -> bool:
        return any(m is not None for m in (self.clip, self.wd14))

    def _skip(self, what: str, e: Exception) -> None:
        msg = f"{what} skipped: {type(e).__name__}: {str(e)[:500]}"
        log.warning(msg)
        self.problems.append(msg)

    def measure(self, samples: Samples) -> dict:
        from .. import realdata

        fake, prompts = samples.images, samples.prompt_set.per_image
        out: dict = {}
        if self.clip is not None:
            texts = [", ".join(p).replace("_", " ") for p in prompts]
            out["clip_score"] = realdata.clip_score(fake, texts, "", loaded=self.clip)
        if self.wd14 is not None:
            out["wd14_precision"], out["wd14_recall"] = self.wd14.adherence(fake, prompts)
        return out
