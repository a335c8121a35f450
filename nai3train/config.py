"""Run configuration: YAML file + ``--set key=value`` overrides, validated before any work starts.

A config is a tree of frozen dataclasses. Unknown keys, wrong types and out-of-range values are
refused with a message naming the dotted key, so a typo in a nightly config fails in a second,
not after an hour of training. Every run logs the fully resolved config (``to_dict``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .diffusion import PREDICTIONS, SDXL_SIGMA_MAX


class ConfigError(ValueError):
    """A configuration that must be fixed before anything runs."""


@dataclass(frozen=True)
class DataConfig:
    kind: str = "benchmark"  # 'benchmark' (synthesised) or 'folder'
    path: str = ""  # folder datasets: the image folder; benchmark: where to write it ('' = work dir)
    train_size: int = 512
    eval_size: int = 64
    resolution: int = 16
    seed: int = 0

    def validate(self) -> None:
        _check(self.kind in ("benchmark", "folder"), "data.kind", f"must be 'benchmark' or 'folder', got {self.kind!r}")
        _check(self.kind != "folder" or bool(self.path), "data.path", "is required when data.kind is 'folder'")
        _check(self.train_size >= 8, "data.train_size", "must be ≥ 8")
        _check(self.eval_size >= 4, "data.eval_size", "must be ≥ 4")
        _check(8 <= self.resolution <= 4096 and self.resolution % 8 == 0, "data.resolution",
               "must be a multiple of 8 between 8 and 4096")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "tiny"  # 'tiny' (CPU toy) or 'sdxl' (a local diffusers folder at `path`)
    path: str = ""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    cross_attention_dim: int = 64
    max_tags: int = 8

    def validate(self) -> None:
        _check(self.kind in ("tiny", "sdxl"), "model.kind", "must be 'tiny' or 'sdxl'")
        if self.kind == "sdxl":
            _check(bool(self.path), "model.path", "is required for model.kind: sdxl (a local from_pretrained folder)")
            _check(Path(self.path).is_dir(), "model.path", f"SDXL folder {self.path} does not exist")
        _check(len(self.block_out_channels) >= 2 and all(c % 8 == 0 and c > 0 for c in self.block_out_channels),
               "model.block_out_channels", "needs ≥ 2 positive multiples of 8")
        _check(self.cross_attention_dim % 8 == 0 and self.cross_attention_dim > 0, "model.cross_attention_dim",
               "must be a positive multiple of 8")
        _check(self.max_tags >= 1, "model.max_tags", "must be ≥ 1")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-3
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    tag_dropout: float = 0.1
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100  # steps between resumable checkpoints (and always at the end)
    threads: int = 0  # torch threads; 0 = torch's default

    def validate(self) -> None:
        _check(self.steps >= 1, "train.steps", "must be ≥ 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be ≥ 1")
        _check(self.grad_accum >= 1, "train.grad_accum", "must be ≥ 1")
        _check(self.lr > 0 and math.isfinite(self.lr), "train.lr", "must be a positive finite number")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be ≥ 0")
        _check(self.grad_clip > 0, "train.grad_clip", "must be > 0")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        _check(0 <= self.tag_dropout < 1, "train.tag_dropout", "must be in [0, 1)")
        _check(self.log_every >= 1, "train.log_every", "must be ≥ 1")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be ≥ 1")


@dataclass(frozen=True)
class VariantConfig:
    """One point of the ablation: the axes of the paper (paper.md §1). σ values in SDXL units."""

    name: str
    prediction: str = "eps"
    ztsnr: bool = False
    sigma_max: float | None = None  # replaces the table's top σ; None keeps 14.6146 (SDXL) or ∞ (ZTSNR)
    min_snr_gamma: float | None = None
    tag_weighting: bool = False  # per-image loss weights from tag frequencies (data/tag_weights.py)
    normalize: str = "none"  # 'none' | 'dataset' (per-channel mean/std → 0/1) | 'fixed' (x·normalize_scale)
    normalize_scale: float = 1.0
    dimension_scale: bool = True  # scale σ by √(D/D_ref) (design.md)

    def validate(self, key: str = "variant") -> None:
        _check(bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name), f"{key}.name",
               f"must be a non-empty name of letters, digits, '-', '_' or '.', got {self.name!r}")
        _check(self.prediction in PREDICTIONS, f"{key}.prediction", f"must be one of {PREDICTIONS}")
        if self.sigma_max is not None:
            _check(self.sigma_max > SDXL_SIGMA_MAX * 0.999 or self.ztsnr, f"{key}.sigma_max",
                   f"must be ≥ SDXL's own {SDXL_SIGMA_MAX:.4f} (it replaces the top entry of the table)")
            _check(not (math.isinf(self.sigma_max) and not self.ztsnr), f"{key}.sigma_max",
                   "can be ∞ only with ztsnr: true (the plain SDXL table has no pure-noise step)")
        _check(self.min_snr_gamma is None or self.min_snr_gamma > 0, f"{key}.min_snr_gamma", "must be > 0 or null")
        _check(self.normalize in ("none", "dataset", "fixed"), f"{key}.normalize",
               "must be 'none', 'dataset' or 'fixed'")
        _check(self.normalize_scale > 0 and math.isfinite(self.normalize_scale), f"{key}.normalize_scale",
               "must be a positive finite number")

    @property
    def top_sigma(self) -> float:
        """The trained maximum σ in SDXL units."""
        if self.sigma_max is not None:
            return float(self.sigma_max)
        return math.inf if self.ztsnr else SDXL_SIGMA_MAX

    def config_hash(self) -> str:
        """Stable across runs and machines: sha256 of the canonical JSON of the resolved fields.

        Fields at their defaults are left out, so adding a new axis later does not change the
        hash of existing variants."""
        defaults = to_dict(VariantConfig(name=self.name))
        resolved = to_dict(self)
        core = ("prediction", "ztsnr", "sigma_max", "min_snr_gamma", "dimension_scale")
        return stable_hash({k: v for k, v in resolved.items()
                            if k != "name" and (k in core or v != defaults[k])})[:12]


@dataclass(frozen=True)
class EvalConfig:
    cfg_scales: tuple[float, ...] = (1.0, 2.0, 3.5, 5.0, 7.5, 10.0)
    first_sigmas: tuple[float, ...] = (14.6, 29.0, 136.0, 20000.0, math.inf)  # SDXL units; ∞ only for ZTSNR
    sampler: str = "euler"
    schedule: str = "native"
    steps: int = 28
    cfg_rescale: float = 0.0
    prompts: int = 16
    seeds_per_prompt: int = 4
    seed: int = 1234
    tagger_steps: int = 800
    inception_weights: str = ""  # local torchvision inception_v3 weights → Inception FID via clean-fid
    clip_path: str = ""  # local CLIPModel + CLIPProcessor folder → CLIPScore via torchmetrics
    wd14_model: str = ""  # local WD14-style tagger model.onnx → anime tag adherence via onnxruntime
    wd14_tags: str = ""  # its selected_tags.csv

    def validate(self) -> None:
        from nai3train.diffusion.schedules import _check_steps  # local: keep config import-light

        _check(len(self.cfg_scales) >= 1 and all(s >= 0 for s in self.cfg_scales), "eval.cfg_scales",
               "needs ≥ 1 non-negative scale")
        _check(len(self.first_sigmas) >= 1 and all(s > 0 for s in self.first_sigmas), "eval.first_sigmas",
               "needs ≥ 1 positive σ (SDXL units; .inf allowed)")
        _check(self.sampler in ("euler", "euler_a", "dpmpp_2m"), "eval.sampler",
               "must be 'euler', 'euler_a' or 'dpmpp_2m'")
        _check(self.schedule in ("native", "karras"), "eval.schedule", "must be 'native' or 'karras'")
        _check(self.steps >= 1, "eval.steps", "must be ≥ 1")
        _check(0 <= self.cfg_rescale <= 1, "eval.cfg_rescale", "must be in [0, 1]")
        _check(self.prompts >= 2 and self.seeds_per_prompt >= 2, "eval.prompts",
               "needs ≥ 2 prompts and ≥ 2 seeds per prompt (the mean-leak probe compares seeds)")
        _check(self.tagger_steps >= 1, "eval.tagger_steps", "must be ≥ 1")
        _check_steps(self.steps, 1.0)


@dataclass(frozen=True)
class AblationConfig:
    name: str = "smoke"
    experiment: str = "nai3-smoke"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    variants: tuple[VariantConfig, ...] = ()
    skipped_variants: tuple[str, ...] = ()  # factorial combinations refused, each with its reason

    def validate(self) -> "AblationConfig":
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.eval.validate()
        _check(len(self.variants) >= 1, "variants", "needs at least one variant")
        names = [v.name for v in self.variants]
        _check(len(set(names)) == len(names), "variants", f"names must be unique, got {names}")
        for i, v in enumerate(self.variants):
            v.validate(f"variants[{i}]")
        return self


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config error at {key}: {msg}")


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def to_dict(obj: Any) -> Any:
    """Resolved config as plain JSON-able data (infinities as the string 'inf')."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    return obj


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}: MLflow params are flat dotted names."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for i, item in enumerate(v):
                out.update(flatten(item, f"{key}.{item.get('name', i)}."))
        else:
            out[key] = v
    return out


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last: Exception | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"config error at {key}: bad value {value!r}")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf", "infinity", "∞"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config error at {key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config error at {key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config error at {key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config error at {key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, key: str = "config") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config error at {key}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"config error at {key}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{key}.{k}" if key != "config" else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"config error at {key}: {e}") from None


