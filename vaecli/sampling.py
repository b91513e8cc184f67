"""``sample()``: draw images from a trained model's prior and decoder."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import save

from vaecli.devices import choose_device
from vaecli.errors import UsageError
from vaecli.images import check_grid, grid_png
from vaecli.modelfile import load_model

MAX_SAMPLE_BYTES = 1 << 30  # z and images, float32, held at once


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
    temperature: float | Sequence[float] = 1.0,
    grid: bool = False,
) -> Samples:
    """z from the model's prior at temperature T (N(0, T^2 I) for the default prior; a mixture's
    component is chosen, then its spread scaled by T; 1 is the prior), then the decoder's picture of
    p(x|z) in ``mode`` (mean, sample, ...). ``grid``: the samples are for a grid picture, whose
    size is checked first. Samples are held in memory: more than MAX_SAMPLE_BYTES are refused
    before any work (draw several files with different seeds instead)."""
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    values = [temperature] if isinstance(temperature, (int, float)) else list(temperature)
    for value in values:
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--temperature must be a positive number, got {value}")
    target = choose_device(device)
    model, _ = load_model(model_or_run, target)
    model.group_temperatures(temperature)  # (one, or one per latent group: checked before any work)
    model.likelihood.check_mode(mode)
    per_sample = 4 * (model.latent_dim + math.prod(model.input_shape))
    if n * per_sample > MAX_SAMPLE_BYTES:
        most = MAX_SAMPLE_BYTES // per_sample
        raise UsageError(
            f"--n {n}: {n * per_sample / 2**30:.1f} GiB of samples; at most {most} of this model's fit "
            f"in {MAX_SAMPLE_BYTES >> 30} GiB (draw several files, each with its own --seed)"
        )
    if grid:
        check_grid(n, model.input_shape, f"--n {n}")
    # Draw on the CPU with a seeded generator so a seed means the same z on every device.
    generator = torch.Generator().manual_seed(seed)
    z = model.sample_prior(n, generator, temperature)
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
