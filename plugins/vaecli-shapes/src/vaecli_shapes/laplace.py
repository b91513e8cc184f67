"""The ``laplace`` prior: p(z) = prod_d Laplace(z_d; 0, b), a heavier-tailed prior than N(0, I).

Its KL to a Gaussian posterior is left to vaecli's Monte-Carlo estimate (the prior gives no
closed form), and its scale b is learned with the model unless ``learn_scale`` is false."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vaecli.plugin import Prior, UsageError, as_bool, as_float


class Laplace(Prior):
    """p(z) = prod_d exp(-|z_d| / b) / (2 b), one scale b for every dimension."""

    name = "laplace"

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], scale: str | float = 1.0,
                 learn_scale: str | bool = True) -> None:  # fmt: skip
        super().__init__(latent_dim, input_shape)
        self.scale = as_float(scale, "scale")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"option scale must be a positive number, got {scale}")
        self.learn_scale = as_bool(learn_scale, "learn_scale")
        log_scale = torch.tensor(math.log(self.scale))
        if self.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def options(self) -> dict[str, Any]:
        return {"scale": self.scale, "learn_scale": self.learn_scale}

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        log_b = self.log_scale.to(z.dtype)
        return -(z.abs() * torch.exp(-log_b) + log_b + math.log(2.0)).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        # Inverse CDF: z = -b sgn(u) log(1 - 2|u|), u ~ U(-1/2, 1/2).
        u = torch.rand(n, self.latent_dim, generator=generator, dtype=torch.float64) - 0.5
        b = float(self.log_scale.exp())
        return (-b * temperature * u.sign() * torch.log1p(-2 * u.abs())).float()
