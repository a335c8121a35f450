"""A tiny tag-conditioned ``diffusers.UNet2DConditionModel`` that trains on 2 CPU cores.

It takes the same conditioning path as SDXL's UNet: cross-attention on a token sequence (here
one learned embedding per danbooru tag instead of CLIP hidden states), a pooled embedding
(the masked mean of the tag embeddings, standing in for OpenCLIP-G's pooled output) and SDXL's
size conditioning ``time_ids`` = (orig_h, orig_w, crop_top, crop_left, target_h, target_w),
through ``addition_embed_type="text_time"``. The empty prompt (all PAD tokens) is the
unconditional input for classifier-free guidance.
"""
from __future__ import annotations

from typing import Sequence

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from ..data.folder import parse_tags
from ..data.tags import PAD, Vocabulary
from .bundle import ModelBundle, Prompt, Sizes, register, time_ids


class TinyTagUNet(nn.Module):
    def __init__(self, vocab_size: int, resolution: int, block_out_channels: tuple[int, ...] = (32, 64, 64),
                 cross_attention_dim: int = 64, max_tags: int = 8, time_embed_dim: int = 8):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "resolution": resolution,
                       "block_out_channels": list(block_out_channels), "cross_attention_dim": cross_attention_dim,
                       "max_tags": max_tags, "time_embed_dim": time_embed_dim}
        n = len(block_out_channels)
        self.tag_embedding = nn.Embedding(vocab_size + 1, cross_attention_dim, padding_idx=PAD)
        self.unet = UNet2DConditionModel(
            sample_size=resolution, in_channels=3, out_channels=3, layers_per_block=1,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
            addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=cross_attention_dim + 6 * time_embed_dim,
        )

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict) -> torch.Tensor:
        tag_ids = cond["tag_ids"]
        emb = self.tag_embedding(tag_ids)
        mask = (tag_ids != PAD).unsqueeze(-1).to(emb.dtype)
        pooled = (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        added = {"text_embeds": pooled, "time_ids": cond["time_ids"].to(emb.dtype)}
        c_noise = c_noise.to(x_in.device, torch.float32).expand(x_in.shape[0])
        return self.unet(x_in, c_noise, encoder_hidden_states=emb, added_cond_kwargs=added).sample


@register
class TinyBundle(ModelBundle):
    """The embedded benchmark's model: TinyTagUNet on pixels, prompts as danbooru tags."""

    kind = "tiny"

    def __init__(self, vocab: Sequence[str], resolution: int, block_out_channels: Sequence[int] = (32, 64, 64),
                 cross_attention_dim: int = 64, max_tags: int = 8, time_embed_dim: int = 8,
                 normalization: dict | None = None):
        super().__init__(normalization)
        self.vocab = Vocabulary(tuple(vocab))
        self.resolution = resolution
        self.max_tags = max_tags
        self.network = TinyTagUNet(len(self.vocab), resolution, tuple(block_out_channels), cross_attention_dim,
                                   max_tags, time_embed_dim)

    @property
    def config(self) -> dict:
        net = self.network.config
        return {"vocab": list(self.vocab.tags), "resolution": self.resolution,
                "block_out_channels": net["block_out_channels"], "cross_attention_dim": net["cross_attention_dim"],
                "max_tags": self.max_tags, "time_embed_dim": net["time_embed_dim"],
                "normalization": self.normalization.to_dict() if self.normalization else None}

    @property
    def native_size(self) -> tuple[int, int]:
        return self.resolution, self.resolution

    def sample_shape(self, height: int, width: int) -> tuple[int, ...]:
        return 3, height, width

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.network.config["block_out_channels"]) - 1)

    def encode(self, prompts: Sequence[Prompt], sizes: Sizes) -> dict[str, torch.Tensor]:
        tags = [parse_tags(p) if isinstance(p, str) else list(p) for p in prompts]
        dev = self.device
        return {"tag_ids": self.vocab.ids(tags, self.max_tags).to(dev), "time_ids": time_ids(sizes, len(tags)).to(dev)}

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x
