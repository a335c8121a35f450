"""Sample grids as PNG: where a picture beats a number."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nai3train.ops.atomic import atomic_write, rendered

from ..pixels import to_unit


def save_grid(images: torch.Tensor, path: str | Path, ncol: int = 8, upscale: int = 4, pad: int = 2) -> Path:
    """Images in [−1, 1] (N, 3, H, W) → one PNG, nearest-neighbour upscaled for small images."""
    x = (to_unit(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, h, w, _ = x.shape
    ncol = min(ncol, n)
    nrow = (n + ncol - 1) // ncol
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    img = Image.fromarray(canvas)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.Resampling.NEAREST)
    return atomic_write(path, rendered(lambda f: img.save(f, format="PNG")))
