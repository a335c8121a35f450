"""Factorial matrices: the full product of variant axes, minus the combinations that cannot train."""
from __future__ import annotations

import itertools
import math
from typing import Any

from .errors import ConfigError
from .schema import VariantConfig, from_dict

MAX_VARIANTS = 256
FACTORIAL_AXES = ("prediction", "sigma_max", "ztsnr", "tag_weighting", "min_snr_gamma", "normalize")


def _axis_label(key: str, value: Any) -> str:
    if key == "prediction":
        return str(value)
    if key == "sigma_max":
        return "smaxinf" if value in ("inf", math.inf) or value is None else f"smax{float(value):g}"
    if key in ("ztsnr", "tag_weighting"):
        short = {"ztsnr": "ztsnr", "tag_weighting": "tagw"}[key]
        return short if value else f"no{short}"
    if key == "min_snr_gamma":
        return f"minsnr{value:g}" if value else "nominsnr"
    return f"{key}-{value}"


def expand_factorial(axes: dict[str, list], base: dict | None = None) -> tuple[list[dict], list[str]]:
    """The full product of ``axes`` as variant dicts, and the refused combinations with reasons.

    A combination is refused when the variant would not validate, or when its σ_max cannot be
    applied to its table (a finite clamp below ZTSNR's σ_998 ≈ 2254, for instance).
    """
    from ..diffusion import Schedule

    unknown = sorted(set(axes) - set(FACTORIAL_AXES))
    if unknown:
        raise ConfigError(f"config error at factorial: unknown axes {unknown}; known: {list(FACTORIAL_AXES)}")
    keys = list(axes)
    count = math.prod(len(axes[k]) if isinstance(axes[k], list) else 1 for k in keys)
    if count > MAX_VARIANTS:
        raise ConfigError(f"config error at factorial: the axes make {count} combinations; the limit is "
                          f"{MAX_VARIANTS} variants (each one is trained and evaluated)")
    variants, skipped = [], []
    for combo in itertools.product(*(axes[k] for k in keys)):
        d = {**(base or {}), **dict(zip(keys, combo))}
        d["name"] = "-".join(_axis_label(k, v) for k, v in zip(keys, combo))
        try:
            v = from_dict(VariantConfig, d, f"factorial[{d['name']}]")
            Schedule.sdxl(ztsnr=v.ztsnr, sigma_max=None if v.sigma_max is None or math.isinf(v.sigma_max) and v.ztsnr
                          else v.sigma_max)
        except ValueError as e:
            skipped.append(f"{d['name']}: {e}")
            continue
        variants.append(d)
    return variants, skipped
