"""Decoder distributions p(x|z): log-probabilities in nats per image, means and draws.

A likelihood says how many parameters the decoder outputs per pixel, how 8-bit images are
prepared for it, and how to score, summarise and sample images from those parameters. The
training loop, ``sample`` and ``eval`` only call these methods; they never ask for a name.

Decoder parameters have the shape (batch, params_per_pixel, channels, height, width) and
prepared images the shape (batch, channels, height, width) with values in [0, 1].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.errors import UsageError


class Likelihood(nn.Module):
    """Base class of decoder distributions; subclasses are registered by entry point."""

    name: ClassVar[str] = "likelihood"
    modes: ClassVar[tuple[str, ...]] = ("mean", "sample")
    #: True when the prepared data stand for 8-bit pixels, so bits/dim compare across models.
    reports_bits_per_dim: ClassVar[bool] = False

    params_per_pixel: int = 1

    def options(self) -> dict[str, Any]:
        """The options that rebuild this likelihood (stored in the model file)."""
        return {}

    def preprocessing(self) -> dict[str, Any]:
        """A description of what ``prepare`` does to 8-bit images (stored in the model file)."""
        raise NotImplementedError

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Turn uint8 images (B, C, H, W) into the float data this likelihood models."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) in nats, summed over pixels: shape (batch,)."""
        raise NotImplementedError

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


class Bernoulli(Likelihood):
    """Binary pixels with probability sigmoid(logit); images binarised afresh on every use."""

    name = "bernoulli"

    def preprocessing(self) -> dict[str, Any]:
        return {"binarise": "bernoulli(pixel / 255)", "value_range": [0, 1]}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(images.float().div_(255.0), generator=generator)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        logits = params[:, 0]
        # -BCE-with-logits is log Bernoulli(x; sigmoid(logits)), stable for any logit.
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return -nll.flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[:, 0])

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)
