"""The dataset card: what a folder holds, in one JSON document (``nai3 data inspect DIR --json``).

Counts, skipped files with reasons, tag frequencies, size and aspect histograms, a content hash,
per-channel statistics (for normalisation, claim C8), the bucketing report (claim C7) and the
tag-weight histogram.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from .bucketed import BucketedDataset, default_buckets
from .folder import FolderScan, scan_folder, to_tensor
from .identity import content_identity
from .normalize import ChannelStats, RunningChannelStats, channel_stats
from .tag_weights import TagWeighting, tag_frequencies, weight_histogram

ASPECT_EDGES = (0.0, 0.5, 0.67, 0.8, 0.95, 1.05, 1.25, 1.5, 2.0, math.inf)


def pixel_stats(scan: FolderScan) -> ChannelStats:
    """Per-channel statistics of the decoded pixels in [−1, 1], streamed image by image."""
    return channel_stats(to_tensor(r.pixels()).unsqueeze(0) for r in scan.records)


def dataset_card(root: str | Path, resolution: int, scan: FolderScan | None = None) -> dict:
    root = Path(root)
    scan = scan or scan_folder(root)
    sizes = [(r.height, r.width) for r in scan.records]
    aspects = [w / h for h, w in sizes]
    hist, _ = np.histogram(aspects, bins=ASPECT_EDGES)
    labels = [f"{a:g}-{b:g}" for a, b in zip(ASPECT_EDGES[:-1], ASPECT_EDGES[1:])]
    bucketed = BucketedDataset.from_scan(scan, default_buckets(resolution))
    weights = TagWeighting().weights([r.tags for r in scan.records])
    return {
        "root": str(root),
        "count": len(scan.records),
        "skipped_count": len(scan.skipped),
        "skipped": scan.skipped,
        "content_hash": content_identity(root),
        "tag_frequency": tag_frequencies([r.tags for r in scan.records]),
        "size_histogram": {f"{w}x{h}": c for (h, w), c in sorted(Counter(sizes).items())},
        "aspect_histogram": dict(zip(labels, hist.tolist())),
        "pixel_stats": pixel_stats(scan).to_dict(),
        "bucketing": {"resolution": resolution, **bucketed.report()},
        "tag_weights": weight_histogram(weights),
    }


def claim_measurements(scan: FolderScan, resolution: int, heldout: FolderScan | None = None) -> dict:
    """Per-image data for the checks C7 (pixels kept by bucketing vs a centre square) and C8 (the
    training set's channel statistics applied to the held-out split: a set normalised by its own
    statistics is N(0, 1) by construction, so only data it was not fitted on can test it)."""
    from .bucketing import assign_bucket, kept_fraction, square_kept_fraction
    buckets = default_buckets(resolution)
    kept, square = [], []
    for r in scan.records:
        h, w = r.height, r.width
        kept.append(kept_fraction(w, h, buckets[assign_bucket(w, h, buckets)]))
        square.append(square_kept_fraction(w, h))
    stats = pixel_stats(scan)
    after = RunningChannelStats()
    per_image = []
    for r in scan.records:
        z = stats.apply(to_tensor(r.pixels()).unsqueeze(0).double())
        after.update(z)
        per_image.append(float(z.mean()))
    done = after.compute()
    norm = {"mean_before": list(stats.mean), "std_before": list(stats.std), "mean_after": list(done.mean),
            "std_after": list(done.std), "per_image_mean_after": per_image}
    if heldout is not None and heldout.records:
        held = RunningChannelStats()
        for r in heldout.records:
            held.update(stats.apply(to_tensor(r.pixels()).unsqueeze(0).double()))
        h = held.compute()
        norm.update(heldout_mean_after=list(h.mean), heldout_std_after=list(h.std), heldout_images=len(heldout.records))
    return {"bucketing": {"kept": kept, "kept_square": square}, "normalisation": norm}
