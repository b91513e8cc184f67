"""``gaussian``: continuous pixels on uniformly dequantised 8-bit images."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.errors import UsageError
from vaecli.likelihoods.base import Likelihood, pixel_moments
from vaecli.options import as_float

LOG_256 = math.log(256.0)


def dequantise(
    images: torch.Tensor, generator: torch.Generator | None = None, open_interval: bool = False
) -> torch.Tensor:
    """8-bit pixels to float32 (x + u) / 256 with u ~ U[0, 1): a density on [0, 1] whose log,
    less D log 256, is a lower bound on the discrete 8-bit log-likelihood. Both ends occur: 0
    where x = 0 and u = 0, 1 where float32 rounds 255 + u up to 256. ``open_interval`` moves
    those few values just inside (0, 1), for a likelihood that cannot take 0 or 1 (a Beta, a
    logit transform); every other value is the same draw."""
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    x = (images.float() + noise).div_(256.0)
    return x.clamp_(OPEN_MIN, OPEN_MAX) if open_interval else x


OPEN_MIN, OPEN_MAX = 2.0**-32, 1.0 - 2.0**-24  # the smallest nonzero draw; the largest float32 below 1


class Gaussian(Likelihood):
    """Continuous pixels: N(mean, sigma^2) on uniformly dequantised 8-bit data.

    ``sigma`` is a fixed number, ``learned`` (one value for all pixels) or ``pixel`` (the
    decoder outputs a log-scale per pixel). Learned log-scales are bounded below by
    ``LOG_SIGMA_MIN`` so a density can never collapse onto a point. ``log_prob`` includes
    every constant and the -D log 256 of the dequantisation, so it is in nats of 8-bit images
    and its bits/dim compare with the categorical decoder's.
    """

    name = "gaussian"
    reports_bits_per_dim = True
    LOG_SIGMA_MIN = -7.0  # sigma >= 0.0009, a quarter of one 8-bit level

    def __init__(self, sigma: str | float = "pixel") -> None:
        super().__init__()
        self.sigma_option: str | float = sigma
        self.fixed_log_sigma: float | None = None
        if str(sigma) not in ("learned", "pixel"):
            value = as_float(sigma, "sigma")
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"option sigma must be positive, 'learned' or 'pixel', got '{sigma}'")
            self.fixed_log_sigma = math.log(value)
        self.params_per_pixel = 2 if str(sigma) == "pixel" else 1
        self.raw_log_sigma = nn.Parameter(torch.zeros(())) if str(sigma) == "learned" else None

    def options(self) -> dict[str, Any]:
        return {"sigma": self.sigma_option}

    def preprocessing(self) -> dict[str, Any]:
        return {"dequantise": "(pixel + u) / 256, u ~ U[0, 1)", "value_range": [0, 1]}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dequantise(images, generator)

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().add_(0.5).div_(256.0)  # E[(pixel + u) / 256], u ~ U[0, 1)

    def log_sigma(self, params: torch.Tensor) -> torch.Tensor:
        """log sigma, broadcastable against the means params[:, 0]."""
        if self.fixed_log_sigma is not None:
            return params.new_full((), self.fixed_log_sigma)
        raw = self.raw_log_sigma if self.raw_log_sigma is not None else params[:, 1]
        return self.LOG_SIGMA_MIN + F.softplus(raw - self.LOG_SIGMA_MIN)

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor:
        # The dequantised pixel (v + u) / 256 has mean (E v + 1/2) / 256 and variance
        # (Var v + 1/12) / 256^2. A per-pixel sigma starts at the pixels' pooled standard
        # deviation, not each pixel's own: a pixel that is constant in the training images would
        # get a sigma at the floor, and an image that differs there a loss of 10^5 nats.
        mean, variance = pixel_moments(images)
        params = [(mean + 0.5) / 256]
        if self.params_per_pixel == 2:
            params.append(torch.full_like(mean, self._pooled_raw_log_sigma(variance)))
        return torch.stack(params).float()

    def fit_own_parameters(self, images: torch.Tensor) -> None:
        # A learned sigma, one for all pixels, starts where sigma=pixel does: the pooled fit.
        if self.raw_log_sigma is not None:
            with torch.no_grad():
                self.raw_log_sigma.fill_(self._pooled_raw_log_sigma(pixel_moments(images)[1]))

    def _pooled_raw_log_sigma(self, variance: torch.Tensor) -> float:
        """The raw log-scale whose :meth:`log_sigma` is the dequantised pixels' pooled standard
        deviation, from the 8-bit pixels' variances: (mean of Var v + 1/12) / 256^2 is the
        maximum-likelihood sigma^2 of one Gaussian per pixel about each pixel's mean."""
        log_sigma = 0.5 * math.log((variance.mean().item() + 1 / 12) / 256**2)
        return self.LOG_SIGMA_MIN + math.log(math.expm1(log_sigma - self.LOG_SIGMA_MIN))  # softplus inverted

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean, log_sigma = params[:, 0], self.log_sigma(params)
        log_density = (
            -0.5 * ((x - mean) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        )
        log_density = log_density.expand_as(x).flatten(1).sum(1)
        return log_density - x[0].numel() * LOG_256

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params[:, 0].clamp(0, 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = params[:, 0]
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + eps * torch.exp(self.log_sigma(params))).clamp(0, 1)
