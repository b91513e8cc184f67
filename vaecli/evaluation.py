"""Scoring a model on a set of prepared images."""

from __future__ import annotations

import math
from typing import Any

import torch

from vaecli.model import VAE, kl_to_standard_normal

EVAL_SEED = 1234  # the noise of test-set evaluation is fixed, so numbers compare across runs


def bits_per_dim(nats: float, dims: int) -> float:
    """Nats per image to bits per dimension: nats / (D ln 2)."""
    return nats / (dims * math.log(2.0))


@torch.no_grad()
def mean_elbo(
    model: VAE, data: torch.Tensor, batch_size: int = 1000, seed: int = EVAL_SEED
) -> dict[str, Any]:
    """-ELBO, reconstruction (-E_q log p(x|z)) and KL, averaged over ``data``, in nats/image."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=data.device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=data.device)
    for start in range(0, data.shape[0], batch_size):
        terms = model.elbo(data[start : start + batch_size], generator)
        totals += torch.stack([-terms.elbo.sum(), -terms.reconstruction.sum(), terms.kl.sum()])
    model.train(was_training)
    neg_elbo, reconstruction, kl = (totals / data.shape[0]).tolist()
    result = {"neg_elbo": neg_elbo, "reconstruction": reconstruction, "kl": kl}
    if model.likelihood.reports_bits_per_dim:
        result["bits_per_dim"] = bits_per_dim(neg_elbo, math.prod(data.shape[1:]))
    return result


@torch.no_grad()
def kl_per_dimension(model: VAE, data: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """KL(q(z_d|x) || N(0, 1)) for each latent dimension d, averaged over ``data``: a float64
    tensor (latent_dim,) in nats/image on the CPU; the entries sum to the mean KL term."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(model.latent_dim, dtype=torch.float64, device=data.device)
    for start in range(0, data.shape[0], batch_size):
        mu, logvar = model.encode(data[start : start + batch_size])
        totals += kl_to_standard_normal(mu, logvar).double().sum(0)
    model.train(was_training)
    return (totals / max(data.shape[0], 1)).cpu()
