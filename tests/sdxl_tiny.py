"""Tiny random-weight SDXL components, built and saved with the real save_pretrained functions."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def build_tiny_sdxl(root: Path, hidden: int = 16, prediction_type: str = "epsilon", ztsnr: bool = False,
                    hidden_2: int | None = None) -> Path:
    """A complete diffusers SDXL folder (model_index.json, scheduler/ and every component) with the
    shapes diffusers uses for its own SDXL pipeline tests, saved by StableDiffusionXLPipeline.
    ``hidden_2``: the second text encoder's width (default ``hidden``); a single-file checkpoint
    needs them to differ, as in SDXL (768 vs 1280): diffusers tells the encoders apart by width."""
    hidden_2 = hidden_2 or hidden
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden + hidden_2, attention_head_dim=4, norm_num_groups=8, addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=hidden_2 + 6 * 4,
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
    def cfg(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                              projection_dim=width, bos_token_id=0, eos_token_id=1, pad_token_id=1)

    CLIPTextModel(cfg(hidden)).save_pretrained(root / "text_encoder")
    CLIPTextModelWithProjection(cfg(hidden_2)).save_pretrained(root / "text_encoder_2")
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


_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, pairs) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_to_original(sd: dict, cfg: dict) -> dict:
    """diffusers UNet keys → the original SDXL (LDM) layout: the inverse of what diffusers'
    single-file loader converts, written from its key scheme."""
    import re

    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = {**DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"]}
    per = cfg["layers_per_block"] + 1
    up_attn = {int(k.split(".")[1]) for k in sd if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    out = {}
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + b * per + j
            out[f"input_blocks.{i}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"] = v
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            out[f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"] = v
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", k):
            out[f"middle_block.{2 * int(m[1])}.{_rename(m[2], _RESNET)}"] = v
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", k):
            out[f"middle_block.1.{m[1]}"] = v
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = b * per + j
            out[f"output_blocks.{i}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"output_blocks.{i}.1.{rest}"] = v
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            b = int(m[1])
            out[f"output_blocks.{b * per + per - 1}.{2 if b in up_attn else 1}.conv.{m[2]}"] = v
        else:
            raise KeyError(f"no original-layout name for UNet key {k}")
    return out


def _vae_to_original(sd: dict, cfg: dict) -> dict:
    import re

    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n = len(cfg["up_block_types"])
    res = (("conv_shortcut", "nin_shortcut"),)
    out = {}
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{_rename(m[3], res)}"] = v
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            out[f"encoder.down.{m[1]}.downsample.conv.{m[2]}"] = v
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", k):
            out[f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename(m[3], res)}"] = v
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", k):
            name = _rename(m[2], _VAE_ATTN)
            out[f"{m[1]}.mid.attn_1.{name}"] = v[:, :, None, None] if v.dim() == 2 else v  # 1×1 convs there
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            out[f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{_rename(m[3], res)}"] = v
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            out[f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"] = v
        else:
            raise KeyError(f"no original-layout name for VAE key {k}")
    return out


def _open_clip_to_original(sd: dict) -> dict:
    import re

    fixed = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    parts = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
             ("self_attn.out_proj", "attn.out_proj"))
    out = {}
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", k):
            qkv = [sd[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[2]}"] = torch.cat(qkv)
        elif re.fullmatch(r"text_model\.encoder\.layers\.\d+\.self_attn\.[kv]_proj\.(weight|bias)", k):
            continue  # fused into in_proj with q
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", k):
            out[f"transformer.resblocks.{m[1]}.{_rename(m[2], parts)}"] = v
        elif k.endswith("position_ids"):
            continue
        else:
            raise KeyError(f"no original-layout name for OpenCLIP key {k}")
    return out


def save_single_file(folder: Path, out: Path, markers: tuple[str, ...] = ()) -> Path:
    """The diffusers SDXL ``folder`` as ONE .safetensors in the original SDXL layout (what community
    models ship: ``model.diffusion_model.*``, ``first_stage_model.*``, ``conditioner.embedders.0/1.*``),
    plus the given marker keys (``v_pred``, ``ztsnr``) as empty tensors."""
    from safetensors.torch import load_file, save_file

    def sd(name: str) -> dict:
        return load_file(str(next((folder / name).glob("*.safetensors"))))

    cfg = lambda name: json.loads((folder / name / "config.json").read_text())  # noqa: E731
    state = {}
    state.update({f"model.diffusion_model.{k}": v for k, v in _unet_to_original(sd("unet"), cfg("unet")).items()})
    state.update({f"first_stage_model.{k}": v for k, v in _vae_to_original(sd("vae"), cfg("vae")).items()})
    state.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in sd("text_encoder").items()
                  if not k.endswith("position_ids")})
    state.update({f"conditioner.embedders.1.model.{k}": v for k, v in _open_clip_to_original(sd("text_encoder_2")).items()})
    for m in markers:
        state[m] = torch.zeros(0)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out
