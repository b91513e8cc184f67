"""``normal``: p(z) = N(0, I), with the closed-form KL of a Gaussian posterior to it."""

from __future__ import annotations

import torch

from vaecli.priors.base import LOG_2PI, Prior


class StandardNormal(Prior):
    """p(z) = N(0, I): the default prior, without parameters of its own."""

    name = "normal"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)

    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator) * temperature

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(self.latent_dim), torch.ones(self.latent_dim)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag exp(logvar)) || N(0, I)) per dimension: (mu^2 + sigma^2 - 1 - log sigma^2) / 2."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
