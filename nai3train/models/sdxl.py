"""SDXL from a local ``from_pretrained`` folder: its model bundle (evaluation) and training adapter.

Nothing is downloaded: ``load_sdxl`` reads ``unet/``, ``vae/``, ``text_encoder/``,
``text_encoder_2/``, ``tokenizer/`` and ``tokenizer_2/`` under one folder (the diffusers layout of
stabilityai/stable-diffusion-xl-base-1.0) and names the first missing piece. Text conditioning is
SDXL's: the penultimate hidden states of both CLIP encoders concatenated (the paper's "CLIP
context" note), the pooled projection of the second, and the size conditioning ``time_ids``.

Training caches the frozen parts on disk, keyed by content hash: VAE latents of each image's
centre crop in its bucket (raw, unscaled — normalisation is the variant's business) and the text
embeddings of each prompt; only their keys stay in memory, and each batch reads its own from disk,
so a dataset of any size trains in bounded memory. The UNet trains with gradient checkpointing and SDPA attention, under
bf16 autocast on GPU; noise and the model input stay fp32 (σ up to 20000 overflows fp16).
"""
from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..ops.atomic import atomic_target
from .bundle import ModelBundle, Prompt, Sizes, register, time_ids

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def vae_factor(vae_config) -> int:
    """How much the VAE (``AutoencoderKL`` config or its config.json) shrinks each side: 8 for SDXL's."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


@dataclass
class SDXLComponents:
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    text_encoder_2: nn.Module
    tokenizer: object
    tokenizer_2: object
    path: str

    @property
    def vae_factor(self) -> int:
        return vae_factor(self.vae.config)


def load_sdxl(path: str | Path, device: str | torch.device = "cpu") -> SDXLComponents:
    """Load every SDXL component from the local folder ``path``; a clear error names what is missing."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"SDXL folder {root} does not exist (a diffusers from_pretrained layout with "
                                f"{', '.join(COMPONENTS)})")
    for c in COMPONENTS:
        if not (root / c).is_dir():
            raise FileNotFoundError(f"SDXL component folder {root / c} is missing")
    kw = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kw).to(device)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **kw).to(device)
    te1 = CLIPTextModel.from_pretrained(root / "text_encoder", **kw).to(device)
    te2 = CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2", **kw).to(device)
    tok1 = CLIPTokenizer.from_pretrained(root / "tokenizer", **kw)
    tok2 = CLIPTokenizer.from_pretrained(root / "tokenizer_2", **kw)
    for frozen in (vae, te1, te2):
        frozen.requires_grad_(False).eval()
    return SDXLComponents(unet, vae, te1, te2, tok1, tok2, str(root))


