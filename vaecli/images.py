"""Pictures: images and image grids as PNG bytes."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A PNG of images (N, C, H, W) in [0, 1] laid out in a grid (square by default)."""
    from torchvision.utils import make_grid  # imported here: decoding single images needs no torchvision

    nrow = nrow or max(1, math.isqrt(images.shape[0] - 1) + 1)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2)
    return png_bytes(grid[:1] if images.shape[1] == 1 else grid)  # make_grid turns grey into RGB


def png_bytes(image: torch.Tensor) -> bytes:
    """A PNG of one image (C, H, W) in [0, 1]: grey for C = 1, RGB for C = 3."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    if array.shape[0] == 1:
        picture = Image.fromarray(array[0].numpy())
    else:
        picture = Image.fromarray(array.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
