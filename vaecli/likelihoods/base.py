"""Decoder distributions p(x|z): log-probabilities in nats per image, means and draws.

A likelihood says how many parameters the decoder outputs per pixel, how 8-bit images are
prepared for it, and how to score, summarise and sample images from those parameters. The
training loop, ``sample`` and ``eval`` only call these methods; they never ask for a name.

Decoder parameters have the shape (batch, params_per_pixel, channels, height, width) and
prepared images the shape (batch, channels, height, width) with values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from vaecli.errors import UsageError
from vaecli.mappedfiles import drop_pages


class Likelihood(nn.Module):
    """Base class of decoder distributions; subclasses are registered by entry point."""

    name: ClassVar[str] = "likelihood"
    modes: ClassVar[tuple[str, ...]] = ("mean", "sample")
    #: True when the prepared data stand for 8-bit pixels, so bits/dim compare across models.
    reports_bits_per_dim: ClassVar[bool] = False

    #: True when an image's mean or draw is decoded pixel by pixel (an autoregressive decoder):
    #: such a decoder has no single program for ``vae export`` to write.
    sequential: ClassVar[bool] = False

    params_per_pixel: int = 1

    def __init__(self) -> None:  # subclasses name their options as keyword arguments
        super().__init__()

    def options(self) -> dict[str, Any]:
        """The options that rebuild this likelihood (stored in the model file)."""
        return {}

    def preprocessing(self) -> dict[str, Any]:
        """A description of what ``prepare`` does to 8-bit images (stored in the model file)."""
        raise NotImplementedError

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Turn uint8 images (B, C, H, W) into the float data this likelihood models."""
        raise NotImplementedError

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """What ``vae encode`` feeds the encoder for uint8 images (B, C, H, W): the expected value
        of ``prepare``, so an image always gets the same code. The default is ``prepare`` itself,
        right when it draws no noise; likelihoods whose ``prepare`` is random override this."""
        return self.prepare(images)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) in nats, summed over pixels: shape (batch,)."""
        raise NotImplementedError

    def log_prob_draws(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x_i | params_j) for images x (B, ...) and the params of S draws of z per image
        (B * S, ...), each image's draws together: shape (B * S,). The default repeats each image S
        times; a likelihood with work that depends on x alone overrides it to do that once."""
        draws = draws_per_image(x, params)
        return self.log_prob(x if draws == 1 else x.repeat_interleave(draws, dim=0), params)

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor | None:
        """The decoder parameters (params_per_pixel, C, H, W) that fit uint8 ``images`` (N, C, H, W,
        on the CPU) best while ignoring z: the maximum-likelihood fit to the prepared data, per pixel (or
        pooled over pixels where one pixel's own would overfit, as gaussian's sigma). Training
        starts the decoder's output there (``VAE.output_offset``). None, the default: from zero."""
        return None

    def fit_own_parameters(self, images: torch.Tensor) -> None:
        """Set this likelihood's own learned parameters (not the decoder's), if it has any, to
        their maximum-likelihood fit to uint8 ``images`` (N, C, H, W, on the CPU) under
        :meth:`constant_fit`'s decoder output: where training starts them (gaussian's
        ``sigma=learned``). The default does nothing."""

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params], an image in [0, 1]."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x | params), an image in [0, 1]."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        """Fail with one line unless ``mode`` is one of this likelihood's ``modes``."""
        if mode not in self.modes:
            raise UsageError(
                f"likelihood '{self.name}' has no mode '{mode}' (it has: {', '.join(self.modes)})"
            )

    def image(
        self, params: torch.Tensor, mode: str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The picture of ``params`` in one of ``modes``: an image in [0, 1]."""
        self.check_mode(mode)
        if mode == "sample":
            return self.sample(params, generator)
        return getattr(self, mode)(params)


DATASET_CHUNK_BYTES = 64 << 20  # 8-byte numbers per chunk when summing over a whole dataset


def dataset_chunks(
    images: torch.Tensor, bytes_per_value: int = 8, max_images: int | None = None
) -> Iterator[torch.Tensor]:
    """``images`` in runs of whole images whose copies at ``bytes_per_value`` fit
    ``DATASET_CHUNK_BYTES`` (and at most ``max_images`` of them); the pages of a memory-mapped
    dataset cache are handed back after each run, so one pass over a set larger than memory
    leaves the resident memory flat."""
    per_image = max(bytes_per_value * images[0].numel(), 1)
    size = max(1, DATASET_CHUNK_BYTES // per_image)
    for chunk in images.split(min(size, max_images or size)):
        yield chunk
        drop_pages(chunk)


#: A float32 sum of this many squared 8-bit values (each at most 255^2) stays below 2^24, where
#: every integer is exact: a chunk's sums are exact integers, and their float64 totals too.
EXACT_FLOAT32_IMAGES = 2**24 // 255**2


def pixel_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's mean and variance over uint8 ``images`` (N, C, H, W), in float64 (so on the
    CPU or CUDA, not MPS); summed exactly in float32 chunks (a quarter of the time of float64
    ones), so no float copy of the whole dataset is made."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for chunk in dataset_chunks(images, 4, EXACT_FLOAT32_IMAGES):
        values = chunk.float()
        total += values.sum(0)
        squares += values.square_().sum(0)
    n = max(images.shape[0], 1)
    mean = total / n
    return mean, (squares / n - mean.square()).clamp_(min=0.0)


def draws_per_image(x: torch.Tensor, params: torch.Tensor) -> int:
    """S, for images x (B, ...) and the params of S draws of each (B * S, ...)."""
    draws, left = divmod(params.shape[0], x.shape[0])
    if left or not draws:
        raise ValueError(f"params for {params.shape[0]} draws do not divide among {x.shape[0]} images")
    return draws
