"""nai3train's training throughput vs a bare diffusers training loop, side by side in one run.

Same tiny model (TinyTagUNet), same batch size, same benchmark images already in memory. The bare
loop is what a minimal diffusers script does per step: add noise with DDPMScheduler, one
forward, MSE, backward, AdamW — no EMA, no bucketing, no per-σ statistics, no checkpoints. Runs
alternate (bare, ours, bare, ours, …) and the medians are compared. Also the model FLOPs per
training image (forward + backward, counted by torch's FlopCounterMode) and each loop's MFU against
this box's fp32 matmul rate, measured in the same run with the same threads. Prints the ratio last.

    .venv/bin/python bench/train_overhead.py [--steps 60] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from torch.utils.flop_counter import FlopCounterMode

from nai3train.config import load_config
from nai3train.models import TinyTagUNet
from nai3train.trainer import train_variant

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import measured_peak, square_batch, warm_training_set  # noqa: E402  (bench/timing.py)


def bare_loop(model: TinyTagUNet, x0: torch.Tensor, ids: torch.Tensor, time_ids: torch.Tensor, steps: int,
              batch: int) -> float:
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x0), (batch,), generator=gen)
        noise = torch.randn((batch, *x0.shape[1:]), generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noisy = sched.add_noise(x0[idx], noise, t)
        pred = model(noisy, t.float(), {"tag_ids": ids[idx], "time_ids": time_ids[idx]})
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def flops_per_image(model: TinyTagUNet, x0: torch.Tensor, ids: torch.Tensor, time_ids: torch.Tensor,
                    batch: int) -> float:
    """Model FLOPs of one training step (forward, loss, backward) per image, counted by torch."""
    t = torch.rand(batch) * 999
    with FlopCounterMode(display=False) as fc:
        pred = model(x0[:batch], t, {"tag_ids": ids[:batch], "time_ids": time_ids[:batch]})
        torch.nn.functional.mse_loss(pred, x0[:batch]).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config(ROOT / "configs/smoke.yaml", [f"train.steps={a.steps}", "train.log_every=1000000",
                                                    f"train.checkpoint_every={a.steps}"])
    variant = next(v for v in cfg.variants if v.name == "nai-v-ztsnr")
    folder = tempfile.TemporaryDirectory()  # images are decoded when a batch asks: the folder lives for the run
    data, vocab = warm_training_set(folder.name, cfg.data.train_size, cfg.data.resolution)
    x0, time_ids, ids = square_batch(data, vocab, cfg.data.resolution, cfg.model.max_tags)
    ours, bare = [], []
    for rep in range(a.repeats):
        torch.manual_seed(rep)
        model = TinyTagUNet(len(vocab), cfg.data.resolution, cfg.model.block_out_channels,
                            cfg.model.cross_attention_dim, cfg.model.max_tags)
        bare.append(bare_loop(model, x0, ids, time_ids, a.steps, cfg.train.batch_size))
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            train_variant(cfg, variant, data, vocab, out, progress=False)
            ours.append(a.steps * cfg.train.batch_size / (time.perf_counter() - t0))
        print(f"repeat {rep}: bare {bare[-1]:.1f} img/s, nai3train {ours[-1]:.1f} img/s")
    print(f"torch threads {torch.get_num_threads()}, batch {cfg.train.batch_size}, {a.steps} steps per run "
          f"(nai3train timed end to end: model build, EMA, bucketing, per-σ stats, checkpoints)")
    flops = flops_per_image(model, x0, ids, time_ids, cfg.train.batch_size)
    peak = statistics.median(measured_peak("cpu", torch.float32, 1024, 10) for _ in range(3))
    print(f"model FLOPs per training image: {flops / 1e6:.1f} MFLOP (forward + backward, FlopCounterMode); "
          f"measured fp32 matmul rate {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    print(f"median bare loop : {statistics.median(bare):.1f} img/s, MFU {statistics.median(bare) * flops / peak:.1%}")
    print(f"median nai3train : {statistics.median(ours):.1f} img/s, MFU {statistics.median(ours) * flops / peak:.1%}")
    print(f"ratio nai3train/bare = {statistics.median(ours) / statistics.median(bare):.3f}  (target ≥ 0.95)")
    folder.cleanup()


if __name__ == "__main__":
    main()
