"""The ``shapes`` dataset: grey images of one filled circle, square or triangle each, drawn
from a seed, so both splits are the same on every machine and nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from vaecli.plugin import DATASET_SPLITS, ImageData, UsageError, as_int

CLASSES = ("circle", "square", "triangle")
SPLIT_SEEDS = {"train": 0, "test": 1}


def shapes(
    root: Path,
    split: str,
    size: str | int = 28,
    train_images: str | int = 10000,
    test_images: str | int = 2000,
    seed: str | int = 0,
) -> ImageData:
    """``size`` x ``size`` grey images (uint8) with labels 0 circle, 1 square, 2 triangle."""
    if split not in DATASET_SPLITS:
        raise UsageError(f"dataset 'shapes' has no split '{split}' (it has: train, test)")
    side = as_int(size, "size")
    n = as_int(train_images if split == "train" else test_images, f"{split}_images")
    if side < 8 or n < 1:
        raise UsageError(f"dataset 'shapes' needs size >= 8 and at least one image, got size={side}, n={n}")
    generator = torch.Generator().manual_seed(as_int(seed, "seed") * 2 + SPLIT_SEEDS[split])
    labels = torch.randint(0, len(CLASSES), (n,), generator=generator)
    radius = side * (0.15 + 0.2 * torch.rand(n, 1, 1, generator=generator))
    offset = side * 0.5 - radius  # centres keep every shape inside the image
    cy = side * 0.5 + offset * (2 * torch.rand(n, 1, 1, generator=generator) - 1)
    cx = side * 0.5 + offset * (2 * torch.rand(n, 1, 1, generator=generator) - 1)
    brightness = 128 + 127 * torch.rand(n, 1, 1, generator=generator)
    grid = torch.arange(side, dtype=torch.float32) + 0.5
    dy = grid.view(1, side, 1) - cy
    dx = grid.view(1, 1, side) - cx
    circle = dx**2 + dy**2 <= radius**2
    square = (dx.abs() <= radius * 0.85) & (dy.abs() <= radius * 0.85)
    triangle = (dy <= radius * 0.8) & (dy >= -radius) & (dx.abs() <= (dy + radius) * 0.6)
    masks = torch.stack([circle, square, triangle], dim=1)  # (n, 3, side, side)
    mask = masks[torch.arange(n), labels]
    images = (mask * brightness).round().to(torch.uint8).unsqueeze(1)
    return ImageData(images=images, labels=labels, name="shapes")
