"""The ``logistic`` likelihood: a discretised logistic per pixel over the 256 grey levels
(as in PixelCNN++, one component). Exact in nats of the 8-bit images, like vaecli's
categorical, with two decoder outputs per pixel instead of 256."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vaecli.plugin import Likelihood

LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)  # grey level k sits at k / 255; its bin is +- half a level wide


class DiscretisedLogistic(Likelihood):
    """P(k) = CDF(k/255 + h) - CDF(k/255 - h) for a logistic CDF with mean mu and scale s; the
    first and last levels take the tails. Decoder outputs per pixel: mu, and a raw log-scale
    bounded below by LOG_SCALE_MIN."""

    name = "logistic"
    modes = ("mean", "sample")
    reports_bits_per_dim = True
    params_per_pixel = 2
    LOG_SCALE_MIN = -7.0

    def preprocessing(self) -> dict[str, Any]:
        return {"scale": "pixel / 255", "value_range": [0, 1], "levels": LEVELS}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images.float().div_(LEVELS - 1)

    def _loc_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale = self.LOG_SCALE_MIN + F.softplus(params[:, 1] - self.LOG_SCALE_MIN)
        return params[:, 0], log_scale

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mu, log_scale = self._loc_scale(params)
        inv_scale = torch.exp(-log_scale)
        upper = (x + HALF_BIN - mu) * inv_scale
        lower = (x - HALF_BIN - mu) * inv_scale
        # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)): stable for any a > b.
        inner = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
        log_p = torch.where(x < HALF_BIN, F.logsigmoid(upper), inner)
        log_p = torch.where(x > 1 - HALF_BIN, F.logsigmoid(-lower), log_p)
        return log_p.flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        # E[k] = sum over k = 0..254 of P(level > k), each a logistic tail.
        mu, log_scale = self._loc_scale(params)
        edges = torch.arange(LEVELS - 1, device=params.device, dtype=params.dtype) / (LEVELS - 1) + HALF_BIN
        edges = edges.view(1, -1, *([1] * (mu.dim() - 1)))
        tails = torch.sigmoid((mu.unsqueeze(1) - edges) * torch.exp(-log_scale).unsqueeze(1))
        return tails.sum(1) / (LEVELS - 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_scale = self._loc_scale(params)
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype).clamp_(1e-6, 1 - 1e-6)
        y = mu + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (y * (LEVELS - 1)).round_().clamp_(0, LEVELS - 1) / (LEVELS - 1)
