"""Sampler throughput vs bare network forwards doing the same number of forwards, side by side.

The sampler path (Euler, native 28-step schedule from σ = 20000, CFG with conditional and
unconditional passes in one batched forward, the shared denoiser's preconditioning and t(σ)
lookup) against a loop that calls the same network the same number of times on the same batch
shapes with precomputed inputs. Runs alternate and swap order; medians are compared; the ratio prints last.
Also prints the wall time of one variant's default smoke sweep (points × images) at this rate.

    .venv/bin/python bench/sampler_overhead.py [--images 64] [--repeats 7]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from timing import side_by_side  # bench/timing.py

from nai3train.config import VariantConfig, load_config
from nai3train.diffusion import sampling_sigmas
from nai3train.diffusion.samplers import GuidedDenoiser, get_sampler, initial_state
from nai3train.models import TinyBundle
from nai3train.variant import build_denoiser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    cfg = load_config(ROOT / "configs/smoke.yaml")
    r = cfg.data.resolution
    torch.manual_seed(0)
    vocab = [f"tag_{i}" for i in range(26)]
    bundle = TinyBundle(vocab, r, cfg.model.block_out_channels, cfg.model.cross_attention_dim, cfg.model.max_tags).eval()
    model = bundle.network
    den = build_denoiser(model, VariantConfig(name="v", prediction="v", ztsnr=True), 3 * r * r)
    gen = torch.Generator().manual_seed(0)
    prompts = [[vocab[int(i)] for i in torch.randint(0, 26, (3,), generator=gen)] for _ in range(a.images)]
    cond, uncond = bundle.encode(prompts, [(r, r)] * a.images), bundle.uncond(a.images, [(r, r)] * a.images)
    sig = sampling_sigmas(den.schedule, cfg.eval.steps, 20000.0, "native")
    noise = torch.randn(a.images, 3, r, r)
    n_forwards = len(sig) - 1
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
    x2 = torch.randn(2 * a.images, 3, r, r)
    ts = [den.c_noise(torch.tensor(float(s)).expand(2 * a.images)).float() for s in sig[:-1]]

    @torch.no_grad()
    def sampler_run() -> float:
        t0 = time.perf_counter()
        guided = GuidedDenoiser(den, cond, uncond, scale=5.0)
        get_sampler("euler")(guided, initial_state(noise, float(sig[0])), sig)
        return time.perf_counter() - t0

    @torch.no_grad()
    def bare_run() -> float:
        t0 = time.perf_counter()
        for t in ts:
            model(x2, t, both)
        return time.perf_counter() - t0

    b, s = side_by_side(bare_run, sampler_run, a.repeats)
    print(f"torch threads {torch.get_num_threads()}; {a.images} images, {n_forwards} forwards of batch "
          f"{2 * a.images} (CFG cond+uncond in one pass)")
    print(f"bare forwards : {a.images / b:.1f} img/s ({b:.2f} s)")
    print(f"sampler       : {a.images / s:.1f} img/s ({s:.2f} s)")
    points = len(cfg.eval.cfg_scales) * len(cfg.eval.first_sigmas)
    print(f"one variant's smoke sweep ({points} points × {cfg.eval.prompts * cfg.eval.seeds_per_prompt} images) "
          f"≈ {points * s * cfg.eval.prompts * cfg.eval.seeds_per_prompt / a.images:.1f} s of sampling here")
    print(f"ratio sampler/bare = {b / s:.3f}  (target ≥ 0.95)")


if __name__ == "__main__":
    main()
