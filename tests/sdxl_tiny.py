"""Tiny random-weight SDXL components, built and saved with the real save_pretrained functions."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def build_tiny_sdxl(root: Path, hidden: int = 16, prediction_type: str = "epsilon", ztsnr: bool = False) -> Path:
    """A complete diffusers SDXL folder (model_index.json, scheduler/ and every component) with the
    shapes diffusers uses for its own SDXL pipeline tests, saved by StableDiffusionXLPipeline."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * hidden, attention_head_dim=4, norm_num_groups=8, addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=hidden + 6 * 4,
    ).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=8, sample_size=16).save_pretrained(root / "vae")
    chars = string.ascii_lowercase + string.digits + ",_-."
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = root / "_tok_src"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, projection_dim=hidden,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModel(cfg).save_pretrained(root / "text_encoder")
    CLIPTextModelWithProjection(cfg).save_pretrained(root / "text_encoder_2")
    for name in ("tokenizer", "tokenizer_2"):
        CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                      model_max_length=32).save_pretrained(root / name)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       prediction_type=prediction_type, rescale_betas_zero_snr=ztsnr,
                                       timestep_spacing="leading", steps_offset=1)
    kw = {"local_files_only": True}
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(root / "vae", **kw), unet=UNet2DConditionModel.from_pretrained(root / "unet", **kw),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", **kw),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer", **kw),
        tokenizer_2=CLIPTokenizer.from_pretrained(root / "tokenizer_2", **kw), scheduler=scheduler)
    pipe.save_pretrained(root)
    return root
