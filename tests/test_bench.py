"""The GPU benchmark script must run anywhere with --tiny (its numbers are not asserted)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_tiny_on_cpu():
    p = subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), "--tiny", "--steps", "1"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"MFU = \d+(\.\d+)?%", p.stdout)
    assert re.search(r"model FLOPs per training step: \d", p.stdout)
    assert re.search(r"ratio nai3/diffusers = \d+\.\d+", p.stdout.strip().splitlines()[-1])


def test_data_throughput_bench_runs():
    """Streamed images are decoded when a batch asks: the bench must keep its folder for the whole run."""
    p = subprocess.run([sys.executable, str(ROOT / "bench/data_throughput.py"), "--steps", "2", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"streaming \(every image decoded per use\) = \d", p.stdout.strip().splitlines()[-1])
