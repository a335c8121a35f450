"""SDXL-architecture UNet training throughput and MFU (model FLOPs utilisation).

An SDXL-base UNet built from its config with random weights (nothing downloaded), trained with
AdamW under bf16 autocast on one 1024² bucket (128×128 latents), SDXL text conditioning shapes.
Model FLOPs per step come from ``torch.utils.flop_counter`` on one forward+backward; the peak is
measured in the same run with a large bf16 matmul, so MFU = achieved model FLOP/s ÷ measured peak.
``--tiny`` shrinks everything so the script runs on a CPU (used by the tests).

    bash bench/gpu.sh                 # on a GPU machine
    bash bench/gpu.sh --tiny          # anywhere
"""
from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from sdxl_arch import SDXL_UNET, TINY_UNET  # bench/sdxl_arch.py
from timing import measured_peak, sync  # bench/timing.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small UNet and latents: runs on a CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default 4 (GPU) or 2 (--tiny)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps after 3 warm-up steps")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TINY_UNET if a.tiny else SDXL_UNET
    bs = a.batch_size or (2 if a.tiny else 4)
    side = cfg["sample_size"]
    text_dim, pooled_dim = (64, 32) if a.tiny else (2048, 1280)
    torch.manual_seed(0)
    with device:  # initialised where it runs: 2.6 B parameters on a CPU would take minutes
        unet = UNet2DConditionModel(**cfg)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    x = torch.randn(bs, 4, side, side, device=device)
    t = torch.randint(0, 1000, (bs,), device=device).float()
    emb = torch.randn(bs, 77, text_dim, device=device)
    added = {"text_embeds": torch.randn(bs, pooled_dim, device=device),
             "time_ids": torch.tensor([[side * 8, side * 8, 0, 0, side * 8, side * 8]], device=device,
                                      dtype=torch.float32).expand(bs, 6)}
    amp_dtype = torch.bfloat16
    autocast = torch.autocast(device.type, dtype=amp_dtype)

    def step() -> None:
        with autocast:
            out = unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
        loss = (out.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        with autocast:
            out = unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
        out.float().pow(2).mean().backward()
    flops_per_step = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / a.steps
    peak = measured_peak(device, amp_dtype if device.type == "cuda" else torch.float32,
                         8192 if device.type == "cuda" else 512, 20 if device.type == "cuda" else 5)
    params = sum(p.numel() for p in unet.parameters())
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; UNet {'tiny' if a.tiny else 'SDXL-base'} {params / 1e6:.1f}M params; "
          f"latents {bs}×4×{side}×{side}; bf16 autocast; AdamW")
    print(f"model FLOPs per training step: {flops_per_step / 1e12:.3f} TFLOP (forward + backward)")
    print(f"step time: {dt * 1000:.1f} ms; {bs / dt:.2f} images/s; peak memory {mem:.1f} GiB")
    print(f"measured matmul peak: {peak / 1e12:.1f} TFLOP/s")
    print(f"MFU = {flops_per_step / dt / peak:.1%}  (target ≥ 45 % on an H100)")


if __name__ == "__main__":
    main()
