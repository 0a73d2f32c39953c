"""Image grids written atomically as PNG files (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaekit.fileio import atomic_write_bytes, png_bytes


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (rows of `nrow`)."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    out = np.full((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=np.uint8)
    arr = (images.numpy() * 255.0 + 0.5).astype(np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        out[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = arr[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def grid_image(images: torch.Tensor, nrow: int | None = None, scale: int = 2) -> Image.Image:
    """The grid of `images` as a Pillow image, enlarged `scale` times for viewing."""
    im = Image.fromarray(grid(images, nrow))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return im


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2
) -> Path:
    """Save images as one PNG grid (enlarged `scale` times for viewing); returns the path."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(grid_image(images, nrow, scale)))
    return path
