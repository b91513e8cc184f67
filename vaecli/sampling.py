"""``sample()``: draw images from a trained model's prior and decoder."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from safetensors.torch import save

from vaecli.devices import choose_device
from vaecli.errors import UsageError
from vaecli.images import grid_png
from vaecli.modelfile import load_model


@dataclass
class Samples:
    """Latent codes z (n, latent_dim) and the images decoded from them (n, C, H, W) in [0, 1]."""

    z: torch.Tensor
    images: torch.Tensor


@torch.no_grad()
def sample(
    model_or_run: str | os.PathLike[str],
    n: int = 64,
    seed: int = 0,
    mode: str = "mean",
    device: str = "auto",
    temperature: float = 1.0,
) -> Samples:
    """z ~ N(0, T^2 I) (T = ``temperature``; 1 is the prior), then the decoder's picture of
    p(x|z) in ``mode`` (mean, sample, ...)."""
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"--temperature must be a positive number, got {temperature}")
    target = choose_device(device)
    model, _ = load_model(model_or_run, target)
    model.likelihood.check_mode(mode)
    # Draw on the CPU with a seeded generator so a seed means the same z on every device.
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=generator) * temperature
    pixels_generator = torch.Generator(device=target).manual_seed(seed + 1)
    images = torch.cat(
        [
            model.likelihood.image(model.decode(chunk.to(target)), mode, pixels_generator)
            for chunk in z.split(1024)
        ]
    )
    return Samples(z=z, images=images.cpu())


def encode_samples(samples: Samples, format: str, nrow: int | None = None) -> bytes:
    """The bytes of ``samples`` as a PNG grid or a safetensors file of z and images."""
    if format == "png":
        return grid_png(samples.images, nrow)
    return save({"z": samples.z.contiguous(), "images": samples.images.contiguous()})
