"""The sampling error of check C8's held-out statistics: how far from N(0, 1) a correct
normalisation's held-out channels may lie by chance.

C8 applies the training set's channel statistics to the held-out split. Pixels of one image are
not independent draws — a black-background image moves every pixel of it — so the unit of
sampling is the image: the held-out channel mean is a ratio of per-image sums, and its standard
error is the cluster (per-image) one. The held-out std is √(Q − M²) of the channel's mean M and
mean square Q, its error the delta method's on the same clusters. The training statistics are
estimated too (from the training split, the same way), so each test adds both variances.

On the embedded benchmark's 64 held-out images the channel mean's standard error is ≈ 0.11: a
fixed tolerance of 0.05 failed correct code on most runs (issue 36). The check is a two-sided test
per channel and statistic at a family-wise α (``CHECK_ALPHA``, Bonferroni over the 2·C tests),
against Student's t with one degree of freedom fewer than the held-out images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CHECK_ALPHA = 0.001  # a correct normalisation fails C8 on one run in a thousand


@dataclass(frozen=True)
class Moments:
    """Per channel: the mean and std after normalising, with their standard errors over images."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    se_mean: tuple[float, ...]
    se_std: tuple[float, ...]
    images: int


def moments(means: np.ndarray, squares: np.ndarray, pixels: np.ndarray) -> Moments:
    """From per-image channel means and mean squares (N, C) and pixel counts (N,) of normalised
    images: the pooled mean and std per channel and their cluster standard errors."""
    w = pixels.astype(float)[:, None]
    total = w.sum()
    m = (w * means).sum(0) / total
    q = (w * squares).sum(0) / total
    s = np.sqrt(np.maximum(q - m * m, 1e-12))
    n = len(pixels)
    small = math.sqrt(n / (n - 1)) if n > 1 else math.nan  # the cluster estimator's small-sample correction
    se_m = small * np.sqrt(((w * (means - m)) ** 2).sum(0)) / total
    u = squares - 2 * m * means  # the linearisation of Q − M² per image
    se_s = small * np.sqrt(((w * (u - (w * u).sum(0) / total)) ** 2).sum(0)) / total / (2 * s)
    return Moments(tuple(m), tuple(s), tuple(se_m), tuple(se_s), n)


def per_image(images, apply) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel means, channel mean squares, pixel counts) of ``apply(x)`` for each (C, H, W) image."""
    ms, qs, ns = [], [], []
    for x in images:
        z = apply(x.unsqueeze(0).double())[0]
        ms.append(z.mean((1, 2)).numpy())
        qs.append((z * z).mean((1, 2)).numpy())
        ns.append(z[0].numel())
    return np.asarray(ms), np.asarray(qs), np.asarray(ns)


def critical(channels: int, images: int, alpha: float = CHECK_ALPHA) -> float:
    """The two-sided critical value of one of the 2·``channels`` tests at family-wise ``alpha``:
    Student's t with ``images`` − 1 degrees of freedom (the held-out images are the clusters)."""
    return float(stats.t.isf(alpha / (2 * 2 * channels), max(images - 1, 1)))


MIN_IMAGES = 32  # below this the std's standard error (fourth moments over few images) is not trusted


def z_scores(held: Moments, train: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the held-out mean's and std's distance from N(0, 1) in standard errors (the
    held-out split's and the training statistics' errors added in quadrature). The std is tested
    as log std, whose sampling law is nearer symmetric: with (std − 1) a correct normalisation
    failed 2.5 times as often as the nominal α at 64 images (tests/test_heldout_check.py)."""
    m, s = np.asarray(held.mean), np.asarray(held.std)
    se_m = np.sqrt(np.asarray(held.se_mean) ** 2 + np.asarray(train.se_mean) ** 2)
    se_s = np.sqrt(np.asarray(held.se_std) ** 2 + np.asarray(train.se_std) ** 2)
    return m / se_m, np.log(s) / (se_s / s)


def detectable(held: Moments, train: Moments, power: float = 0.95) -> tuple[float, float]:
    """The largest channel's mean offset and std error this check catches with ``power``."""
    z = critical(len(held.mean), held.images) + float(stats.norm.isf(1 - power))
    se_m = max(math.hypot(a, b) for a, b in zip(held.se_mean, train.se_mean))
    se_s = max(math.hypot(a, b) for a, b in zip(held.se_std, train.se_std))
    return z * se_m, z * se_s


def measure(train_scan, heldout_scan) -> dict:
    """C8's moments of both splits, normalised by the training split's channel statistics, as the
    report's data measurements keep them (``normalisation.heldout_moments``, ``train_moments``)."""
    from dataclasses import asdict

    from nai3train.data.card import pixel_stats, to_tensor

    fitted = pixel_stats(train_scan)
    out = {}
    for name, scan in (("train_moments", train_scan), ("heldout_moments", heldout_scan)):
        if len(scan.records) < 2:
            continue
        out[name] = asdict(moments(*per_image((to_tensor(r.pixels()) for r in scan.records), fitted.apply)))
    return out
