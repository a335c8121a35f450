"""The training step reads nothing back from the device between logging steps.

Every call that makes the host wait for a device value — ``Tensor.item``, ``.cpu()``, ``.tolist()``,
``.numpy()``, and the conversions ``bool``/``float``/``int``/``index`` — is counted by a
``TorchFunctionMode`` on the training thread, step by step (``on_step`` marks the boundaries). The
data feed's own host work runs in its thread (``nai3train/training/feed.py``), off the step, and is
not counted. On the CPU these calls cost little, but each is a full pipeline drain on a GPU: the
count must be zero for every step that neither logs nor checkpoints, for the tiny model and for the
tiny SDXL bundle.
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from nai3train.config import load_config
from nai3train.trainer import train_variant

from .conftest import ROOT, TINY

SYNCS = {torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class CountSyncs(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _per_step(cfg, variant, data, vocab, out) -> dict[int, list[str]]:
    """The sync calls made during each step (between the previous step's end and this one's)."""
    mode, seen = CountSyncs(), {}

    def on_step(step: int, _info: dict) -> None:
        seen[step] = list(mode.calls)
        mode.calls.clear()

    with mode:
        train_variant(cfg, variant, data, vocab, out, progress=False, on_step=on_step)
    return seen


def _quiet_steps(cfg) -> list[int]:
    """Steps that neither log nor checkpoint, and are not the first (which includes the set-up)."""
    tc = cfg.train
    return [s for s in range(1, tc.steps) if (s + 1) % tc.log_every and (s + 1) % tc.checkpoint_every
            and s + 1 != tc.steps]


def test_the_counter_sees_a_sync():
    """The instrument first: it counts each kind of read it claims to."""
    mode = CountSyncs()
    x = torch.ones(3)
    with mode:
        x.sum().item(), x.tolist(), bool(x[0]), float(x[0]), int(x[0]), x.cpu(), [0, 1][x[0].long()]
    assert sorted(mode.calls) == sorted(["item", "tolist", "__bool__", "__float__", "__int__", "cpu", "__index__"])


def test_no_sync_between_logging_steps_tiny_model(tiny_data, tmp_path):
    d, vocab = tiny_data
    cfg = load_config(ROOT / "configs/smoke.yaml", TINY + ["train.steps=12", "train.log_every=5",
                                                           "train.checkpoint_every=7", "variants.nai-v-ztsnr.tag_weighting=true"])
    for variant in cfg.variants:
        seen = _per_step(cfg, variant, d, vocab, tmp_path / variant.name)
        quiet = _quiet_steps(cfg)
        assert quiet and {s: seen[s] for s in quiet} == {s: [] for s in quiet}, variant.name
        assert any(seen[s] for s in range(cfg.train.steps) if s not in quiet)  # logging steps do read


@pytest.mark.slow
def test_no_sync_between_logging_steps_tiny_sdxl(tmp_path):
    from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize

    from .sdxl_tiny import build_tiny_sdxl

    model = build_tiny_sdxl(tmp_path / "sdxl")
    synthesize(tmp_path / "bench", 16, 16, 8, seed=0)
    d = BucketedDataset.from_scan(scan_folder(tmp_path / "bench" / "train"), default_buckets(16))
    cfg = load_config(ROOT / "configs/smoke.yaml", ["model.kind=sdxl", f"model.path={model}", "data.resolution=16",
                                                    "train.steps=8", "train.batch_size=2", "train.log_every=4",
                                                    "train.checkpoint_every=100"])
    variant = cfg.variants[1]
    seen = _per_step(cfg, variant, d, Vocabulary.build(d.tags), tmp_path / "run")
    quiet = _quiet_steps(cfg)
    assert quiet and {s: seen[s] for s in quiet} == {s: [] for s in quiet}
