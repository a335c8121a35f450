"""Operational settings read from the environment (patience, cache sizes): not part of any recipe,
so not in the config, yet checked like config values — a value that is not a finite number in its
range is a ConfigError naming the variable, not an OverflowError deep in the work."""
from __future__ import annotations

import math
import os

from ..config.errors import ConfigError


def env_number(name: str, default: float, lo: float = 0.0, hi: float = 1e9) -> float:
    """``$name`` as a number in [lo, hi], else ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"${name}={raw!r} must be a finite number in [{lo:g}, {hi:g}]")
    return value