@torch.no_grad()
def encode_prompts(c: SDXLComponents, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL text conditioning: (penultimate states of both encoders concatenated, pooled of encoder 2)."""
    states = []
    pooled = None
    for tok, enc in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(enc.device)
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        if enc is c.text_encoder_2:
            pooled = out.text_embeds
    return torch.cat(states, dim=-1), pooled


@torch.no_grad()
def encode_latents(vae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Raw (unscaled) latents: the mean of the VAE posterior for images in [−1, 1]."""
    return vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean.float()


class CacheEntryMissing(RuntimeError):
    """A latent or text-embedding cache file vanished while a run was using it."""


class DiskCache:
    """Tensors on disk keyed by a content hash: one safetensors file per key, written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts: bytes | str) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else p.encode())
        return h.hexdigest()[:32]

    def get(self, key: str) -> dict[str, torch.Tensor]:
        """The tensors of ``key``; ``CacheEntryMissing`` when its file is gone (filled at the start,
        so only a deletion during the run gets here)."""
        f = self.folder / f"{key}.safetensors"
        try:
            return load_file(str(f))
        except FileNotFoundError:
            raise CacheEntryMissing(
                f"cache file {f} disappeared during the run (deleted or cleaned up by something else); start the "
                "run again: it resumes from its last checkpoint and fills the cache again") from None

    def has(self, key: str) -> bool:
        return (self.folder / f"{key}.safetensors").is_file()

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        f = self.folder / f"{key}.safetensors"
        with atomic_target(f) as tmp:  # a private temporary name: two ranks filling one key never share it
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def _fingerprint(module: nn.Module) -> str:
    """Identity of a frozen component: its config and a hash of its weights, so swapped weights
    never hit a stale cache."""
    cfg = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SDXLNetwork(nn.Module):
    """F(x_in, c_noise, cond) over SDXL's UNet; cond = prompt_embeds, pooled, time_ids."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
        """fp32 in, fp32 out. Half-precision weights (evaluation on a GPU) run as they are, on the
        scaled input c_in·x cast to their dtype (O(1) at any σ, so bf16 holds it); fp32 weights
        (training) run under bf16 autocast on a GPU, whose per-op casts cost ~15 % at sampling."""
        dev = x_in.device
        dtype = next(self.unet.parameters()).dtype  # ModelMixin.dtype walks every module: 9 % of a tiny step
        if dtype != torch.float32:
            return self._unet(x_in.to(dtype), c_noise, cond, dtype).float()
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
        with amp:
            return self._unet(x_in, c_noise, cond, torch.float32).float()

    def _unet(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict, dtype: torch.dtype) -> torch.Tensor:
        dev = x.device
        return self.unet(x, c_noise.to(dev, torch.float32).expand(x.shape[0]),
                         encoder_hidden_states=cond["prompt_embeds"].to(dev, dtype),
                         added_cond_kwargs={"text_embeds": cond["pooled"].to(dev, dtype),
                                            "time_ids": cond["time_ids"].to(dev, dtype)}).sample


class SDXLAdapter:
    """What the trainer needs from SDXL: the trainable network (fp32 weights, bf16 autocast on a GPU),
    latent batches, prompt conditioning. Its checkpoints are evaluated through ``SDXLBundle``."""

    kind = "sdxl"

    def __init__(self, path: str | Path, data, cache_dir: str | Path, device: str = "cpu", resolution: int = 1024):
        self.normalization = None
        self.resolution = resolution
        self.c = load_sdxl(path, device)
        unet = self.c.unet  # gradient checkpointing: the trainer's choice (train.gradient_checkpointing)
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())  # scaled_dot_product_attention
        self.network = SDXLNetwork(unet)
        self.data = data
        self.channels = int(self.c.vae.config.latent_channels)
        f = self.c.vae_factor
        self.sample_dim = self.channels * data.max_area // (f * f)
        self.cache = cache = DiskCache(cache_dir)
        vae_id = _fingerprint(self.c.vae)
        te_id = _fingerprint(self.c.text_encoder) + _fingerprint(self.c.text_encoder_2)
        # only the cache keys stay in memory: a batch reads its latents and embeddings from disk
        self.latent_keys: list[str] = []
        self.time_ids: list[torch.Tensor] = []
        for i in tqdm(range(len(data)), desc="VAE latents", leave=False, disable=len(data) < 64):
            arr, crop = data.crop(i, None)  # centre crop: latents are cached once per image
            key = DiskCache.key(vae_id, arr.tobytes(), str(arr.shape))
            if not cache.has(key):
                x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
                cache.put(key, {"latent": encode_latents(self.c.vae, x)[0]})
            self.latent_keys.append(key)
            self.time_ids.append(torch.tensor(crop.time_ids(), dtype=torch.float32))
        prompts = [", ".join(t).replace("_", " ") for t in data.tags]
        self.prompt_keys: list[str] = []
        for p in tqdm(prompts + [""], desc="text embeddings", leave=False, disable=len(prompts) < 64):
            key = DiskCache.key(te_id, p)
            if not cache.has(key):
                e, pl = encode_prompts(self.c, [p])
                cache.put(key, {"prompt_embeds": e[0], "pooled": pl[0]})
            self.prompt_keys.append(key)
        self.empty = len(prompts)  # index of the empty prompt: the unconditional input for CFG

    def batch(self, idx: list[int], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        latents = [self.cache.get(self.latent_keys[i])["latent"] for i in idx]
        return torch.stack(latents), torch.stack([self.time_ids[i] for i in idx])

    def cond(self, idx: list[int], dropped: torch.Tensor, time_ids: torch.Tensor) -> dict:
        rows = [self.cache.get(self.prompt_keys[self.empty if d else i]) for i, d in zip(idx, dropped.tolist())]
        return {"prompt_embeds": torch.stack([r["prompt_embeds"] for r in rows]),
                "pooled": torch.stack([r["pooled"] for r in rows]), "time_ids": time_ids}

    def save_config(self, folder: str | Path) -> Path:
        """The checkpoint's config.json: an ``SDXLBundle`` (frozen parts from ``path``, the trained UNet
        from the checkpoint's weights, the variant's normalisation of raw latents)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        channels = self.channels
        norm = self.normalization.to_dict() if self.normalization else {"mean": [0.0] * channels,
                                                                       "std": [1.0] * channels}
        (folder / "config.json").write_text(json.dumps({"kind": "sdxl", "path": self.c.path,
                                                        "resolution": self.resolution, "normalization": norm},
                                                       indent=2))
        return folder


def scheduler_parameterization(path: str | Path) -> dict:
    """What a diffusers folder says about its parameterisation: ``prediction`` ('eps'/'v') from the
    scheduler's ``prediction_type`` and ``ztsnr`` from ``rescale_betas_zero_snr`` (absent: ε, no ZTSNR)."""
    f = Path(path) / "scheduler" / "scheduler_config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    kind = cfg.get("prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"{f}: prediction_type {kind!r} is not supported (epsilon or v_prediction)")
    return {"prediction": "v" if kind == "v_prediction" else "eps", "ztsnr": bool(cfg.get("rescale_betas_zero_snr")),
            "source": str(f) if f.is_file() else "default (no scheduler config)"}


