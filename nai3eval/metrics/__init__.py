"""Point metrics: every module of this package that defines a ``PointMetric`` subclass is found
here, so a new metric is one new module (and its test)."""
from __future__ import annotations

import importlib
import pkgutil

from .base import InstrumentContext, InstrumentSettings, Output, PointMetric, Samples

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")


def metric_classes() -> list[type[PointMetric]]:
    """Every metric class, in column order."""
    found, todo = [], list(PointMetric.__subclasses__())
    while todo:
        c = todo.pop(0)
        found.append(c)
        todo += c.__subclasses__()
    return sorted(found, key=lambda c: (c.order, c.__name__))


def declared_outputs() -> list[Output]:
    """Every metric's outputs, in column order: what MLflow, the tables and the claims may name."""
    return [o for c in metric_classes() for o in c.outputs]


__all__ = ["InstrumentContext", "InstrumentSettings", "Output", "PointMetric", "Samples", "declared_outputs", "metric_classes"]
