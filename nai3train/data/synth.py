"""The embedded benchmark: a deterministic, tagged image set where every paper claim has something
to bite on (docs/data.md, "The embedded benchmark").

Each image has exactly three danbooru-style tags:

* a background — ``white_background`` (solid 1.0), ``black_background`` (solid 0.0),
  ``grey_background`` (solid 0.5), ``blue_background`` (solid (0.2, 0.35, 0.6)) and the rare
  ``gradient_background`` (dark at the top to light at the bottom). Solid black and white are the
  extreme-brightness prompts of claims C2/C3;
* an object count — ``1_object``, ``2_objects``, ``3_objects`` (coherence, C4);
* an object kind ``{colour}_{shape}``: colours red, blue, green, yellow, purple, orange and
  shapes circle, square, cross, drawn with long-tailed frequencies (purple/orange and cross are
  rare; e.g. ``orange_cross`` appears in well under 2 % of images) for tag-weighting (C6).

All objects of an image share colour and shape; they are placed without overlap. A faint
pixel texture (std 0.02) keeps feature statistics non-degenerate. Files are written in the same
format as user data (PNG + comma-separated ``.txt`` tags), so the same loader reads both; a
``metadata.jsonl`` per split records each image's ground truth (tags, background RGB, object
centres, size).

Aspect ratios: the training split is 60 % square, the rest spread over 4:3, 3:4, 3:2, 2:3, 2:1 and
1:2, drawn at twice the training area so bucketing (``bucketing.py``) has something to do. The eval
split — the held-out prompt set — is square at the training resolution: its tags are the prompts,
its images the reference set.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUNDS = {  # name: (probability, RGB or None for the gradient)
    "white_background": (0.24, (1.0, 1.0, 1.0)),
    "black_background": (0.24, (0.0, 0.0, 0.0)),
    "grey_background": (0.28, (0.5, 0.5, 0.5)),
    "blue_background": (0.16, (0.2, 0.35, 0.6)),
    "gradient_background": (0.08, None),
}
COUNTS = {"1_object": (0.5, 1), "2_objects": (0.3, 2), "3_objects": (0.2, 3)}
COLOURS = {
    "red": (0.35, (0.9, 0.1, 0.1)),
    "blue": (0.25, (0.1, 0.25, 1.0)),
    "green": (0.2, (0.1, 0.8, 0.2)),
    "yellow": (0.12, (0.95, 0.9, 0.1)),
    "purple": (0.05, (0.6, 0.2, 0.8)),
    "orange": (0.03, (1.0, 0.55, 0.0)),
}
SHAPES = {"circle": 0.6, "square": 0.32, "cross": 0.08}
ASPECTS = {(1, 1): 0.6, (4, 3): 0.08, (3, 4): 0.08, (3, 2): 0.07, (2, 3): 0.07, (2, 1): 0.05, (1, 2): 0.05}


def _pick(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    p = np.array([v[0] if isinstance(v, tuple) else v for v in table.values()], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _shape_mask(shape: str, size: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size[0], 0:size[1]] + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    arm = max(r * 0.35, 0.6)
    return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))


def render(tags: dict[str, str], size: int | tuple[int, int], rng: np.random.Generator
           ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Draw one image (H, W, 3) in [0, 1]; returns it and the object centres (y, x) in pixels."""
    h, w = (size, size) if isinstance(size, int) else size
    bg = BACKGROUNDS[tags["background"]][1]
    if bg is None:
        ramp = np.linspace(0.1, 0.9, h)[:, None, None]
        img = np.broadcast_to(ramp, (h, w, 3)).copy()
    else:
        img = np.broadcast_to(np.array(bg), (h, w, 3)).copy()
    n = COUNTS[tags["count"]][1]
    colour, shape = tags["object"].split("_", 1)
    rgb = np.array(COLOURS[colour][1])
    r = min(h, w) / 7.0 if h == w else math.sqrt(h * w) / 7.0
    centres: list[tuple[float, float]] = []
    for _ in range(500):
        if len(centres) == n:
            break
        cy, cx = rng.uniform(r + 0.5, h - r - 0.5), rng.uniform(r + 0.5, w - r - 0.5)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (2.2 * r) ** 2 for y, x in centres):
            centres.append((cy, cx))
    for cy, cx in centres:
        img[_shape_mask(shape, (h, w), cy, cx, r)] = rgb
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1), centres


def draw_size(rng: np.random.Generator, resolution: int) -> tuple[int, int]:
    """(h, w) for a training image: an aspect from ASPECTS at twice the training area."""
    keys = list(ASPECTS)
    p = np.array(list(ASPECTS.values()))
    aw, ah = keys[int(rng.choice(len(keys), p=p / p.sum()))]
    area = 2 * resolution * resolution
    return max(8, round(math.sqrt(area * ah / aw))), max(8, round(math.sqrt(area * aw / ah)))


def draw_tags(rng: np.random.Generator) -> dict[str, str]:
    colour, shape = _pick(rng, COLOURS), _pick(rng, SHAPES)
    return {"background": _pick(rng, BACKGROUNDS), "count": _pick(rng, COUNTS), "object": f"{colour}_{shape}"}


def synthesize(out: str | Path, train_size: int = 512, eval_size: int = 64, resolution: int = 16,
               seed: int = 0) -> dict:
    """Write ``out/train`` and ``out/eval`` (PNG + .txt + metadata.jsonl) and ``out/card.json``.

    Deterministic from ``seed``: the same arguments give byte-identical files and the same
    content hash. The eval split is the held-out prompt set, its tags the ground truth.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_size), ("eval", eval_size)):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(n):
            t = draw_tags(rng)
            size = draw_size(rng, resolution) if split == "train" else (resolution, resolution)
            pixels, centres = render(t, size, rng)
            img = (pixels * 255).round().astype(np.uint8)
            tags = [t["background"], t["count"], t["object"]]
            stem = d / f"{i:06d}"
            Image.fromarray(img).save(stem.with_suffix(".png"))
            stem.with_suffix(".txt").write_text(", ".join(tags) + "\n")
            bg = BACKGROUNDS[t["background"]][1]
            records.append({"file": stem.with_suffix(".png").name, "tags": tags, "height": size[0], "width": size[1],
                            "background_rgb": list(bg) if bg else None, "count": COUNTS[t["count"]][1],
                            "object": t["object"], "centres": [[round(y, 2), round(x, 2)] for y, x in centres]})
        (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from .card import dataset_card  # the same card `nai3 data inspect` prints for any folder
    from .identity import dataset_identity

    card = {"generator": "nai3 benchmark v2", "seed": seed, "resolution": resolution,
            "content_hash": dataset_identity(out / "train", out / "eval"),
            "splits": {split: dataset_card(out / split, resolution) for split in ("train", "eval")}}
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return card
