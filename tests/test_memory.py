"""Gradient checkpointing: 'auto' decides from a memory estimate made on the meta device, checked
against the one GPU figure we have; on or off, the losses are the same."""
from __future__ import annotations

import sys

import pytest
import torch

from nai3train.config import load_config
from nai3train.ops import memory

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from sdxl_arch import SDXL_UNET, TINY_UNET  # noqa: E402  (bench/sdxl_arch.py: the published SDXL-base config)

GiB = 1 << 30
MEASURED_H200_GIB = 76.2  # the bare loop (now bench/train_mfu.py A), batch 4, 1024², no EMA, no checkpointing


@pytest.mark.slow
def test_the_estimate_matches_the_measured_sdxl_step():
    """SDXL-base, batch 4, 128² latents, bf16 autocast, AdamW, no EMA: the bare loop that peaked at
    76.2 GiB on an H200 (torch.cuda.max_memory_allocated). Within 10 %."""
    est = memory.step_memory(SDXL_UNET, batch=4, latent=128, ema=False, amp=True)
    assert abs(est.params - 2_567_463_684) < 1e6  # SDXL-base UNet's published parameter count
    assert est.state == est.params * 16
    assert abs(est.total / GiB - MEASURED_H200_GIB) / MEASURED_H200_GIB < 0.10, est.line()


def test_activations_are_affine_in_the_batch_and_amp_saves_less():
    """The instrument's own behaviour on a tiny UNet: saved activations are a fixed part (autocast's
    bf16 copies of the weights) plus a part linear in the batch, and bf16 autocast saves less than fp32."""
    act = {b: memory.step_memory(TINY_UNET, batch=b, latent=16, ema=True).activations for b in (1, 2, 4)}
    assert act[4] - act[2] == 2 * (act[2] - act[1]) > 0
    weights_bf16 = memory.step_memory(TINY_UNET, batch=1, latent=16).params * 2
    assert 0 < act[1] - (act[2] - act[1]) <= weights_bf16 * 1.01  # the fixed part: at most the weights' bf16 copies
    fp32 = memory.step_memory(TINY_UNET, batch=4, latent=16, ema=True, amp=False).activations
    assert act[4] < fp32


def test_auto_follows_the_estimate_and_the_tiny_model_never_needs_it(monkeypatch, tmp_path):
    cfg = load_config(ROOT / "configs/smoke.yaml", [])
    assert memory.checkpointing_needed(cfg) is False  # the tiny model: no estimate, never needed
    from .sdxl_tiny import build_tiny_sdxl

    sdxl = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={build_tiny_sdxl(tmp_path / 'm')}",
                                                     "data.resolution=16", "train.batch_size=2"])
    monkeypatch.setattr(memory, "device_memory", lambda: 100 * GiB)
    assert memory.checkpointing_needed(sdxl) is False
    monkeypatch.setattr(memory, "device_memory", lambda: 1 << 20)  # 1 MiB: nothing fits
    assert memory.checkpointing_needed(sdxl) is True


@pytest.mark.slow
def test_checkpointing_on_and_off_give_the_same_losses(tmp_path):
    """The tiny SDXL bundle trained 4 steps with and without recomputation: the same per-sample
    losses at every step, to float tolerance."""
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
    from nai3train.trainer import train_variant

    from .sdxl_tiny import build_tiny_sdxl

    model = build_tiny_sdxl(tmp_path / "sdxl")
    synthesize(tmp_path / "bench", 8, 2, 16, seed=0)
    d = BucketedDataset.from_scan(scan_folder(tmp_path / "bench" / "train"), default_buckets(16))
    losses = {}
    for mode in ("on", "off"):
        cfg = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={model}", "data.resolution=16",
                                                        "train.steps=4", "train.batch_size=2",
                                                        f"train.gradient_checkpointing={mode}"])
        seen = []
        train_variant(cfg, cfg.variants[1], d, Vocabulary.build(d.tags), tmp_path / "runs" / mode, progress=False,
                      on_step=lambda s, info: seen.append(info["per_sample"].clone()))
        losses[mode] = torch.stack(seen)
    torch.testing.assert_close(losses["on"], losses["off"], rtol=1e-5, atol=1e-6)
