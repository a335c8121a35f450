"""The model bundle: the one interface through which training and evaluation reach a model.

A bundle holds the network F(x_in, c_noise, cond) and everything around it that differs between
models — the sample shape, prompt encoding (cond and the unconditional input for CFG), the map
back to pixels (inverse per-channel normalisation, then a VAE decode for latent models), device
placement, and symmetric ``save_pretrained(dir)`` / ``from_pretrained(dir)`` in the diffusers
manner: the constructor arguments are the saved ``config.json``. Nothing in evaluation knows
which bundle it holds; the kind recorded in ``config.json`` picks the class on load.

Prompts are danbooru-style text (``"red_circle, black_background"``) or tag lists; sizes are the
target (height, width) in pixels, or full SDXL ``time_ids`` rows (orig h, w, crop top, left,
target h, w) when training supplies the crop it actually took.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.normalize import ChannelStats

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
Prompt = str | Sequence[str]
Sizes = Sequence[tuple[int, int]] | torch.Tensor


def time_ids(sizes: Sizes, n: int) -> torch.Tensor:
    """SDXL micro-conditioning rows for ``n`` samples: an uncropped image of each target size."""
    if torch.is_tensor(sizes):
        return sizes.float()
    rows = [[h, w, 0, 0, h, w] for h, w in sizes]
    if len(rows) == 1 and n > 1:
        rows = rows * n
    return torch.tensor(rows, dtype=torch.float32)


class ModelBundle(ABC):
    """What every model offers to the trainer, the sweep and the probes."""

    kind: ClassVar[str]
    network: nn.Module

    def __init__(self, normalization: dict | None = None) -> None:
        self.normalization = ChannelStats(tuple(normalization["mean"]), tuple(normalization["std"])) \
            if normalization else None

    # -- what a subclass provides
    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments: written as config.json, read back by ``from_pretrained``."""

    @property
    @abstractmethod
    def native_size(self) -> tuple[int, int]:
        """The (height, width) in pixels the model was built or trained for."""

    @abstractmethod
    def sample_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one sample in model space for an image of ``height × width`` pixels."""

    @abstractmethod
    def encode(self, prompts: Sequence[Prompt], sizes: Sizes) -> dict[str, torch.Tensor]:
        """Conditioning for each prompt; the empty prompt is the unconditional input."""

    @abstractmethod
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space (before normalisation) → pixels in [−1, 1]."""

    # -- shared behaviour
    def uncond(self, n: int, sizes: Sizes) -> dict[str, torch.Tensor]:
        """The unconditional input for classifier-free guidance: the empty prompt."""
        return self.encode([""] * n, sizes)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Samples in the model's (normalised) space → pixels in [−1, 1]."""
        if self.normalization is not None:
            x = self.normalization.invert(x)
        return self.decode(x)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (each UNet down-sampling halves the side)."""
        return 1

    def sample_dim(self, size: tuple[int, int] | None = None) -> int:
        """Values per sample (D of the dimension-equivalent σ scale) at ``size`` or the native size."""
        h, w = size or self.native_size
        n = 1
        for s in self.sample_shape(h, w):
            n *= s
        return n

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ModelBundle":
        self.network.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "ModelBundle":
        self.network.eval()
        return self

    def save_config(self, folder: str | Path) -> Path:
        """``config.json`` alone: a training checkpoint writes its weights itself (raw and EMA)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps({"kind": self.kind, **self.config}, indent=2))
        return folder

    def save_pretrained(self, folder: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        weights_name: str = WEIGHTS_NAME) -> Path:
        """``config.json`` (kind + constructor arguments) and the network's weights as safetensors."""
        folder = self.save_config(folder)
        state = state_dict if state_dict is not None else self.network.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / weights_name))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, weights_name: str = WEIGHTS_NAME) -> "ModelBundle":
        config = read_config(folder)
        kind = config.pop("kind")
        if kind != cls.kind:
            raise ValueError(f"{folder} holds a {kind!r} model, not {cls.kind!r}")
        try:
            bundle = cls(**config)
        except (TypeError, ValueError) as e:  # keys another version wrote, or values out of range
            raise ValueError(f"{Path(folder) / CONFIG_NAME} does not describe a {cls.kind!r} model: {e}") from None
        weights = Path(folder) / weights_name
        if not weights.is_file():
            raise FileNotFoundError(f"model weights {weights} are missing")
        from .files import check_weights_file

        check_weights_file(weights, "model weights")
        try:
            bundle.network.load_state_dict(load_file(str(weights)))
        except (RuntimeError, OSError) as e:  # wrong keys or shapes; a file safetensors cannot read
            raise ValueError(f"model weights {weights} do not fit the model in {CONFIG_NAME}: {str(e)[:300]}") from None
        return bundle.eval()


def read_config(folder: str | Path) -> dict[str, Any]:
    f = Path(folder) / CONFIG_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{folder} holds no model bundle: {f} is missing")
    return read_json_object(f, "model config", ("kind",))


def read_json_object(f: Path, what: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from a file nai3 wrote — checked, since a user may hand over any file: not JSON,
    not an object, or a required key missing is a ValueError naming the file and the key."""
    try:
        doc = json.loads(f.read_text(errors="replace"))
    except ValueError as e:
        raise ValueError(f"{what} {f} is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} {f} must be a JSON object, not {type(doc).__name__}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise ValueError(f"{what} {f} lacks {', '.join(map(repr, missing))}: not written by nai3, or damaged")
    return doc


BUNDLES: dict[str, type[ModelBundle]] = {}


def register(cls: type[ModelBundle]) -> type[ModelBundle]:
    BUNDLES[cls.kind] = cls
    return cls


def load_bundle(folder: str | Path, weights_name: str = WEIGHTS_NAME) -> ModelBundle:
    """The bundle saved in ``folder``, of whichever kind its config.json names."""
    kind = read_config(folder).get("kind")
    if kind not in BUNDLES:
        raise NotImplementedError(f"{folder}: no model bundle of kind {kind!r} can be loaded for evaluation "
                                  f"(known kinds: {sorted(BUNDLES)})")
    return BUNDLES[kind].from_pretrained(folder, weights_name)
