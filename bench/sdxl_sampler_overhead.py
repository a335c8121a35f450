"""nai3's sampling through the SDXL bundle vs diffusers' StableDiffusionXLPipeline, side by side.

Both sample the same batch at the same resolution with Euler over the same explicit σ list and
the same CFG scale (cond and uncond in one batched UNet forward in both), from the same prompt
embeddings, ending in latents (no VAE decode in either). The model is a tiny random-weight SDXL
built here with diffusers' own classes (``--hidden``), or any local diffusers SDXL folder
(``--model DIR``). Runs alternate and swap order; medians are compared; the ratio prints last.

    .venv/bin/python bench/sdxl_sampler_overhead.py [--model DIR] [--batch 4] [--steps 28] [--repeats 5]
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

    from timing import side_by_side  # bench/timing.py

    from nai3eval.sweep import load_model
    from nai3train.diffusion import sampling_sigmas
    from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a local diffusers SDXL folder (default: a tiny random one)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if model is None:
            sys.path.insert(0, str(ROOT))
            from tests.sdxl_tiny import build_tiny_sdxl

            model = build_tiny_sdxl(Path(tmp) / "tiny-sdxl")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        ck = load_model(model, device=device)
        size = ck.bundle.native_size
        prompts = ["1girl, solo, black background"] * a.batch
        cond, uncond = ck.bundle.encode(prompts, [size] * a.batch), ck.bundle.uncond(a.batch, [size] * a.batch)
        sig = sampling_sigmas(ck.denoiser.schedule, a.steps, 14.6146, "native")
        eps = torch.randn((a.batch, *ck.sample_shape), generator=torch.Generator().manual_seed(0)).to(device)
        pipe = StableDiffusionXLPipeline.from_pretrained(model, local_files_only=True).to(device)
        pipe.set_progress_bar_config(disable=True)
        sig_list = [float(s) for s in sig]
        pipe.scheduler.set_timesteps(sigmas=sig_list)
        init = float(pipe.scheduler.init_noise_sigma)

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        @torch.no_grad()
        def ours() -> float:
            t0 = time.perf_counter()
            get_sampler("euler")(GuidedDenoiser(ck.denoiser, cond, uncond, a.cfg), initial_state(eps, sig_list[0]), sig)
            sync()
            return time.perf_counter() - t0

        def theirs() -> float:
            t0 = time.perf_counter()
            pipe(prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=uncond["prompt_embeds"],
                 pooled_prompt_embeds=cond["pooled"], negative_pooled_prompt_embeds=uncond["pooled"],
                 latents=eps * sig_list[0] / init, sigmas=sig_list, guidance_scale=a.cfg, height=size[0],
                 width=size[1], output_type="latent")
            sync()
            return time.perf_counter() - t0

        mo, mt = side_by_side(ours, theirs, a.repeats)
    print(f"device {device}, torch threads {torch.get_num_threads()}; model {model if a.model else 'tiny random SDXL'}; "
          f"batch {a.batch} at {size[0]}×{size[1]}, Euler {a.steps} steps, CFG {a.cfg:g}")
    print(f"diffusers pipeline : {a.batch / mt:.2f} img/s ({mt:.3f} s)")
    print(f"nai3 via bundle    : {a.batch / mo:.2f} img/s ({mo:.3f} s)")
    print(f"ratio nai3/diffusers = {mt / mo:.3f}  (target ≥ 0.95)")


if __name__ == "__main__":
    main()
