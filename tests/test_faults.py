"""Faults during training: nothing already computed is lost, and the error says what happened
(the fault matrix's checkpoint rows; see the README's table)."""
import errno

import pytest
import torch

from nai3train import checkpoint as C
from nai3train.checkpoint import latest_step_checkpoint, load_meta, step_checkpoints
from nai3train.config import VariantConfig
from nai3train.data import BucketedDataset, Vocabulary, default_buckets, scan_folder, synthesize
from nai3train.trainer import train_variant


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    synthesize(root, 48, 4, 8, seed=0)
    d = BucketedDataset.from_scan(scan_folder(root / "train"), default_buckets(8))
    return d, Vocabulary.build(d.tags)


V = VariantConfig(name="v", prediction="v", ztsnr=True)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path, tiny_config, caplog):
    d, vocab = data
    cfg = tiny_config(["train.steps=4", "train.checkpoint_every=2"])
    train_variant(cfg, V, d, vocab, tmp_path, progress=False)
    newest = latest_step_checkpoint(tmp_path)
    assert load_meta(newest)["step"] == 4
    weights = newest / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated mid-file
    cfg6 = tiny_config(["train.steps=6", "train.checkpoint_every=2"])
    with caplog.at_level("WARNING"):
        r = train_variant(cfg6, V, d, vocab, tmp_path, progress=False, resume=True)
    assert r.resumed_from == 2 and "step-00000004 unreadable" in caplog.text and "falling back" in caplog.text


def test_a_checkpoint_of_another_variant_is_never_skipped_silently(data, tmp_path, tiny_config):
    d, vocab = data
    train_variant(tiny_config(["train.steps=2", "train.checkpoint_every=2"]), V, d, vocab, tmp_path, progress=False)
    other = VariantConfig(name="v", prediction="eps", ztsnr=False)
    with pytest.raises(ValueError, match="refusing to resume a different variant"):
        train_variant(tiny_config(["train.steps=4"]), other, d, vocab, tmp_path, progress=False, resume=True)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one_and_names_the_path(data, tmp_path, tiny_config,
                                                                                       monkeypatch):
    d, vocab = data
    real_save = C.save_file
    calls = {"n": 0}

    def save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # the first step checkpoint (3 files) fits; the next write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(C, "save_file", save_file)
    with pytest.raises(C.CheckpointWriteError, match=r"could not write checkpoint .*step-00000004.*No space left"):
        train_variant(tiny_config(["train.steps=4", "train.checkpoint_every=2"]), V, d, vocab, tmp_path,
                      progress=False)
    kept = step_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["step-00000002"]
    assert all(torch.isfinite(t).all() for t in C.load_weights(kept[0]).values())  # intact and readable
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written folder
