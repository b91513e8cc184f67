"""The ``resconv`` architecture: convolutional encoder and decoder built of residual blocks."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaecli.plugin import Shape, UsageError, as_int


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), the shape unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, channels: int, blocks: int, input_shape: Shape, params: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.start = (channels, h // 4, w // 4)
        self.input_shape = input_shape
        self.params = params
        self.project = nn.Linear(latent_dim, math.prod(self.start))
        self.body = nn.Sequential(
            *[ResidualBlock(channels) for _ in range(blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
            *[ResidualBlock(channels) for _ in range(blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, params * c, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.project(z).view(z.shape[0], *self.start))
        return out.view(z.shape[0], self.params, *self.input_shape)


def resconv(
    input_shape: Shape,
    latent_dim: int,
    params_per_pixel: int,
    channels: str | int = 32,
    blocks: str | int = 1,
) -> tuple[nn.Module, nn.Module]:
    """Two stride-2 stages of ``blocks`` residual blocks of ``channels`` channels each way.
    Image sides must be multiples of 4."""
    c, h, w = input_shape
    width, depth = as_int(channels, "channels"), as_int(blocks, "blocks")
    if h % 4 or w % 4:
        raise UsageError(f"architecture 'resconv' needs image sides that are multiples of 4, got {h}x{w}")
    if width < 1 or depth < 0:
        raise UsageError(f"architecture 'resconv' needs channels >= 1 and blocks >= 0, got {width}, {depth}")
    encoder = nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),
        *[ResidualBlock(width) for _ in range(depth)],
        nn.Conv2d(width, width, 4, stride=2, padding=1),
        *[ResidualBlock(width) for _ in range(depth)],
        nn.Conv2d(width, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * (h // 4) * (w // 4), 2 * latent_dim),
    )
    return encoder, Decoder(latent_dim, width, depth, input_shape, params_per_pixel)
