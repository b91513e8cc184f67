"""Pictures: image grids as PNG bytes."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image
from torchvision.utils import make_grid


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A PNG of images (N, C, H, W) in [0, 1] laid out in a grid (square by default)."""
    nrow = nrow or max(1, math.isqrt(images.shape[0] - 1) + 1)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2)
    array = grid.mul(255).round().to(torch.uint8)
    if images.shape[1] == 1:
        picture = Image.fromarray(array[0].numpy())
    else:
        picture = Image.fromarray(array.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