def apply_override(tree: dict, assignment: str) -> None:
    """``train.steps=100`` → tree['train']['steps'] = 100 (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.path=value")
    path, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    node = tree
    parts = path.strip().split(".")
    for p in parts[:-1]:
        if isinstance(node, list):
            matches = [v for v in node if isinstance(v, dict) and v.get("name") == p]
            if not matches:
                raise ConfigError(f"override {assignment!r}: no variant named {p!r}")
            node = matches[0]
        else:
            node = node.setdefault(p, {})
    node[parts[-1]] = value


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
    import itertools

    from .diffusion import Schedule

    unknown = sorted(set(axes) - set(FACTORIAL_AXES))
    if unknown:
        raise ConfigError(f"config error at factorial: unknown axes {unknown}; known: {list(FACTORIAL_AXES)}")
    keys = list(axes)
    variants, skipped = [], []
    for combo in itertools.product(*(axes[k] for k in keys)):
        d = {**(base or {}), **dict(zip(keys, combo))}
        d["name"] = "-".join(_axis_label(k, v) for k, v in zip(keys, combo))
        try:
            v = from_dict(VariantConfig, d, f"factorial[{d['name']}]")
            v.validate(f"factorial[{d['name']}]")
            Schedule.sdxl(ztsnr=v.ztsnr, sigma_max=None if v.sigma_max is None or math.isinf(v.sigma_max) and v.ztsnr
                          else v.sigma_max)
        except (ConfigError, ValueError) as e:
            skipped.append(f"{d['name']}: {e}")
            continue
        variants.append(d)
    return variants, skipped


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AblationConfig:
    """Read a YAML config (or the defaults), apply overrides, validate. Raises ConfigError.

    A ``factorial:`` mapping of axis → values (with an optional ``factorial_base:`` of shared variant
    fields) expands into ``variants`` (the full product); combinations that cannot be trained are
    listed in ``skipped_variants`` with the reason."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (see configs/ for examples)")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    for o in overrides:
        apply_override(tree, o)
    if "factorial" in tree:
        axes = tree.pop("factorial")
        if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
            raise ConfigError("config error at factorial: expected a mapping of axis → non-empty list of values")
        variants, skipped = expand_factorial(axes, tree.pop("factorial_base", None))
        tree["variants"] = list(tree.get("variants", [])) + variants
        tree["skipped_variants"] = skipped
    return from_dict(AblationConfig, tree).validate()
