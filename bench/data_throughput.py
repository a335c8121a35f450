"""Data loading vs training throughput on the same batches (issue: loading must not be the bottleneck).

Side by side in one run, on the embedded benchmark at its default size: images/s of producing
bucketed batches (bucket plan + decode or LRU hit + random crop + tensor conversion, what the
trainer does per step) versus images/s of the tiny model's training step on those same batches.
Loading is measured twice: with the LRU of decoded images warm (the benchmark fits) and streaming
with no LRU (every image decoded at each use, a real-size folder's worst case). Prints the
streaming ratio last.

    .venv/bin/python bench/data_throughput.py [--steps 40] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nai3train.config import VariantConfig, load_config
from nai3train.data import BucketBatches, BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.diffusion import min_snr_weight, noise_sample, training_target
from nai3train.models import TinyTagUNet
from nai3train.variant import build_denoiser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    cfg = load_config(ROOT / "configs/smoke.yaml")
    with tempfile.TemporaryDirectory() as d:  # images are decoded when a batch asks: the folder must outlive the run
        synthesize(d, cfg.data.train_size, 8, cfg.data.resolution, seed=0)
        t0 = time.perf_counter()
        scan = scan_folder(Path(d) / "train")
        scan_s = time.perf_counter() - t0
        data = BucketedDataset.from_scan(scan, default_buckets(cfg.data.resolution))
        vocab = Vocabulary.build(data.tags)
        ids_all = vocab.ids(data.tags, cfg.model.max_tags)

        def load(ds: BucketedDataset) -> tuple[list, float]:
            """a.steps batches as the trainer draws them: bucket plan, decode (or LRU hit), crop, tensors."""
            gen = torch.Generator().manual_seed(0)
            stream = BucketBatches(ds.bucket_of, a.batch_size).batches()
            t0 = time.perf_counter()
            out = []
            for _ in range(a.steps):
                _, idx = next(stream)
                x0, time_ids = ds.batch(idx, gen)
                out.append((x0, time_ids, ids_all[idx]))
            return out, time.perf_counter() - t0

        streaming = BucketedDataset.from_scan(scan, data.buckets)
        streaming.cache_bytes = 0  # every image decoded at every use: a real-size folder's worst case
        _, stream_s = load(streaming)
        load(data)  # fill the LRU (the benchmark fits whole after one epoch)
        batches, load_s = load(data)
    gen = torch.Generator().manual_seed(0)

    model = TinyTagUNet(len(vocab), cfg.data.resolution, cfg.model.block_out_channels,
                        cfg.model.cross_attention_dim, cfg.model.max_tags)
    variant = VariantConfig(name="v", prediction="v", ztsnr=True)
    den = build_denoiser(model, variant, 3 * data.max_area)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sigmas = den.schedule.sigmas

    def step(x0, time_ids, ids):
        t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        f = den.raw(noise_sample(x0, eps, sigmas[t]), sigmas[t], {"tag_ids": ids, "time_ids": time_ids})
        loss = (min_snr_weight("v", sigmas[t], None).float() *
                (f - training_target("v", x0, eps, sigmas[t])).pow(2).flatten(1).mean(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(*batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        step(*b)
    train_s = time.perf_counter() - t0
    n = a.steps * a.batch_size
    print(f"torch threads: {torch.get_num_threads()}, batch {a.batch_size}, {a.steps} batches, "
          f"{len(data)} images in {len(set(data.bucket_of.tolist()))} buckets")
    print(f"scan (decode once to validate, keep no pixels): {len(data) / scan_s:10.1f} img/s (once per run)")
    print(f"data loading, LRU warm         : {n / load_s:10.1f} img/s")
    print(f"data loading, streaming (no LRU): {n / stream_s:10.1f} img/s")
    print(f"training step                  : {n / train_s:10.1f} img/s")
    print(f"ratio loading/training: LRU warm {(n / load_s) / (n / train_s):.1f}; "
          f"streaming (every image decoded per use) = {(n / stream_s) / (n / train_s):.1f}  (target ≥ 5)")


if __name__ == "__main__":
    main()
