"""SDXL training throughput and MFU: the bare diffusers step, a tuned one, and nai3's trainer, in one run.

Configurations, each timed over ``--steps`` steps after 3 warm-up steps on the same device:

* **A bare**: what a minimal diffusers script does — fp32 weights, bf16 autocast, foreach AdamW.
* **B tuned**: A with fused AdamW, TF32 matmuls and cuDNN autotuning.
* **C**: B at twice the batch.
* **D nai3**: ``nai3train.trainer.train_variant`` on the same UNet (v-prediction + ZTSNR, EMA,
  Min-SNR, the feed thread, checkpoints off the training thread), its components injected in memory.
* **E**: D without gradient checkpointing (D uses ``auto``: the memory estimate decides).
* **F**: B with ``torch.compile``.

SDXL-base (``bench/sdxl_arch.py``) at 1024² with random weights, built on the device; its
model FLOPs per training image come from ``bench/sdxl_flops.json`` (counted on the meta device by
``bench/sdxl_flops.py``), the peak from a bf16 matmul measured in this run. ``--tiny`` runs every
configuration on a tiny UNet on the CPU (the suite rehearses it). Last lines: ``ratio trainer/bare``,
``ratio tuned/bare``, ``best MFU``.

    bash bench/gpu.sh            # on a GPU machine (runs this, then the sampling bench)
    bash bench/gpu.sh --tiny     # anywhere
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from sdxl_arch import SDXL_UNET, TINY_UNET, build_pipeline  # noqa: E402  (bench/sdxl_arch.py)
from sdxl_flops import OUT as FLOPS_FILE, count  # noqa: E402
from timing import measured_peak, sync  # noqa: E402

from nai3train.ops.memory import unet_inputs  # noqa: E402


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def bare(unet, device, batch: int, steps: int, tuned: bool, compiled: bool = False) -> dict:
    """img/s and peak GiB of the bare step (A), tuned (B, C) or tuned and compiled (F)."""
    if tuned and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, fused=True if tuned and device.type == "cuda" else None)
    x, t, kwargs = unet_inputs(unet, batch, unet.config.sample_size, device=device)
    net = torch.compile(unet) if compiled else unet
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step() -> None:
        with autocast:
            out = net(x, t, **kwargs).sample
        loss = (out.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(step, device, batch, steps)


def _timed(step, device, batch: int, steps: int) -> dict:
    for _ in range(3):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return {"img_s": steps * batch / (time.perf_counter() - t0), "peak_gib": _peak_gib(device)}


def nai3(pipe, device, batch: int, steps: int, checkpointing: str, work: Path) -> dict:
    """img/s of nai3's trainer on ``pipe``'s UNet, from the times of its steps after the third."""
    from nai3train.config import load_config
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
    from nai3train.models import sdxl
    from nai3train.trainer import train_variant

    side = pipe.unet.config.sample_size * sdxl.vae_factor(pipe.vae.config)  # the bare loop's latent size
    synthesize(work / "data", max(8, 2 * batch), 2, side, seed=0)
    data = BucketedDataset.from_scan(scan_folder(work / "data" / "train"), default_buckets(side))
    comps = sdxl.SDXLComponents(pipe.unet.float().train(), pipe.vae, pipe.text_encoder, pipe.text_encoder_2,
                                pipe.tokenizer, pipe.tokenizer_2, str(work / "in-memory"))
    for frozen in (comps.vae, comps.text_encoder, comps.text_encoder_2):
        frozen.requires_grad_(False).eval()
    for part in sdxl.COMPONENTS:  # the folder the config names: the configs only (the weights are injected)
        (work / "in-memory" / part).mkdir(parents=True, exist_ok=True)
    pipe.unet.save_config(work / "in-memory" / "unet")
    pipe.vae.save_config(work / "in-memory" / "vae")
    real = sdxl.load_sdxl
    sdxl.load_sdxl = lambda path, device="cpu": comps
    cfg = load_config(ROOT / "configs/smoke.yaml", [
        "model.kind=sdxl", f"model.path={work / 'in-memory'}", f"data.resolution={side}", f"train.batch_size={batch}",
        f"train.steps={steps + 3}", f"train.checkpoint_every={10 * (steps + 3)}", "train.log_every=1000000",
        f"train.gradient_checkpointing={checkpointing}"])
    marks: list[float] = []

    def on_step(_step: int, _info: dict) -> None:
        sync(device)
        marks.append(time.perf_counter())

    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train_variant(cfg, cfg.variants[1], data, Vocabulary.build(data.tags), work / "runs" / checkpointing,
                      progress=False, on_step=on_step)
    finally:
        sdxl.load_sdxl = real
    return {"img_s": steps * batch / (marks[-1] - marks[2]), "peak_gib": _peak_gib(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny UNet on the CPU: checks that every configuration runs")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration, after 3 warm-up steps")
    ap.add_argument("--batch-size", type=int, default=None, help="default 4 (GPU) or 2 (--tiny)")
    ap.add_argument("--only", default="ABCDEF", help="configurations to run, e.g. ABD")
    a = ap.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its advice on casting with to() concerns fp16 modules, not this
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bs = a.batch_size or (2 if a.tiny else 4)
    flops = count(TINY_UNET)["train_flops_per_image"] if a.tiny else json.loads(FLOPS_FILE.read_text())["train_flops_per_image"]
    peak = measured_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                         8192 if device.type == "cuda" else 512, 20 if device.type == "cuda" else 5)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}; UNet {'tiny' if a.tiny else 'SDXL-base'} at {(TINY_UNET if a.tiny else SDXL_UNET)['sample_size'] * 8}²; "
          f"{flops / 1e12:.4f} TFLOP per training image; measured peak {peak / 1e12:.2f} TFLOP/s")
    got: dict[str, dict] = {}
    plans = {"A": ("bare", lambda p, w: bare(p.unet, device, bs, a.steps, tuned=False)),
             "B": ("tuned", lambda p, w: bare(p.unet, device, bs, a.steps, tuned=True)),
             "C": (f"tuned, batch {2 * bs}", lambda p, w: bare(p.unet, device, 2 * bs, a.steps, tuned=True)),
             "D": ("nai3 trainer", lambda p, w: nai3(p, device, bs, a.steps, "auto", w)),
             "E": ("nai3, no checkpointing", lambda p, w: nai3(p, device, bs, a.steps, "off", w)),
             "F": ("tuned + compile", lambda p, w: bare(p.unet, device, bs, a.steps, tuned=True, compiled=True))}
    for key in a.only:
        label, fn = plans[key]
        pipe = build_pipeline(a.tiny, device)  # fresh weights and optimiser state per configuration
        pipe.unet.float().train()
        with tempfile.TemporaryDirectory() as w:
            try:
                got[key] = fn(pipe, Path(w))
            except torch.cuda.OutOfMemoryError as e:  # a batch that does not fit is a result, not a crash
                print(f"{key} {label}: out of memory ({str(e).splitlines()[0]})")
                continue
        r = got[key]
        print(f"{key} {label:<24} {r['img_s']:8.2f} img/s  MFU {r['img_s'] * flops / peak:6.1%}  peak {r['peak_gib']:.1f} GiB",
              flush=True)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ratio = lambda x, y: got[x]["img_s"] / got[y]["img_s"] if x in got and y in got else float("nan")  # noqa: E731
    print(f"ratio trainer/bare {ratio('D', 'A'):.3f}")
    print(f"ratio tuned/bare {ratio('B', 'A'):.3f}")
    print(f"best MFU {max((r['img_s'] * flops / peak for r in got.values()), default=float('nan')):.1%}")


if __name__ == "__main__":
    main()
