"""The EMA update on an SDXL-sized parameter list: one ``lerp_`` per tensor (the loop it replaced)
against nai3's grouped ``_foreach_lerp_`` (nai3train/training/ema.py), side by side in one run.

The parameter list is the real SDXL-base UNet's, from its config on the meta device (the same
number of tensors, in the same order), each materialised at ``1/--shrink`` of its size so it fits
a CPU. The per-tensor cost that the foreach kernel removes (one dispatch each) does not shrink
with the width; the arithmetic does, so a smaller ``--shrink`` makes the ratio smaller.

    .venv/bin/python bench/ema_foreach.py [--shrink 64] [--repeats 7]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from sdxl_arch import SDXL_UNET  # noqa: E402  (bench/sdxl_arch.py)
from nai3train.training import EMA  # noqa: E402
from timing import side_by_side  # noqa: E402  (bench/timing.py)


class Params(torch.nn.Module):
    """A module whose parameters have SDXL's count and order, each ``1/shrink`` of its size."""

    def __init__(self, numels: list[int], shrink: int):
        super().__init__()
        self.p = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(max(1, math.ceil(n / shrink))))
                                        for n in numels)


def sdxl_numels() -> list[int]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    return [p.numel() for p in unet.state_dict().values()]


def loop_update(ema: EMA, model: torch.nn.Module, step: int) -> None:
    """The historical update: one kernel per tensor."""
    decay = ema.decay_at(step)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            ema.shadow[k].lerp_(v, 1 - decay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shrink", type=int, default=64)
    ap.add_argument("--updates", type=int, default=20, help="EMA updates per timed run")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    numels = sdxl_numels()
    torch.manual_seed(0)
    model = Params(numels, a.shrink)
    ema_loop, ema_fe = EMA(model, 0.999), EMA(model, 0.999)

    def timed(update) -> float:
        t0 = time.perf_counter()
        for s in range(a.updates):
            update(s)
        return time.perf_counter() - t0

    loop_s, fe_s = side_by_side(lambda: timed(lambda s: loop_update(ema_loop, model, s)),
                                lambda: timed(lambda s: ema_fe.update(model, s)), a.repeats)
    same = all(torch.equal(ema_loop.shadow[k], ema_fe.shadow[k]) for k in ema_loop.shadow)
    print(f"SDXL-base UNet parameter list: {len(numels)} tensors, {sum(numels) / 1e9:.3f} B values; materialised at "
          f"1/{a.shrink}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M values; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"per update: loop {loop_s / a.updates * 1e3:.2f} ms, foreach {fe_s / a.updates * 1e3:.2f} ms; "
          f"same averages bit for bit: {same}")
    print(f"speed-up foreach/loop {loop_s / fe_s:.2f} (target > 1)")


if __name__ == "__main__":
    main()
