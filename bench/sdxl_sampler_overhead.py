"""nai3's sampling through the SDXL bundle vs diffusers' StableDiffusionXLPipeline, side by side.

Both sample the same batch at the same resolution with Euler over the same explicit σ list and
the same CFG scale (cond and uncond in one batched UNet forward in both), from the same prompt
embeddings, ending in latents (no VAE decode in either), with the same UNet module. The model is
a tiny random-weight SDXL folder built with diffusers' own classes (default), any local diffusers
SDXL folder (``--model DIR``), or the SDXL-base architecture with random weights built in memory
(``--in-memory sdxl``; ``tiny`` for a CPU). On CUDA the UNet weights are bf16 (``--dtype``), as
diffusers users run it with ``torch_dtype=torch.bfloat16``; nai3 keeps noise and input fp32 under
autocast, diffusers feeds bf16 latents. Also printed: model FLOPs of one guided step
(``torch.utils.flop_counter``), the sampling MFU against a matmul peak measured in the same run,
and peak GPU memory. Runs alternate and swap order; medians are compared; the ratio prints last.

    .venv/bin/python bench/sdxl_sampler_overhead.py [--model DIR | --in-memory sdxl|tiny] [--batch 4] [--steps 28]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import logging as diffusers_logging
    from torch.utils.flop_counter import FlopCounterMode

    from sdxl_arch import build_pipeline  # bench/sdxl_arch.py
    from timing import measured_peak, side_by_side, sync  # bench/timing.py

    sys.path.insert(0, str(ROOT))
    from nai3eval.checkpoint import load_model, pretrained_checkpoint
    from nai3train.diffusion import sampling_sigmas
    from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state
    from nai3train.models.sdxl import SDXLBundle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="a local diffusers SDXL folder (default: a tiny random one)")
    src.add_argument("--in-memory", choices=("sdxl", "tiny"), default=None,
                     help="random weights built in memory: SDXL-base sizes (GPU) or tiny ones (CPU)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=9, help="runs of each, alternating (the tiny model on a CPU is noisy: 5 gave 0.94–1.17)")
    ap.add_argument("--resolution", type=int, default=None, help="image side (default: the model's native size)")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="UNet weights (default bf16 on CUDA)")
    a = ap.parse_args()
    diffusers_logging.set_verbosity_error()  # its advice on casting with to() concerns fp16 modules, not this
    device = "cuda" if torch.cuda.is_available() else "cpu"
    unet_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype or ("bf16" if device == "cuda" else "fp32")]
    with tempfile.TemporaryDirectory() as tmp:
        if a.in_memory:
            t0 = time.perf_counter()
            pipe = build_pipeline(a.in_memory == "tiny", device, unet_dtype)
            print(f"built {a.in_memory} SDXL in memory on {device} in {time.perf_counter() - t0:.1f} s")
            found = {"prediction": "eps", "ztsnr": False, "source": "random weights"}
            ck = pretrained_checkpoint(SDXLBundle.from_pipeline(pipe, f"random-{a.in_memory}"), found, "random")
            label = f"random SDXL ({a.in_memory}, in memory)"
        else:
            model = a.model
            if model is None:
                from tests.sdxl_tiny import build_tiny_sdxl

                model = build_tiny_sdxl(Path(tmp) / "tiny-sdxl")
            ck = load_model(model, device=device)
            pipe = StableDiffusionXLPipeline.from_pretrained(model, local_files_only=True).to(device)
            pipe.unet.to(unet_dtype)
            label = str(model) if a.model else "tiny random SDXL"
        pipe.set_progress_bar_config(disable=True)
        size = (a.resolution, a.resolution) if a.resolution else ck.bundle.native_size
        ck.size = size
        prompts = ["1girl, solo, black background"] * a.batch
        cond, uncond = ck.bundle.encode(prompts, [size] * a.batch), ck.bundle.uncond(a.batch, [size] * a.batch)
        sig = sampling_sigmas(ck.denoiser.schedule, a.steps, 14.6146, "native")
        eps = torch.randn((a.batch, *ck.sample_shape), generator=torch.Generator().manual_seed(0)).to(device)
        sig_list = [float(s) for s in sig]
        pipe.scheduler.set_timesteps(sigmas=sig_list)
        init = float(pipe.scheduler.init_noise_sigma)
        theirs_dtype = unet_dtype  # what a diffusers user passes as torch_dtype
        for enc in (pipe.text_encoder, pipe.text_encoder_2):  # the pipeline casts given embeddings to their dtype
            enc.to(theirs_dtype)
        guided = GuidedDenoiser(ck.denoiser, cond, uncond, a.cfg)

        @torch.no_grad()
        def ours() -> float:
            t0 = time.perf_counter()
            get_sampler("euler")(guided, initial_state(eps, sig_list[0]), sig)
            sync(device)
            return time.perf_counter() - t0

        def theirs() -> float:
            t0 = time.perf_counter()
            pipe(prompt_embeds=cond["prompt_embeds"].to(theirs_dtype),
                 negative_prompt_embeds=uncond["prompt_embeds"].to(theirs_dtype),
                 pooled_prompt_embeds=cond["pooled"].to(theirs_dtype),
                 negative_pooled_prompt_embeds=uncond["pooled"].to(theirs_dtype),
                 latents=(eps * sig_list[0] / init).to(theirs_dtype), sigmas=sig_list, guidance_scale=a.cfg,
                 height=size[0], width=size[1], output_type="latent")
            sync(device)
            return time.perf_counter() - t0

        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            guided(eps * sig_list[0], sig_list[0])
        step_flops = fc.get_total_flops()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        mo, mt = side_by_side(ours, theirs, a.repeats)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        peak = measured_peak(device, torch.bfloat16 if device == "cuda" else torch.float32,
                             8192 if device == "cuda" else 512, 20 if device == "cuda" else 5)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in pipe.unet.parameters())
    print(f"device {name}; model {label}, UNet {params / 1e6:.1f}M params in {str(unet_dtype)[6:]}; "
          f"batch {a.batch} at {size[0]}×{size[1]}, Euler {a.steps} steps, CFG {a.cfg:g}")
    print(f"model FLOPs per guided step (cond + uncond, batch {2 * a.batch}): {step_flops / 1e12:.3f} TFLOP; "
          f"measured matmul peak {peak / 1e12:.1f} TFLOP/s; peak GPU memory {mem:.1f} GiB")
    print(f"diffusers pipeline : {a.batch / mt:.3f} img/s ({mt:.3f} s), MFU {step_flops * a.steps / mt / peak:.1%}")
    print(f"nai3 via bundle    : {a.batch / mo:.3f} img/s ({mo:.3f} s), MFU {step_flops * a.steps / mo / peak:.1%}")
    print(f"ratio nai3/diffusers = {mt / mo:.3f}  (target ≥ 0.95)")


if __name__ == "__main__":
    main()
