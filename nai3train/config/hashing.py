"""Canonical plain data for configs: what runs log, and what run keys and variant hashes are made of."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel


def stable_hash(obj: Any) -> str:
    """sha256 of sorted-key JSON: identical across runs, machines and Python versions."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def to_dict(obj: Any) -> Any:
    """Resolved config (a pydantic model or a dataclass) as plain JSON-able data: tuples as lists,
    non-finite floats as the strings 'inf'/'-inf'/'nan' (JSON has neither; the schema and
    ``nai3eval.record`` read them back)."""
    if isinstance(obj, BaseModel):
        return {name: to_dict(getattr(obj, name)) for name in type(obj).model_fields}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else "inf" if obj > 0 else "-inf"
    return obj
