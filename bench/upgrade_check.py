"""Evidence that survives upgrades, counted on a real store: run a tiny smoke ablation on a copy of
this checkout, edit the copy between runs, and count the MLflow runs tagged ``nai3.kind`` = train
and eval after each run.

    .venv/bin/python bench/upgrade_check.py [--steps 30] [--keep DIR]

The edits, in order (each appended or applied to the copy, never to this checkout):
  1. an unused function appended to the progress-bar module (``nai3train/ops/progress.py``);
  2. an unused function appended to the module that writes report.html (``nai3eval/reporting/report.py``);
  3. an unused function appended to a metric (``nai3eval/metrics/brightness.py``);
  4. the learning rate halved in ``linear_warmup`` (``nai3train/training/lr.py``).
Expected: 0 trainings and 0 evaluations after 1 and 2 (the report rendered again), 0 trainings and
every point evaluated again after 3, every arm trained and evaluated again after 4; the nightly's
next seed goes on after 1–3. The last line gives the counts, then the target.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDITS = (("progress bar", "nai3train/ops/progress.py", None),
         ("report.html writer", "nai3eval/reporting/report.py", None),
         ("a metric", "nai3eval/metrics/brightness.py", None),
         ("lr halved in linear_warmup", "nai3train/training/lr.py",
          ("return base_lr * min(", "return 0.5 * base_lr * min(")))
COUNT = """
import json, sys
from mlflow.tracking import MlflowClient
from flows import runs
from flows.pipeline import Workspace, prepare_data
from nai3train.config import load_config
uri, work = sys.argv[1], sys.argv[2]
client = MlflowClient(uri)
exp = client.get_experiment_by_name("nai3-smoke").experiment_id
n = {k: len(client.search_runs([exp], f"tags.`nai3.kind` = '{k}'", max_results=5000)) for k in ("train", "eval")}
cfg = load_config("configs/smoke.yaml", sys.argv[3:])
data = prepare_data(cfg, Workspace(__import__("pathlib").Path(work), uri, exp))
n["next_seeds"] = list(runs.next_seeds(cfg, data.content_hash, uri, exp))
print(json.dumps(n))
"""


def copy_checkout(dest: Path) -> None:
    """The files a clone would have: tracked and untracked-but-not-ignored ones."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in names:
        src, to = ROOT / name, dest / name
        to.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # nai3train/config/bundled -> ../../configs, as a clone has it
            os.symlink(os.readlink(src), to)
        elif src.is_file():
            shutil.copy2(src, to)


def edit(clone: Path, path: str, replace: tuple[str, str] | None) -> None:
    f = clone / path
    text = f.read_text()
    if replace is None:
        f.write_text(text + "\n\ndef _an_unused_function():\n    return 1\n")
    else:
        assert replace[0] in text, f"{path}: {replace[0]!r} not found"
        f.write_text(text.replace(replace[0], replace[1], 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--keep", help="the folder to work in (kept); default: a temporary one")
    a = ap.parse_args()
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="nai3-upgrade-"))
    clone = base / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    copy_checkout(clone)
    uri, work = f"sqlite:///{clone}/mlflow/mlflow.db", clone / "runs"
    overrides = ["--set", f"train.steps={a.steps}"]
    env = dict(os.environ, PYTHONPATH=str(clone), PREFECT_HOME=str(base / "prefect"), MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1")
    rows = []
    for step, (what, path, replace) in enumerate([(None, None, None), *EDITS]):
        if path:
            edit(clone, path, replace)
        report = work / "results" / "report" / "report.html"
        before = report.stat().st_mtime_ns if report.is_file() else 0
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "flows.cli", "ablation", "configs/smoke.yaml", "--no-progress",
                            "--work-dir", str(work), "--tracking-uri", uri, *overrides], cwd=clone, env=env,
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if p.returncode:
            print(p.stdout[-3000:], p.stderr[-3000:])
            return 1
        n = json.loads(subprocess.run([sys.executable, "-c", COUNT, uri, str(work), f"train.steps={a.steps}"],
                                      cwd=clone, env=env, check=True, capture_output=True, text=True
                                      ).stdout.strip().splitlines()[-1])
        rerendered = report.is_file() and report.stat().st_mtime_ns > before
        rows.append((what or "first run", n["train"], n["eval"], n["next_seeds"], rerendered, seconds))
        print(f"{rows[-1][0]:<28} train runs {n['train']:>3}  eval runs {n['eval']:>3}  nightly's seeds "
              f"{n['next_seeds']}  report rendered {'yes' if rerendered else 'no'}  ({seconds:.0f} s)", flush=True)
    added = [(b[1] - a_[1], b[2] - a_[2]) for a_, b in zip(rows, rows[1:])]
    print("added per edit (trainings, evaluations): " + ", ".join(f"{r[0]} {d}" for r, d in zip(rows[1:], added))
          + f" (target: (0, 0), (0, 0), (0, {rows[0][2]}), ({rows[0][1]}, {rows[0][2]}))")
    return 0 if added == [(0, 0), (0, 0), (0, rows[0][2]), (rows[0][1], rows[0][2])] else 1


if __name__ == "__main__":
    sys.exit(main())
