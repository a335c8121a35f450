"""Two-thread training beside one competing process, under each OpenMP wait policy.

torch's CPU ops run on OpenMP (GNU libgomp in the PyPI wheels). At each barrier a waiting thread
spins (ACTIVE), sleeps at once (PASSIVE), or spins a while and then sleeps (unset: libgomp's
default spin count). When one of two cores is taken by another process, a spinning thread burns
the core its partner needs, and a two-thread run slowed 10–40× on this box. Each case is the tiny
model's training loop (the demo's batch, ``train_variant``) in a fresh process with the policy in
its environment, alone and beside a pure-Python busy loop; cases alternate and medians are kept.
Prints img/s per case and, last, PASSIVE against libgomp's default alone and beside the busy process.

    .venv/bin/python bench/omp_wait.py [--steps 60] [--repeats 2]     # ≈ 5 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("unset", "PASSIVE", "ACTIVE", "spin:10000", "spin:100000")  # spin:N is GOMP_SPINCOUNT=N

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
from nai3train.config import load_config
from timing import warm_training_set
from nai3train.trainer import train_variant
steps = int(sys.argv[2])
torch.set_num_threads(2)
cfg = load_config(Path(sys.argv[1]) / "configs/smoke.yaml", [f"train.steps={steps}", "train.log_every=1000000",
                  f"train.checkpoint_every={steps}", "train.threads=2"])
variant = next(v for v in cfg.variants if v.name == "nai-v-ztsnr")
with tempfile.TemporaryDirectory() as d:
    data, vocab = warm_training_set(d, 256, cfg.data.resolution)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train_variant(cfg, variant, data, vocab, out, progress=False)
        print(json.dumps({"img_s": steps * cfg.train.batch_size / (time.perf_counter() - t0)}))
"""

BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def one(policy: str, competed: bool, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NAI3_THREADS",
                                                             "OMP_NUM_THREADS")}
    if policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin:")
    elif policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if competed else None
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(steps)], capture_output=True, text=True,
                           env=env, timeout=1800)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if p.returncode != 0:
        sys.exit(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])["img_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--policies", default=",".join(POLICIES), help="which of " + ", ".join(POLICIES))
    a = ap.parse_args()
    policies = tuple(a.policies.split(","))
    got: dict[tuple[str, bool], list[float]] = {}
    for rep in range(a.repeats):
        cases = [(p, c) for p in policies for c in (False, True)]
        for policy, competed in (cases if rep % 2 == 0 else cases[::-1]):
            got.setdefault((policy, competed), []).append(one(policy, competed, a.steps))
            print(f"repeat {rep}: {policy:<12} {'beside a busy process' if competed else 'alone':<22} "
                  f"{got[(policy, competed)][-1]:7.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in got.items()}
    for policy in policies:
        print(f"{policy:<12} alone {med[(policy, False)]:7.1f} img/s, beside a busy process {med[(policy, True)]:7.1f} "
              f"img/s (kept {med[(policy, True)] / med[(policy, False)]:.2f})")
    if "PASSIVE" in policies and "unset" in policies:
        alone = med[("PASSIVE", False)] / med[("unset", False)]
        shared = med[("PASSIVE", True)] / med[("unset", True)]
        print(f"PASSIVE/unset alone {alone:.2f}, beside a busy process {shared:.2f} (a policy that wins both would be "
              f"≥ 0.95 and ≥ 1.5; nai3 runs one-thread units instead, which never wait at a barrier)")


if __name__ == "__main__":
    main()
