"""The SDXL-base architecture with random weights, built in memory with diffusers' and transformers'
own classes (nothing downloaded): the UNet, VAE and both CLIP text encoders at SDXL's published
sizes, or tiny stand-ins of the same kinds for a CPU. Tokenizers are a character vocabulary (the
real BPE vocabularies are weights we do not have); shapes and sequence length (77) are SDXL's.
"""
from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1), attention_head_dim=(4, 8), cross_attention_dim=64, norm_num_groups=8,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,
)
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, sample_size=1024, scaling_factor=0.13025)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                sample_size=32, scaling_factor=0.13025)
# (hidden, layers, heads, intermediate): CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers
SDXL_TEXT = ((768, 12, 12, 3072), (1280, 32, 20, 5120))
TINY_TEXT = ((32, 2, 2, 64), (32, 2, 2, 64))


def build_pipeline(tiny: bool, device: str | torch.device, unet_dtype: torch.dtype = torch.float32):
    """A StableDiffusionXLPipeline with random weights at SDXL's sizes (or tiny ones). Modules are
    built directly on ``device`` (initialising 2.6 B parameters on a GPU takes seconds, not minutes)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    chars = string.ascii_lowercase + string.digits + ",_-. "
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizers = [CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)
                      for _ in range(2)]
    encoders = []
    for (hidden, layers, heads, inter), cls in zip(TINY_TEXT if tiny else SDXL_TEXT,
                                                   (CLIPTextModel, CLIPTextModelWithProjection)):
        cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=inter,
                             num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                             projection_dim=hidden, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        with torch.device(device):
            encoders.append(cls(cfg).eval())
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SDXL_UNET)).to(unet_dtype).eval()
        vae = AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE)).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLPipeline(vae=vae, unet=unet, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                     tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], scheduler=scheduler)
