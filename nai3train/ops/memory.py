"""How much memory an SDXL training step needs, estimated on the meta device (no weights, no GPU).

``train.gradient_checkpointing: auto`` asks this whether the step fits the device without
recomputing activations. The estimate has two parts:

* **state**: bytes per trainable parameter — fp32 weights (4), gradients (4), AdamW's two moments
  (8), and nai3's EMA (4) when there is one;
* **activations**: every tensor autograd saves for the backward pass in one forward of the real
  architecture at the configured batch and latent size, counted by ``saved_tensors_hooks`` (each
  storage once). bf16 autocast is emulated above autograd by ``_Autocast``: matmuls, convolutions
  and attention take bf16 copies of their inputs and weights (the copies autograd saves), the
  norms run in fp32 — CUDA autocast's lists for the ops a UNet uses.

The one GPU figure we have checks it (tests/test_memory.py): the bare diffusers loop at batch 4,
1024², without checkpointing or EMA, peaked at 76.2 GiB on an H200.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)
GiB = 1 << 30
STATE_BYTES = {"weights": 4, "gradients": 4, "adamw": 8}
EMA_BYTES = 4
HEADROOM = 0.9  # of the device's memory: the allocator's fragmentation and the CUDA context

_BF16 = {F.conv2d, F.linear, torch.matmul, torch.bmm, torch.baddbmm, F.scaled_dot_product_attention}
_FP32 = {F.group_norm, F.layer_norm, torch.softmax, F.softmax}


class _Autocast(TorchFunctionMode):
    """bf16 autocast's casts, made where autograd sees them (so what it saves has autocast's dtype),
    and attention as the fused kernels a GPU runs it with: they save q, k, v, the output and one
    fp32 log-sum-exp per query, never the N×N probabilities the math path on the meta device would."""

    def __init__(self, amp: bool, save: Callable[[torch.Tensor], None]):
        super().__init__()
        self.amp, self.save = amp, save

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        want = (torch.bfloat16 if func in _BF16 else torch.float32 if func in _FP32 else None) if self.amp else None
        if want is not None:
            args = tuple(a.to(want) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
            kwargs = {k: v.to(want) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention:
            with torch.no_grad():
                out = func(*args, **kwargs)
            q = args[0]
            for t in (*args[:3], out):
                self.save(t)
            self.save(torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device))  # log-sum-exp
            return out.requires_grad_()
        return func(*args, **kwargs)


@dataclass(frozen=True)
class StepMemory:
    """One training step's peak, estimated: bytes of state and of saved activations."""

    params: int
    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.state + self.activations

    def line(self) -> str:
        return (f"{self.total / GiB:.1f} GiB ({self.params / 1e9:.2f} B parameters: state {self.state / GiB:.1f} GiB, "
                f"activations {self.activations / GiB:.1f} GiB)")


def unet_inputs(unet: torch.nn.Module, batch: int, latent: int, text_len: int = 77,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Random inputs of a diffusers SDXL-style UNet's shapes — (latents, timesteps, keyword arguments:
    text states, pooled text embedding and size conditioning) — on ``device`` (the default device
    if None, e.g. meta inside ``with torch.device("meta")``)."""
    c = unet.config
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    x = torch.randn(batch, c.in_channels, latent, latent, device=device)
    t = torch.full((batch,), 500.0, device=device)
    return x, t, {"encoder_hidden_states": torch.randn(batch, text_len, c.cross_attention_dim, device=device),
                  "added_cond_kwargs": {"text_embeds": torch.randn(batch, pooled, device=device),
                                        "time_ids": torch.randn(batch, 6, device=device)}}


def saved_activation_bytes(unet: torch.nn.Module, batch: int, latent: int, text_len: int = 77,
                           amp: bool = True) -> int:
    """Bytes autograd saves in one forward of the diffusers UNet ``unet`` (on the meta device)."""
    storages: dict[int, int] = {}
    params = {p.untyped_storage()._cdata for p in unet.parameters()}
    kept = []  # alive until counted: a freed meta storage's address may be reused

    def save(t: torch.Tensor) -> torch.Tensor:
        kept.append(t)
        s = t.untyped_storage()
        if s._cdata not in params:
            storages[s._cdata] = s.nbytes()
        return t

    with torch.device("meta"):
        x, t, kwargs = unet_inputs(unet, batch, latent, text_len)
        with torch.autograd.graph.saved_tensors_hooks(save, lambda t: t), _Autocast(amp, save):
            unet(x, t, **kwargs)
    return sum(storages.values())


def step_memory(unet_config: dict, batch: int, latent: int, ema: bool = True, amp: bool = True) -> StepMemory:
    """The estimate for the UNet of ``unet_config`` (diffusers keyword arguments) at ``batch`` latents
    of ``latent``², without gradient checkpointing."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    unet.train()
    n = sum(p.numel() for p in unet.parameters())
    per_param = sum(STATE_BYTES.values()) + (EMA_BYTES if ema else 0)
    return StepMemory(n, n * per_param, saved_activation_bytes(unet, batch, latent, amp=amp))


def device_memory() -> int | None:
    """Bytes the training device offers: the GPU's total, else the host's available memory."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return available_memory()


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def checkpointing_needed(cfg) -> bool:
    """'auto''s choice: on when the step without it would not fit ``HEADROOM`` of the device."""
    if cfg.model.kind != "sdxl":
        return False  # the tiny model's step is a few MB
    from ..models.sdxl import vae_factor

    root = Path(cfg.model.path)
    unet_config = json.loads((root / "unet" / "config.json").read_text())
    latent = cfg.data.resolution // vae_factor(json.loads((root / "vae" / "config.json").read_text()))
    est = step_memory(unet_config, cfg.train.batch_size, latent, ema=True, amp=torch.cuda.is_available())
    have = device_memory()
    need = have is None or est.total > HEADROOM * have
    log.info("training step without gradient checkpointing: %s against %s of the device",
             est.line(), f"{have / GiB:.1f} GiB" if have else "unknown memory")
    return need
