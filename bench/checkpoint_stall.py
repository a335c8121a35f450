"""Does writing a checkpoint stall training? A ~200 MB model's step times while its checkpoints are
written off the training thread (nai3train/ops/checkpoint_writer.py), against the same run writing them
synchronously (the historical ``TrainingState.save``), side by side in one run.

The model is an MLP of 4 × 3584² (51 M parameters, 205 MB in fp32; a checkpoint with its EMA and
AdamW moments is 820 MB). Each run trains ``--steps`` AdamW steps with nai3's EMA and writes a
resumable checkpoint every ``--every`` steps. Its steps are split into those taken while a write was
in flight and the rest; the figures are the median and the slowest in-flight step over the median
of the rest. The training uses all cores but one: on a CPU-only box the writer needs a core the step does not use
(on a GPU machine the step is on the GPU and the host's cores are free).

    .venv/bin/python bench/checkpoint_stall.py [--steps 60] [--every 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nai3train.training import EMA, TrainingState  # noqa: E402
from nai3train.ops.checkpoint_writer import CheckpointWriter  # noqa: E402

WIDTH, LAYERS, BATCH = 3584, 4, 32


def run(folder: Path, steps: int, every: int, background: bool) -> tuple[list[float], list[float], float]:
    """(step seconds while a write was in flight, the other steps' seconds, seconds spent in save calls)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMA(model, 0.999)
    state = TrainingState(model, ema, opt, torch.Generator().manual_seed(0))
    writer = CheckpointWriter(folder, keep=1)
    x = torch.randn(BATCH, WIDTH)
    during, rest, in_save = [], [], 0.0
    for step in range(steps):
        busy = writer.writing
        t0 = time.perf_counter()
        loss = model(x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        writer.hold_updates()
        opt.step()
        writer.hold_ema()
        ema.update(model, step)
        if (step + 1) % every == 0:
            s0 = time.perf_counter()
            if background:
                state.save_async(writer, step + 1, {})
            else:
                state.save(folder, step + 1, {}, keep=1)
            in_save += time.perf_counter() - s0
        dt = time.perf_counter() - t0
        busy = busy or (step + 1) % every == 0 or writer.writing
        (during if busy and step >= every - 1 else rest).append(dt)
    writer.wait()
    return during, rest, in_save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=15)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, cores - 1))
    params = LAYERS * (WIDTH * WIDTH + WIDTH)
    print(f"MLP {LAYERS} × {WIDTH}²: {params / 1e6:.1f} M parameters ({params * 4 / 2**20:.0f} MB fp32); "
          f"batch {BATCH}; {torch.get_num_threads()} training thread(s) of {cores} cores; "
          f"a checkpoint every {a.every} steps")
    results, typical = {}, []
    with tempfile.TemporaryDirectory(dir=os.environ.get("NAI3_BENCH_DIR")) as d:
        for name, background in (("synchronous", False), ("background", True), ("synchronous", False),
                                 ("background", True)):
            during, rest, in_save = run(Path(d) / name, a.steps, a.every, background)
            med = statistics.median(rest)
            results.setdefault(name, []).append(max(during) / med)
            if background:
                typical.append(statistics.median(during) / med)
            print(f"{name:<12} median step {med * 1e3:6.1f} ms; steps during a write: slowest {max(during) * 1e3:6.1f} ms "
                  f"({max(during) / med:.2f}×), median {statistics.median(during) * 1e3:6.1f} ms; "
                  f"{in_save * 1e3:6.0f} ms inside save calls")
    print(f"synchronous: slowest step during a save {min(results['synchronous']):.2f}× the median")
    print(f"background: slowest step during a save {min(results['background']):.2f}× the median")
    print(f"background: median step during a save / median {min(typical):.2f} (target ≤ 1.1)")


if __name__ == "__main__":
    main()
