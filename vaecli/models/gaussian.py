"""Diagonal Gaussians: the log-density and KL every latent group uses, in nats."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


def log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) elementwise (no sum)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI)


def standard_log_density(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(mu + sigma * eps; mu, sigma^2) elementwise: (z - mu) / sigma is eps itself, so no
    division is needed."""
    return -0.5 * (eps.square() + logvar + LOG_2PI)


def kl_divergence(
    mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor, prior_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) elementwise."""
    return 0.5 * (
        prior_logvar
        - logvar
        + (torch.exp(logvar) + (mu - prior_mu).square()) * torch.exp(-prior_logvar)
        - 1.0
    )