@register
class SDXLBundle(ModelBundle):
    """SDXL as a model bundle: the UNet as F, both CLIP encoders for prompts (penultimate states
    concatenated, pooled embedding of the second), SDXL micro-conditioning for the target size,
    the empty prompt's embeddings as the unconditional input, and the VAE for ``decode``.

    Model space: a diffusers SDXL UNet works on latents × ``scaling_factor``, which this bundle
    expresses as a fixed normalisation (mean 0, std 1/scaling_factor), so ``to_pixels`` is the one
    map back for pretrained models and for nai3 checkpoints trained on normalised raw latents.
    ``path`` is the diffusers folder that holds the frozen parts (and the UNet unless a nai3
    checkpoint supplies trained weights). The VAE always decodes in float32 (SDXL's VAE overflows
    in fp16); on a GPU the UNet runs in bf16 weights (see ``to``), noise and sampler state in fp32.
    """

    kind = "sdxl"

    def __init__(self, path: str, resolution: int | None = None, normalization: dict | None = None,
                 components: SDXLComponents | None = None):
        self.components = components or load_sdxl(path)
        vae = self.components.vae
        if normalization is None:
            sf = float(vae.config.scaling_factor)
            channels = int(vae.config.latent_channels)
            normalization = {"mean": [0.0] * channels, "std": [1.0 / sf] * channels}
        super().__init__(normalization)
        self.path = str(path)
        self.network = SDXLNetwork(self.components.unet)
        f = self.components.vae_factor
        self.resolution = int(resolution or self.components.unet.config.sample_size * f)

    @property
    def config(self) -> dict:
        return {"path": self.path, "resolution": self.resolution,
                "normalization": self.normalization.to_dict() if self.normalization else None}

    @property
    def native_size(self) -> tuple[int, int]:
        return self.resolution, self.resolution

    @property
    def size_multiple(self) -> int:
        return self.components.vae_factor * 2 ** (len(self.components.unet.config.block_out_channels) - 1)

    def sample_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.components.vae_factor
        if height % f or width % f:
            raise ValueError(f"SDXL sizes must be multiples of the VAE factor {f}, got {height}×{width}")
        return int(self.components.vae.config.latent_channels), height // f, width // f

    def encode(self, prompts: Sequence[Prompt], sizes: Sizes) -> dict[str, torch.Tensor]:
        texts = [p if isinstance(p, str) else ", ".join(p) for p in prompts]
        texts = [t.replace("_", " ") for t in texts]
        embeds, pooled = encode_prompts(self.components, texts)
        dev = self.device
        return {"prompt_embeds": embeds.to(dev), "pooled": pooled.to(dev),
                "time_ids": time_ids(sizes, len(texts)).to(dev)}

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        out = [vae.decode(x[i:i + 8].to(vae.device, torch.float32)).sample for i in range(0, len(x), 8)]
        return torch.cat(out).float().clamp(-1, 1)

    def to(self, device=None, dtype=None) -> "SDXLBundle":
        """Move every component; on a GPU the UNet also goes to bf16 weights (``dtype`` overrides),
        as evaluation runs it, unless it is being trained (fp32 master weights, bf16 autocast)."""
        c = self.components
        for m in (c.unet, c.vae, c.text_encoder, c.text_encoder_2):
            m.to(device=device)
        if dtype is None and device is not None and torch.device(device).type == "cuda" and not c.unet.training:
            dtype = torch.bfloat16
        if dtype is not None:
            c.unet.to(dtype=dtype)
        return self

    def eval(self) -> "SDXLBundle":
        self.components.unet.eval()
        return self

    @classmethod
    def from_diffusers(cls, path: str | Path) -> "SDXLBundle":
        """A pretrained diffusers SDXL folder as it is (its own UNet, latents × scaling_factor)."""
        return cls(str(path)).eval()

    @classmethod
    def from_pipeline(cls, pipe, name: str = "in-memory") -> "SDXLBundle":
        """A StableDiffusionXLPipeline already in memory (same modules, nothing copied or reloaded):
        for notebooks and benches that built or modified the pipeline themselves."""
        c = SDXLComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.tokenizer,
                           pipe.tokenizer_2, name)
        return cls(name, components=c).eval()


