"""Pictures: images and image grids as PNG bytes."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image

from vaecli.errors import UsageError

GRID_PADDING = 2
#: The largest grid picture: 8192 x 8192 pixels (64 MB of 8-bit RGB), enough for 74,000 MNIST
#: images; a larger one is refused before any work, with how many images fit.
MAX_GRID_PIXELS = 8192 * 8192


def check_grid(count: int, shape: tuple[int, ...], what: str, nrow: int | None = None) -> None:
    """Refuse a grid of ``count`` images of ``shape`` (C, H, W) larger than MAX_GRID_PIXELS;
    ``what`` is the option that asked for it, for the message."""
    height, width = shape[-2] + GRID_PADDING, shape[-1] + GRID_PADDING
    cols = nrow or max(1, math.isqrt(count - 1) + 1)
    rows = math.ceil(count / cols)
    if rows * height * min(cols, count) * width > MAX_GRID_PIXELS:
        fit = MAX_GRID_PIXELS // (height * width)
        raise UsageError(
            f"{what}: a picture of {count} images of {shape[-2]}x{shape[-1]} is too large (a grid holds at "
            f"most about {fit}, {math.isqrt(MAX_GRID_PIXELS)}x{math.isqrt(MAX_GRID_PIXELS)} pixels)"
        )


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A PNG of images (N, C, H, W) in [0, 1] laid out in a grid (square by default)."""
    check_grid(images.shape[0], tuple(images.shape[1:]), "the grid", nrow)
    return png_bytes(image_grid(images.detach().float().clamp(0, 1).cpu(), nrow))


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = GRID_PADDING) -> torch.Tensor:
    """Images (N, C, H, W) as one (C, H', W') picture, ``nrow`` to a row (square by default),
    ``padding`` black pixels around each: torchvision's ``make_grid`` layout, grey kept grey.
    (Not torchvision's own: importing it imports torch._dynamo, 2 s of every run's end.)"""
    count, channels, height, width = images.shape
    if count == 1:
        return images[0]
    cols = min(nrow or max(1, math.isqrt(count - 1) + 1), count)
    rows = math.ceil(count / cols)
    step_y, step_x = height + padding, width + padding
    grid = images.new_zeros(channels, rows * step_y + padding, cols * step_x + padding)
    for index, image in enumerate(images):
        y, x = padding + (index // cols) * step_y, padding + (index % cols) * step_x
        grid[:, y : y + height, x : x + width] = image
    return grid


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
