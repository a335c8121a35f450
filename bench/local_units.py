"""A plain ``nai3 ablation`` of the smoke matrix with two training seeds (4 units), sequential
(one process, every core's threads) vs parallel (the default: ``flows/local_units.py``), side by
side in one run on this box.

Each run is the whole command as a user types it, in its own work folder and MLflow store, so
nothing is reused between them; the data and the domain tagger are prepared once beforehand in a
shared cache folder each run copies (the steady state of a nightly: they are cached by content),
so the wall time is the units' training, evaluation and the report. Runs alternate (S, P, then
P, S with ``--repeats 2``) and medians are compared. Prints each run's wall time and the speed-up
last.

    .venv/bin/python bench/local_units.py                 # ≈ 15 min on 2 cores
    .venv/bin/python bench/local_units.py --tiny          # a minute: does it run
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.train_size=96", "data.eval_size=16", "train.steps=12", "train.batch_size=8", "eval.prompts=4",
        "eval.seeds_per_prompt=2", "eval.steps=4", "eval.tagger_steps=20"]


def command(work: Path, overrides: list[str], sequential: bool) -> list[str]:
    args = [sys.executable, "-m", "flows.cli", "ablation", str(ROOT / "configs/smoke.yaml"), "--no-progress",
            "--work-dir", str(work / "runs"), "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    for o in overrides + ["train.seeds=[0,1]"]:
        args += ["--set", o]
    return args + (["--sequential"] if sequential else [])


def one_run(base: Path, cache: Path, overrides: list[str], sequential: bool, tag: str) -> float:
    """Wall seconds of one whole ablation in a fresh folder seeded with the prepared data and tagger."""
    work = base / tag
    shutil.copytree(cache, work / "runs", symlinks=True)
    env = dict(os.environ, PREFECT_HOME=str(base / f"prefect-{tag}"), MLFLOW_TRACKING_URI="")
    env.pop("PREFECT_API_URL", None)
    env.pop("NAI3_UNITS", None)
    env.pop("NAI3_THREADS", None)
    t0 = time.perf_counter()
    p = subprocess.run(command(work, overrides, sequential), capture_output=True, text=True, env=env, cwd=base)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{tag} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    layout = next((ln[ln.index("units run"):] for ln in (p.stdout + p.stderr).splitlines() if "units run" in ln), "?")
    rates = [ln.split("trained ")[1].split(" (")[0] for ln in (p.stdout + p.stderr).splitlines() if " trained " in ln]
    print(f"{tag:<14} {wall:7.1f} s   {layout.strip()}; " + "; ".join(rates), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return wall


def prepare(cache: Path, overrides: list[str]) -> None:
    """The data and the domain tagger under ``cache``, as a nightly finds them after its first night."""
    sys.path.insert(0, str(ROOT))
    from flows import pipeline
    from nai3train.config import load_config

    cfg = load_config(ROOT / "configs/smoke.yaml", overrides)
    ws = pipeline.Workspace.open(cfg, cache, f"sqlite:///{cache.parent}/prep.db")
    pipeline.prepare_tagger(cfg, pipeline.prepare_data(cfg, ws), ws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each layout (alternating order)")
    ap.add_argument("--tiny", action="store_true", help="a tiny matrix: checks that the bench runs")
    a = ap.parse_args()
    overrides = TINY if a.tiny else []
    with tempfile.TemporaryDirectory(prefix="nai3-local-units-") as d:
        base = Path(d)
        prepare(base / "cache", overrides)
        seq, par = [], []
        for i in range(a.repeats):
            order = [(True, seq), (False, par)] if i % 2 == 0 else [(False, par), (True, seq)]
            for sequential, into in order:
                into.append(one_run(base, base / "cache", overrides, sequential,
                                    f"{'sequential' if sequential else 'parallel'}-{i}"))
    print(f"{os.cpu_count()} cores; the smoke matrix, 2 variants × 2 seeds = 4 units"
          + (" (tiny)" if a.tiny else ""))
    print(f"median sequential: {statistics.median(seq):.1f} s, median parallel: {statistics.median(par):.1f} s")
    print(f"speed-up parallel/sequential {statistics.median(seq) / statistics.median(par):.2f} (target ≥ 1.4)")


if __name__ == "__main__":
    main()