def load_sdxl_folder(path: str | Path) -> tuple[SDXLBundle, dict]:
    """(bundle, parameterisation read from the folder) for a diffusers SDXL folder, offline."""
    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise FileNotFoundError(f"{root} is not a diffusers pipeline folder: {root / 'model_index.json'} is missing")
    return SDXLBundle.from_diffusers(root), scheduler_parameterization(root)


MARKER_KEYS = ("v_pred", "ztsnr")


def single_file_markers(path: str | Path) -> dict[str, bool]:
    """The marker keys community v-prediction checkpoints carry in their state dict (``v_pred``,
    ``ztsnr``; diffusers ignores them). Only the safetensors header is read."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    return {k: k in keys for k in MARKER_KEYS}


def load_sdxl_single_file(path: str | Path, model_config: str | Path) -> tuple[SDXLBundle, dict]:
    """(bundle, parameterisation) for a single-file SDXL checkpoint in the original layout, with the
    configs and tokenizers of the local diffusers folder ``model_config``, offline. The
    parameterisation: the checkpoint's marker keys win over the folder's scheduler config."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(model_config), local_files_only=True)
    found = scheduler_parameterization(model_config)
    marks = single_file_markers(path)
    notes = []
    if marks["v_pred"]:
        found["prediction"] = "v"
        notes.append("v_pred")
    if marks["ztsnr"]:
        found["ztsnr"] = True
        notes.append("ztsnr")
    if notes:
        found["source"] = f"marker keys {', '.join(notes)} in {Path(path).name}; otherwise " + found["source"]
    return SDXLBundle.from_pipeline(pipe, name=str(path)), found
