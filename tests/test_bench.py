"""The GPU benchmark script must run anywhere with --tiny (its numbers are not asserted)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_tiny_on_cpu():
    p = subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), "--tiny", "--steps", "1"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    for config in "ABCDEF":  # every configuration of bench/train_mfu.py ran
        assert re.search(rf"^{config} .* img/s  MFU +\d+\.\d%", p.stdout, re.M), p.stdout
    for line in ("ratio trainer/bare", "ratio tuned/bare", "best MFU"):
        assert re.search(rf"^{line} \d", p.stdout, re.M), p.stdout
    assert re.search(r"ratio nai3/diffusers = \d+\.\d+", p.stdout.strip().splitlines()[-1])


def test_data_throughput_bench_runs():
    """Streamed images are decoded when a batch asks: the bench must keep its folder for the whole run."""
    p = subprocess.run([sys.executable, str(ROOT / "bench/data_throughput.py"), "--steps", "2", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"streaming \(every image decoded per use\) = \d", p.stdout.strip().splitlines()[-1])


def test_same_numbers_reports_any_difference(capsys):
    """The before/after comparison passes identical numbers and decisions, and flags one changed
    per-image value, one NaN where a number was, and one changed verdict."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("same_numbers", ROOT / "bench" / "same_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    side = {"numbers": {"0|v|cfg5|kid": 0.25, "0|v|cfg5|brightness": [0.1, float("nan"), 0.3]},
            "claims": {"C2": {"verdict": "supported", "effect": {"value": 0.3}, "per_seed": []}},
            "checks": {"C7": "check passed"}}
    assert mod.compare(side, json.loads(json.dumps(side))) == 0
    assert "0 measurements and 0 decisions differ" in capsys.readouterr().out.splitlines()[-1]
    for change in (lambda d: d["numbers"]["0|v|cfg5|brightness"].__setitem__(2, 0.3000001),
                   lambda d: d["numbers"].__setitem__("0|v|cfg5|kid", float("nan")),
                   lambda d: d["claims"]["C2"].__setitem__("verdict", "inconclusive")):
        other = json.loads(json.dumps(side))
        change(other)
        assert mod.compare(side, other) == 1


@pytest.mark.slow
def test_tracking_load_bench_loses_nothing():
    """The load test of the team tracking server (PostgreSQL, basic auth, proxied artifacts) runs,
    reads every write back and reports in its format; its latencies are not asserted."""
    from .servers import pg_bin

    try:
        pg_bin("initdb")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # MLflow's job runner: a slow start, unused
    p = subprocess.run([sys.executable, str(ROOT / "bench/tracking_load.py"), "--writers", "2", "--seconds", "3",
                        "--artifact-every", "1", "--server-workers", "1"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"^writers 2: calls \d+, [\d.]+ calls/s, p50 [\d.]+ ms, p99 [\d.]+ ms, errors 0, lost 0$",
                     p.stdout, re.M), p.stdout + p.stderr[-3000:]
    assert re.fullmatch(r"p99 \d+\.\d\d s at N = 2 \(target < 1 s\), lost 0", p.stdout.strip().splitlines()[-1])
    assert "log_batch metrics:" in p.stderr and "log_artifact:" in p.stderr  # every kind of write was read back
