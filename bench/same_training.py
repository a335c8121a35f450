"""Does a trainer change keep every number? Run this with each revision on PYTHONPATH and compare.

Trains the smoke variants briefly (and with gradient accumulation, and a v + ZTSNR variant with tag
weighting, Min-SNR and dataset normalisation) on one thread, and prints per run a digest of the
final weights, the EMA, every step's per-sample losses and the last resumable state (AdamW moments,
RNG states), then the final loss. ``unfused`` swaps in torch's default AdamW, to compare with a
revision from before the trainer chose the fused one.

    PYTHONPATH=/path/to/old .venv/bin/python bench/same_training.py configs/smoke.yaml > old.txt
    PYTHONPATH=. .venv/bin/python bench/same_training.py configs/smoke.yaml unfused > new.txt
    diff old.txt new.txt
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

import nai3train.trainer as T
from nai3train.config import VariantConfig, load_config
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.trainer import train_variant

torch.set_num_threads(1)
if len(sys.argv) > 2 and sys.argv[2] == "unfused" and hasattr(T, "optimizer"):
    T.optimizer = lambda params, lr, device: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
root = Path(tempfile.mkdtemp())
synthesize(root, 64, 4, 16, seed=0)
d = BucketedDataset.from_scan(scan_folder(root / "train"), default_buckets(16))
vocab = Vocabulary.build(d.tags)
out = {}
for extra, variant in [([], None), (["train.grad_accum=2"], None),
                       ([], VariantConfig(name="tw", prediction="v", ztsnr=True, tag_weighting=True, normalize="dataset", min_snr_gamma=5.0))]:
    cfg = load_config(sys.argv[1], ["data.resolution=16", "train.steps=30", "train.batch_size=8", "train.log_every=7",
                                    "train.checkpoint_every=10", "model.block_out_channels=[16,32]", "model.cross_attention_dim=16"] + extra)
    for v in ([variant] if variant else cfg.variants):
        losses = []
        folder = root / f"{v.name}-{len(extra)}"
        r = train_variant(cfg, v, d, vocab, folder, progress=False, on_step=lambda s, i: losses.append(i["per_sample"].tolist()))
        h = hashlib.sha256()
        for f in ("model.safetensors", "ema.safetensors"):
            w = load_file(str(r.checkpoint / f))
            for k in sorted(w):
                h.update(w[k].numpy().tobytes())
        h.update(json.dumps(losses).encode())
        st = load_file(str(sorted((folder / "checkpoints").iterdir())[-1] / "state.safetensors"))
        for k in sorted(st):
            h.update(st[k].numpy().tobytes())
        out[f"{v.name}{'+accum' if extra else ''}"] = (h.hexdigest()[:16], round(r.final_loss, 10))
for k, v in out.items():
    print(k, *v)
