"""One sweep point end to end vs the same sampler forwards alone, side by side.

"total": ``run_sweep`` on one point through the model bundle — sampling (Euler, 28 native steps
from σ = 20000, CFG 5 in one batched forward), every metric (domain FD and KID from one tagger
featurisation, tag adherence, mean leak, brightness) and every sink (sample grid PNG, an MLflow
child run with params, metrics, grid and per-image CSV in a local SQLite store).
"forwards": the same sampler run alone (``generate``: the same forwards, no metrics, no sinks).
Runs alternate (and swap order); medians are compared; the ratio forwards/total prints last (target ≥ 0.85).

    .venv/bin/python bench/sweep_overhead.py [--images 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from timing import side_by_side  # bench/timing.py

from nai3eval.evaluate import build_instruments
from nai3eval.metrics import InstrumentSettings
from nai3eval.prompts import make_prompt_set
from nai3eval.record import Run
from nai3eval.sampling import generate
from nai3eval.setting import Setting
from nai3eval.reporting.sinks import GridSink, MLflowPointSink
from nai3eval.checkpoint import LoadedCheckpoint
from nai3eval.sweep import run_sweep
from nai3eval.tagger import Tagger
from nai3train.config import VariantConfig, load_config
from nai3train.data import load_folder, synthesize
from nai3train.models import TinyBundle
from nai3train.ops.tracking import Tracker, open_experiment
from nai3train.variant import build_denoiser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config(ROOT / "configs/smoke.yaml")
    r = cfg.data.resolution
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "bench", 64, a.images, r, seed=0)
        ev = load_folder(tmp / "bench" / "eval", r)
        vocab = sorted({t for ts in ev.tags for t in ts})
        bundle = TinyBundle(vocab, r, cfg.model.block_out_channels, cfg.model.cross_attention_dim,
                            cfg.model.max_tags).eval()
        variant = VariantConfig(name="v", prediction="v", ztsnr=True)
        ck = LoadedCheckpoint(bundle, build_denoiser(bundle.network, variant, 3 * r * r), variant)
        tagger = Tagger(len(vocab), r).eval()
        inst = build_instruments(InstrumentSettings.of(cfg.eval), ev.images, ev.tags, tagger, vocab, {t: 0.1 for t in vocab})
        ps = make_prompt_set(ev.tags, a.images // 4, 4, ck.sample_shape, seed=0)
        point = Setting("sweep", 20000.0, 5.0, steps=cfg.eval.steps)
        run = Run(variant, 0, ps.prompts, ps.prompt_index.tolist())
        uri, exp = open_experiment("bench", f"sqlite:///{tmp}/mlflow.db")
        parent = Tracker.start(uri, exp, "bench")
        sinks = [GridSink(tmp / "grids"), MLflowPointSink(parent, exp, variant.config_hash(), vocab, tmp / "points")]

        def total() -> float:
            t0 = time.perf_counter()
            run_sweep(ck, run, [point], ps, inst.metrics, on_point=lambda res, p, s: [k(res, p, s) for k in sinks],
                      progress=False)
            return time.perf_counter() - t0

        def forwards() -> float:
            t0 = time.perf_counter()
            generate(ck, point, ps)
            return time.perf_counter() - t0

        f, t = side_by_side(forwards, total, a.repeats)
    print(f"torch threads {torch.get_num_threads()}; one point: {len(ps)} images, {point.steps} forwards of batch "
          f"{2 * len(ps)}; metrics {[type(m).__name__ for m in inst.metrics]}; sinks grid + MLflow child run")
    print(f"sampler alone  : {f:.2f} s")
    print(f"sweep point    : {t:.2f} s (sampling + metrics + sinks)")
    print(f"ratio forwards/total = {f / t:.3f}  (target ≥ 0.85)")


if __name__ == "__main__":
    main()
