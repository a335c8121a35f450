"""Absolute training speed on this CPU, and what moves it: img/s and MFU of the demo's training
step under several set-ups, each in a fresh process, side by side in one run.

Cases (the smoke config's tiny UNet, batch 32, 16 px, two threads unless said):
  bare            the bare diffusers-style loop of bench/train_overhead.py
  bare-cl         the same with the model and batches in channels_last
  bare-compile    the same with torch.compile (inductor's CPU backend; compile time excluded)
  nai3            nai3train's train_variant, no progress output
  nai3-progress   the same with the progress bar written as lines (as under a log file)
  nai3-1thread    nai3train with one thread (what a parallel unit gets on 2 cores)
MFU is img/s × model FLOPs per image (FlopCounterMode, forward + backward) over the fp32 matmul
rate measured in the same process and thread count. Run it under another interpreter
(``/path/to/venv/bin/python bench/train_speed.py``) to compare torch versions on the same box.
Prints one line per case and, last, nai3's MFU.

    .venv/bin/python bench/train_speed.py [--steps 80] [--cases bare,nai3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("bare", "bare-cl", "bare-compile", "nai3", "nai3-progress", "nai3-1thread")

CHILD = r"""
import io, json, sys, tempfile, time
from pathlib import Path
root, case, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path[:0] = [root, root + "/bench"]
import torch
torch.set_num_threads(1 if case.endswith("1thread") else 2)
from torch.utils.flop_counter import FlopCounterMode
from timing import measured_peak, square_batch, warm_training_set
from train_overhead import bare_loop
from nai3train.config import load_config
from nai3train.models import TinyTagUNet
from nai3train.trainer import train_variant
cfg = load_config(Path(root) / "configs/smoke.yaml", [f"train.steps={steps}", f"train.checkpoint_every={steps}"])
variant = next(v for v in cfg.variants if v.name == "nai-v-ztsnr")
with tempfile.TemporaryDirectory() as d:
    data, vocab = warm_training_set(d, 512, cfg.data.resolution)
    x0, time_ids, ids = square_batch(data, vocab, cfg.data.resolution, cfg.model.max_tags)
    torch.manual_seed(0)
    model = TinyTagUNet(len(vocab), cfg.data.resolution, cfg.model.block_out_channels,
                        cfg.model.cross_attention_dim, cfg.model.max_tags)
    b = cfg.train.batch_size
    with FlopCounterMode(display=False) as fc:
        out = model(x0[:b], torch.rand(b) * 999, {"tag_ids": ids[:b], "time_ids": time_ids[:b]})
        torch.nn.functional.mse_loss(out, x0[:b]).backward()
    flops = fc.get_total_flops() / b
    model.zero_grad(set_to_none=True)
    if case.startswith("bare"):
        if case == "bare-cl":
            model = model.to(memory_format=torch.channels_last)
            x0 = x0.contiguous(memory_format=torch.channels_last)
        if case == "bare-compile":
            model = torch.compile(model)
        bare_loop(model, x0, ids, time_ids, 5, b)  # warm-up (and compilation)
        img_s = bare_loop(model, x0, ids, time_ids, steps, b)
    else:
        with tempfile.TemporaryDirectory() as out:
            sink = io.StringIO()
            t0 = time.perf_counter()
            if case == "nai3-progress":
                import nai3train.ops.progress as pm
                pm.LINE_EVERY_S = 1.0
                old, sys.stderr = sys.stderr, sink
                try:
                    train_variant(cfg, variant, data, vocab, out, progress=True)
                finally:
                    sys.stderr = old
            else:
                train_variant(cfg, variant, data, vocab, out, progress=False)
            img_s = steps * b / (time.perf_counter() - t0)
    peak = sorted(measured_peak("cpu", torch.float32, 1024, 10) for _ in range(3))[1]
    print(json.dumps({"img_s": img_s, "flops": flops, "peak": peak, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))
"""


def run(case: str, steps: int) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), case, str(steps)], capture_output=True, text=True,
                       timeout=1800)
    if p.returncode != 0:
        sys.exit(f"{case} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--cases", default=",".join(CASES))
    a = ap.parse_args()
    got = {}
    for case in a.cases.split(","):
        r = got[case] = run(case, a.steps)
        print(f"{case:<14} torch {r['torch']:<14} {r['threads']} thread(s) {r['img_s']:7.1f} img/s  "
              f"MFU {r['img_s'] * r['flops'] / r['peak']:6.1%}  ({r['flops'] / 1e6:.0f} MFLOP/img, "
              f"matmul {r['peak'] / 1e9:.0f} GFLOP/s)", flush=True)
    main_case = got.get("nai3") or next(iter(got.values()))
    print(f"nai3train MFU {main_case['img_s'] * main_case['flops'] / main_case['peak']:.1%} at "
          f"{main_case['img_s']:.0f} img/s (November's demo: ≈ 170 img/s)")


if __name__ == "__main__":
    main()
