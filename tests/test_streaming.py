"""Folder data at real size is streamed: a scan keeps no pixels, repeated scans decode nothing, and
every consumer reads a batch at a time — with the same numbers as reading everything at once."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from nai3eval.pixels import image_brightness, real_batches
from nai3train.data import BucketedDataset, DatasetError, default_buckets, load_folder, scan_folder
from nai3train.data import folder as folder_mod


def _folder(root, n=12, side=256, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = (side, side + 32 * (i % 3))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"tag_{i % 4}, {'black' if i % 2 else 'white'}_background")
    return root


def test_a_scan_keeps_no_pixels(tmp_path):
    root = _folder(tmp_path / "d", n=16, side=256)  # 16 decoded images ≈ 3.5 MB
    decoded_bytes = sum(256 * (256 + 32 * (i % 3)) * 3 for i in range(16))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    scan = scan_folder(root)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(scan.records) == 16
    assert held < decoded_bytes / 16  # less than one decoded image stays in memory
    rec = scan.records[1]
    assert (rec.height, rec.width) == (256, 288) and rec.pixels().shape == (256, 288, 3)


def test_repeated_scans_decode_nothing_until_a_file_changes(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", n=6, side=32)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "bad.txt").write_text("tag_0")
    cache = tmp_path / "cache" / "scan.json"
    calls = []
    real_decode = folder_mod.decode_rgb
    monkeypatch.setattr(folder_mod, "decode_rgb", lambda p, *a: calls.append(p.name) or real_decode(p, *a))
    first = scan_folder(root, cache)
    assert len(calls) == 7 and len(first.records) == 6 and len(first.skipped) == 1
    calls.clear()
    again = scan_folder(root, cache)
    assert calls == []  # neither the good images nor the corrupt one are decoded again
    assert [r.path for r in again.records] == [r.path for r in first.records] and again.skipped == first.skipped
    Image.new("RGB", (40, 24), (1, 2, 3)).save(root / "002.png")  # edited: new size and mtime
    changed = scan_folder(root, cache)
    assert calls == ["002.png"]
    assert next((r.height, r.width) for r in changed.records if r.path.endswith("002.png")) == (24, 40)
    (tmp_path / "cache" / "scan.json").write_text("{not json")  # a damaged cache costs decoding, nothing else
    calls.clear()
    assert len(scan_folder(root, cache).records) == 6 and len(calls) == 7


def test_an_image_changed_after_the_scan_is_a_clear_error(tmp_path):
    root = _folder(tmp_path / "d", n=2, side=32)
    rec = scan_folder(root).records[0]
    (root / "000.png").write_bytes(b"not an image any more")
    with pytest.raises(DatasetError, match="changed during the run"):
        rec.pixels()


def test_batches_equal_the_whole_set_and_the_whole_set_is_refused_when_large(tmp_path, monkeypatch):
    ev = load_folder(_folder(tmp_path / "d", n=10, side=48), 32)
    whole = ev.images
    assert whole.shape == (10, 3, 32, 32)
    parts = list(ev.batches(3))
    assert [len(b) for b in parts] == [3, 3, 3, 1]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)
    torch.testing.assert_close(image_brightness(ev.batches), image_brightness(whole), rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(list(real_batches(ev.batches))), whole, rtol=0, atol=0)
    monkeypatch.setattr(folder_mod, "IN_MEMORY_LIMIT", 10 * 3 * 32 * 32 * 4 - 1)
    with pytest.raises(DatasetError, match="batches"):
        ev.images


def test_bucketed_batches_do_not_depend_on_the_cache_budget(tmp_path):
    scan = scan_folder(_folder(tmp_path / "d", n=9, side=64))
    buckets = default_buckets(64)
    roomy, none = BucketedDataset.from_scan(scan, buckets), BucketedDataset.from_scan(scan, buckets)
    none.cache_bytes = 0
    tight = BucketedDataset.from_scan(scan, buckets)
    tight.cache_bytes = 2 * max(roomy.cover(i).nbytes for i in range(len(roomy)))
    for ds in (roomy, none, tight):
        g = torch.Generator().manual_seed(3)
        groups = [np.flatnonzero(ds.bucket_of == b).tolist() for b in np.unique(ds.bucket_of)]  # one bucket a batch
        out = [ds.batch(idx, g) for idx in groups for _ in range(2)]
        if ds is roomy:
            ref = out
        else:
            for (x, ids), (rx, rids) in zip(out, ref):
                torch.testing.assert_close(x, rx, rtol=0, atol=0)
                torch.testing.assert_close(ids, rids, rtol=0, atol=0)
        assert ds._cached <= ds.cache_bytes
    assert len(none._covers) == 0 and 0 < len(tight._covers) <= 2 and len(roomy._covers) == 9
