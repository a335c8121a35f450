"""An exact instrument for the embedded benchmark: read an image's tags off its pixels.

The benchmark is synthetic (``nai3train.data.synth``): a solid or gradient background from a
palette, then 1–3 objects of one palette colour and one shape, all the same size. So instead of a
learned tagger — whose modest accuracy would attenuate every effect it measures — the scorer reads
the ground truth programmatically:

* background: the border pixels (objects never touch the border) → the nearest palette colour,
  or the gradient when the top and bottom rows differ;
* object pixels: those far from the background expected at their row; their median colour → the
  nearest object palette colour;
* shape: each connected component (8-neighbour) is fitted with the benchmark's own mask rule for
  every shape at the known radius (side/7) over sub-pixel centres; the shape whose masks fit the
  components best (IoU) wins — the right one fits exactly;
* count: one per component that one object fits (IoU ≥ 0.8), and area / one object's area for
  components where objects touch.

It never depends on anything trained, so it can measure every training seed alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from nai3train.data.synth import BACKGROUNDS, COLOURS, COUNTS, SHAPES, _shape_mask

_BG_SOLID = {name: np.array(rgb) for name, (_, rgb) in BACKGROUNDS.items() if rgb is not None}
_OBJ = {name: np.array(rgb) for name, (_, rgb) in COLOURS.items()}
_COUNT_TAG = {n: tag for tag, (_, n) in COUNTS.items()}
_OBJECT_DISTANCE = 0.25  # colour distance from the local background that marks an object pixel


@dataclass(frozen=True)
class Reading:
    background: str
    count: int
    colour: str
    shape: str

    @property
    def tags(self) -> list[str]:
        return [self.background, _COUNT_TAG.get(self.count, f"{self.count}_objects"), f"{self.colour}_{self.shape}"]


def _expected_area(shape: str, h: int, w: int) -> float:
    """Mean pixel area of one object of ``shape`` in an h×w image (averaged over sub-pixel offsets)."""
    r = min(h, w) / 7.0 if h == w else math.sqrt(h * w) / 7.0
    size = int(math.ceil(2 * r)) + 4
    areas = [_shape_mask(shape, (size, size), size / 2 + dy, size / 2 + dx, r).sum()
             for dy in np.linspace(0, 1, 4, endpoint=False) for dx in np.linspace(0, 1, 4, endpoint=False)]
    return float(np.mean(areas))


def _background(img: np.ndarray) -> tuple[str, np.ndarray]:
    """(tag, expected background image) from the border."""
    h, w, _ = img.shape
    top, bottom = img[0].mean(0), img[-1].mean(0)
    if np.abs(bottom - top).mean() > 0.3:  # the gradient runs from 0.1 (top) to 0.9 (bottom)
        ramp = np.linspace(0.1, 0.9, h)[:, None, None]
        return "gradient_background", np.broadcast_to(ramp, img.shape)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    rgb = np.median(border, axis=0)
    name = min(_BG_SOLID, key=lambda k: float(np.abs(_BG_SOLID[k] - rgb).sum()))
    return name, np.broadcast_to(_BG_SOLID[name], img.shape)


def _radius(h: int, w: int) -> float:
    return min(h, w) / 7.0 if h == w else math.sqrt(h * w) / 7.0


_OFFSETS = np.linspace(-1.0, 1.0, 41)


def _fit(component: np.ndarray, shape: str, r: float) -> tuple[float, float]:
    """(best IoU, fraction of centres that reproduce the component exactly) of one rendered
    ``shape`` (radius r), over sub-pixel centres within a pixel of the component's centroid: the
    benchmark's own mask rule, so the right shape fits exactly. The fraction is the likelihood of
    this pixel pattern under the shape (centres are uniform), which decides where two shapes
    render the same pattern (a small circle and a square can both be a 4×4 block)."""
    ys, xs = np.nonzero(component)
    h, w = component.shape
    y0, y1 = max(0, ys.min() - 3), min(h, ys.max() + 4)
    x0, x1 = max(0, xs.min() - 3), min(w, xs.max() + 4)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    py, px = (yy + 0.5).ravel(), (xx + 0.5).ravel()
    target = component[y0:y1, x0:x1].ravel()
    cy = ys.mean() + 0.5 + _OFFSETS[:, None]
    cx = xs.mean() + 0.5 + _OFFSETS[None, :]
    dy = py[None, None, :] - cy[..., None]
    dx = px[None, None, :] - cx[..., None]
    if shape == "circle":
        m = dy**2 + dx**2 <= r**2
    elif shape == "square":
        m = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    else:
        arm = max(r * 0.35, 0.6)
        m = ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    inter = (m & target).sum(-1)
    union = (m | target).sum(-1)
    iou = inter / np.maximum(union, 1)
    return float(iou.max()), float((iou == 1).mean())


def read_image(img: np.ndarray) -> Reading:
    """Tags of one (H, W, 3) image in [0, 1]."""
    h, w, _ = img.shape
    r = _radius(h, w)
    background, expected = _background(img)
    mask = np.linalg.norm(img - expected, axis=2) > _OBJECT_DISTANCE
    if not mask.any():
        return Reading(background, 0, "none", "none")
    rgb = np.median(img[mask], axis=0)
    colour = min(_OBJ, key=lambda k: float(np.abs(_OBJ[k] - rgb).sum()))
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    comps = [labels == i for i in range(1, n + 1)]
    fits = {shape: [_fit(c, shape, r) for c in comps] for shape in SHAPES}
    single = [c for c, f in zip(comps, zip(*fits.values())) if max(x[1] for x in f) > 0]  # one object each

    def score(shape: str) -> tuple[float, float]:
        """(log posterior over exactly-fitting components, total IoU as the fallback)."""
        exact = [f[1] for f in fits[shape] if True]
        usable = [e for e, c in zip(exact, comps) if any(c is s_ for s_ in single)]
        post = math.log(SHAPES[shape]) + sum(math.log(e) if e > 0 else -1e9 for e in usable) if usable else -1e18
        return post, sum(f[0] for f in fits[shape])

    shape = max(fits, key=score)
    area = _expected_area(shape, h, w)
    count = sum(1 if f[0] >= 0.8 else max(1, int(round(c.sum() / area))) for f, c in zip(fits[shape], comps))
    return Reading(background, int(min(count, 3)), colour, shape)


def read_tags(images: torch.Tensor) -> list[list[str]]:
    """Tags of a batch of images in [−1, 1] (N, 3, H, W)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return [read_image(a).tags for a in x]


def count_objects(images: torch.Tensor, min_area: int = 2) -> list[int]:
    """Objects per image in [−1, 1] (N, 3, H, W) as connected components of object pixels — no
    assumption on their size, so it also reads a canvas larger than the one trained on (C4), where
    an incoherent model repeats or splits the subject."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    out = []
    for img in x:
        _, expected = _background(img)
        mask = np.linalg.norm(img - expected, axis=2) > _OBJECT_DISTANCE
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = ndimage.sum(mask, labels, range(1, n + 1)) if n else []
        out.append(int(sum(1 for a in sizes if a >= min_area)))
    return out
