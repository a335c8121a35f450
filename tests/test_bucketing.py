"""Aspect-ratio bucketing against the algorithm's rules, and the epoch/shard guarantees."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nai3train.data import BucketBatches, BucketedDataset, assign_bucket, make_buckets
from nai3train.data.bucketing import cover_size, kept_fraction, square_kept_fraction
from nai3train.data.folder import FolderScan, ImageRecord


@pytest.mark.parametrize("area,step,lo,hi", [(1024 * 1024, 64, 512, 2048), (512 * 768, 64, 256, 1024),
                                             (16 * 16, 4, 8, 24)])
def test_bucket_set_follows_the_rules(area, step, lo, hi):
    buckets = make_buckets(area, step, lo, hi)
    sizes = {(b.width, b.height) for b in buckets}
    for w, h in sizes:
        assert w * h <= area and lo <= w <= hi and lo <= h <= hi
        assert w % step == 0 and h % step == 0
        assert (h, w) in sizes  # both orientations
    side = math.isqrt(area) // step * step
    assert (min(side, hi), min(side, hi)) in sizes  # the square
    # for every width on the grid, the bucket takes the largest height that fits
    for w in range(lo, hi + 1, step):
        best = min(hi, (area // w) // step * step)
        if best >= lo:
            assert (w, best) in sizes


def test_assignment_is_nearest_in_log_aspect():
    buckets = make_buckets(1024 * 1024, 64, 512, 2048)
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(x) for x in rng.integers(100, 5000, size=2))
        i = assign_bucket(w, h, buckets)
        err = [abs(math.log(b.aspect) - math.log(w / h)) for b in buckets]
        assert err[i] == pytest.approx(min(err))


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_sees_every_image_once_or_carries_it(batch_size, world_size):
    rng = np.random.default_rng(1)
    bucket_of = rng.integers(0, 5, size=101)
    bb = BucketBatches(bucket_of, batch_size, seed=4)
    plan, carried = bb.epoch_plan(0, {}, world_size)
    seen = [i for _, idx in plan for i in idx]
    held = [i for idx in carried.values() for i in idx]
    assert sorted(seen + held) == list(range(101))  # nothing dropped, nothing twice
    assert len(plan) % world_size == 0
    for b, idx in plan:
        assert len(idx) == batch_size and all(bucket_of[i] == b for i in idx)
    # shards: each rank's stream is its slice of the same plan, and ranks stay in step
    streams = [bb.batches(r, world_size) for r in range(world_size)]
    per_rank = [[next(s) for _ in range(len(plan) // world_size)] for s in streams]
    assert sorted(i for rank in per_rank for _, idx in rank for i in idx) == sorted(seen)
    # carried images come first in the next epoch's pools
    nxt, _ = bb.epoch_plan(1, carried, world_size)
    assert set(held) <= {i for _, idx in nxt for i in idx} | {i for idx in _.values() for i in idx}


def test_skip_replays_the_same_stream():
    bb = BucketBatches(np.arange(40) % 3, 4, seed=0)
    full = bb.batches()
    ref = [next(full) for _ in range(30)]
    resumed = bb.batches(skip=17)
    assert [next(resumed) for _ in range(13)] == ref[17:]


def _scan(folder, sizes):
    """A scanned folder of PNGs whose pixels say where they are (row, column, image index)."""
    recs = []
    for n, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        px = np.stack([yy % 256, xx % 256, np.full_like(yy, n)], -1).astype(np.uint8)
        Image.fromarray(px).save(folder / f"img{n}.png")
        recs.append(ImageRecord(str(folder / f"img{n}.png"), ["tag"], h, w))
    return FolderScan(recs)


def test_crop_and_size_conditioning_agree_with_the_pixels(tmp_path):
    buckets = make_buckets(64 * 64, 16, 32, 96)
    ds = BucketedDataset.from_scan(_scan(tmp_path, [(50, 120), (100, 60), (64, 64), (33, 200)]), buckets)
    gen = torch.Generator().manual_seed(0)
    for i in range(len(ds)):
        bk = ds.buckets[int(ds.bucket_of[i])]
        for g in (gen, None):
            arr, crop = ds.crop(i, g)
            top, left = crop.crop_top_left
            cover = ds.cover(i)
            assert crop.target_size == (bk.height, bk.width) == arr.shape[:2]
            assert crop.original_size == ds.original_sizes[i]
            assert cover.shape[:2] == cover_size(crop.original_size[1], crop.original_size[0], bk)[::-1]
            assert 0 <= top <= cover.shape[0] - bk.height and 0 <= left <= cover.shape[1] - bk.width
            np.testing.assert_array_equal(arr, cover[top:top + bk.height, left:left + bk.width])
            if g is None:
                assert (top, left) == ((cover.shape[0] - bk.height) // 2, (cover.shape[1] - bk.width) // 2)
    x, ids = ds.batch([0], None)
    assert x.shape[1:] == (3, ds.buckets[int(ds.bucket_of[0])].height, ds.buckets[int(ds.bucket_of[0])].width)
    assert ids[0].tolist() == [50, 120, *ds.crop(0, None)[1].crop_top_left, x.shape[2], x.shape[3]]


def test_bucketing_keeps_more_pixels_than_a_centre_square(tmp_path):
    buckets = make_buckets(1024 * 1024, 64, 512, 2048)
    for w, h in [(1920, 1080), (1080, 1920), (3000, 1000), (1200, 1600)]:
        b = buckets[assign_bucket(w, h, buckets)]
        assert kept_fraction(w, h, b) > square_kept_fraction(w, h)
    report = BucketedDataset.from_scan(_scan(tmp_path, [(50, 120), (100, 60), (64, 64)]),
                                       make_buckets(64 * 64, 16, 32, 96)).report()
    assert report["mean_pixels_kept"] > report["mean_pixels_kept_centre_square"]
    assert sum(b["count"] for b in report["buckets"].values()) == 3


def test_resize_cover_really_covers():
    from nai3train.data.bucketing import resize_cover

    b = make_buckets(64 * 64, 16, 32, 96)[0]
    img = resize_cover(Image.new("RGB", (37, 211)), b)
    assert img.width >= b.width and img.height >= b.height
    assert min(img.width - b.width, img.height - b.height) <= 1
