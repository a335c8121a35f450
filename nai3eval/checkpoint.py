"""A checkpoint ready to sample: the model bundle with the denoiser of the variant it was trained
as — from a nai3 checkpoint folder or a model a researcher holds (a diffusers SDXL folder, a
single-file SDXL checkpoint). The sweep and every probe reach a model through this one loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nai3train.checkpoint import load_model_meta
from nai3train.config import VariantConfig, from_dict, to_dict
from nai3train.diffusion import Denoiser
from nai3train.models import ModelBundle, load_bundle
from nai3train.variant import build_denoiser

from .prompts import PromptSet


@dataclass
class LoadedCheckpoint:
    """A model bundle with the denoiser of the variant it was trained as."""

    bundle: ModelBundle
    denoiser: Denoiser
    variant: VariantConfig
    size: tuple[int, int] | None = None  # (height, width) to sample at; None: the bundle's native size
    source: str = ""  # where the parameterisation came from (checkpoint metadata, scheduler config, user)
    _conditioning: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size or self.bundle.native_size

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.bundle.sample_shape(*self.image_size)

    def at_size(self, size: tuple[int, int], rescaled: bool = True) -> "LoadedCheckpoint":
        """The same model sampled at ``size`` with the σ table scaled for that canvas (its own
        dimension scale, when the variant uses one), as the larger canvas would have been trained;
        ``rescaled=False``: the native canvas's table unchanged (the naive start on a larger canvas)."""
        dim = self.bundle.sample_dim(size if rescaled else self.image_size)
        denoiser = build_denoiser(self.bundle.network, self.variant, dim)
        return LoadedCheckpoint(self.bundle, denoiser, self.variant, size, self.source, self._conditioning)

    def conditioning(self, ps: PromptSet, rows: slice) -> tuple[dict, dict]:
        """(cond, uncond) for the prompts of ``rows``, encoded once per checkpoint: every point of the
        sweep and every probe reuses them (for SDXL that is two text encoders not run again)."""
        texts = tuple(ps.texts[rows])
        key = (texts, self.image_size)
        if key not in self._conditioning:
            sizes = [self.image_size] * len(texts)
            self._conditioning[key] = (self.bundle.encode(list(texts), sizes), self.bundle.uncond(len(texts), sizes))
        return self._conditioning[key]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint(folder: str | Path, ema: bool = True, device: torch.device | str | None = None,
                    overrides: dict | None = None) -> LoadedCheckpoint:
    """The bundle saved in a nai3 checkpoint folder (EMA weights by default), on the GPU when there
    is one, with the denoiser rebuilt from the variant and σ scale recorded at training time."""
    meta = load_model_meta(folder)
    if not isinstance(meta.get("sample_dim"), int) or meta["sample_dim"] <= 0:
        raise ValueError(f"nai3 checkpoint metadata {folder}/meta.json: 'sample_dim' must be a positive integer")
    bundle = load_bundle(folder, "ema.safetensors" if ema else "model.safetensors")
    bundle.to(device or default_device())
    variant = from_dict(VariantConfig, meta["variant"], "variant")
    source = f"{folder}/meta.json"
    if overrides:
        variant = from_dict(VariantConfig, {**to_dict(variant), **overrides}, "variant")
        source += " + user overrides"
    return LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, meta["sample_dim"]), variant,
                            source=source)


def load_model(ref: str | Path, prediction: str | None = None, ztsnr: bool | None = None,
               resolution: int | None = None, device: torch.device | str | None = None,
               model_config: str | None = None) -> LoadedCheckpoint:
    """Any model nai3 can evaluate: a nai3 checkpoint folder, or a model a researcher holds (a
    diffusers SDXL folder, or a single-file SDXL checkpoint with ``model_config``, the local diffusers
    folder for its configs and tokenizers). ``prediction`` ('eps'/'v') and ``ztsnr`` override what the model says
    about itself; the σ table is always nai3's own (SDXL betas, exact ∞ with ZTSNR), never a
    scheduler's clamp or spacing."""
    from nai3train.models import load_pretrained

    path = Path(ref)
    if (path / "meta.json").is_file():
        given = {k: v for k, v in (("prediction", prediction), ("ztsnr", ztsnr)) if v is not None}
        ck = load_checkpoint(path, device=device, overrides=given)
    else:
        bundle, found = load_pretrained(str(path), model_config)
        bundle.to(device or default_device())
        ck = pretrained_checkpoint(bundle, found, path.name, prediction, ztsnr)
    if resolution:
        ck.size = (resolution, resolution)
    return ck


def pretrained_checkpoint(bundle: ModelBundle, found: dict, name: str, prediction: str | None = None,
                          ztsnr: bool | None = None) -> LoadedCheckpoint:
    """A pretrained model's bundle with the parameterisation it declares (``found``: prediction,
    ztsnr, source), unless the user overrides it; the σ table is SDXL's own at any resolution."""
    chosen = {"prediction": prediction or found["prediction"], "ztsnr": found["ztsnr"] if ztsnr is None else ztsnr}
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"
    variant = VariantConfig(name=name, dimension_scale=False, **chosen)
    source = found["source"] + ("" if prediction is None and ztsnr is None else " + user overrides")
    return LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, bundle.sample_dim()), variant,
                            source=source)
