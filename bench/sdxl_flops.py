"""Model FLOPs of one SDXL training image, counted, not estimated.

The real SDXL-base UNet (bench/sdxl_arch.py: its published config) is built on the meta
device — shapes only, no weights, no GPU — and one forward and one forward + backward at 1024²
(128² latents, 77 text tokens) are counted by torch's ``FlopCounterMode``. The result goes to
``bench/sdxl_flops.json``, which ``bench/train_mfu.py`` reads for its MFU: the GPU run spends no
time counting. 3 × forward is printed beside the counted forward + backward, the usual shortcut
(backward ≈ 2 × forward) against the count.

    .venv/bin/python bench/sdxl_flops.py            # ≈ 10 s on a CPU
    .venv/bin/python bench/sdxl_flops.py --tiny     # the tiny stand-in (what the tests run)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from sdxl_arch import SDXL_UNET, TINY_UNET  # noqa: E402  (bench/sdxl_arch.py)
from nai3train.ops.memory import unet_inputs  # noqa: E402

OUT = ROOT / "bench" / "sdxl_flops.json"


def count(unet_config: dict, batch: int = 1, text_len: int = 77) -> dict[str, float]:
    """FLOPs per image of one forward, and of one forward + backward (the training step's model
    FLOPs: the loss and the optimiser are negligible), for the UNet of ``unet_config``."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        side = unet_config["sample_size"]
        x, t, kwargs = unet_inputs(unet, batch, side, text_len)
    unet.train()
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            unet(x, t, **kwargs)
    with FlopCounterMode(display=False) as step:
        unet(x, t, **kwargs).sample.pow(2).mean().backward()
    params = sum(p.numel() for p in unet.parameters())
    return {"forward_flops_per_image": fwd.get_total_flops() / batch, "train_flops_per_image": step.get_total_flops() / batch,
            "params": params, "latent_side": side, "resolution": side * 8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny stand-in; prints only (writes nothing)")
    a = ap.parse_args()
    got = count(TINY_UNET if a.tiny else SDXL_UNET)
    fwd, train = got["forward_flops_per_image"], got["train_flops_per_image"]
    print(f"UNet {'tiny' if a.tiny else 'SDXL-base'}: {got['params'] / 1e9:.3f} B parameters, {got['resolution']}² "
          f"({got['latent_side']}² latents), FlopCounterMode on the meta device")
    print(f"forward: {fwd / 1e12:.3f} TFLOP per image; 3 × forward {3 * fwd / 1e12:.3f} TFLOP")
    print(f"forward + backward (counted): {train / 1e12:.3f} TFLOP per training image; "
          f"counted / (3 × forward) = {train / (3 * fwd):.3f}")
    if not a.tiny:
        OUT.write_text(json.dumps(got, indent=2) + "\n")
        print(f"written to {OUT.relative_to(ROOT)} (bench/train_mfu.py reads it)")


if __name__ == "__main__":
    main()
