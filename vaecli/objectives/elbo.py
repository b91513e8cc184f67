"""``elbo``: the evidence lower bound, with a KL weight (beta-VAE), KL warm-up and free bits."""

from __future__ import annotations

import math
from typing import Any

import torch

from vaecli.errors import UsageError
from vaecli.models import Terms
from vaecli.objectives.base import Objective, Progress
from vaecli.options import as_float

MAX_OPTION = 1e6  # nats (free bits) or a KL weight: far past any useful value, inside float32


def non_negative(value: str | float, name: str) -> float:
    """A finite number >= 0 from an option."""
    number = as_float(value, name)
    if not (math.isfinite(number) and number >= 0):
        raise UsageError(f"option {name} must be a number of at least 0, got {value}")
    if number > MAX_OPTION:
        raise UsageError(f"option {name} must be at most {MAX_OPTION:g}, got {value}")
    return number


class ElboObjective(Objective):
    """loss = -(E_q log p(x|z) - beta_t KL(q(z|x) || p(z))), one draw of z per image.

    beta_t rises linearly from ``beta_start`` to ``beta`` over the first ``warmup`` epochs (a
    fraction allowed), a new value every step; ``beta_start`` defaults to 0 with a warm-up and to
    ``beta`` without. ``free_bits`` = lambda > 0 replaces the KL by sum_d max(lambda,
    mean over the batch of KL_d) (Kingma et al. 2016): no latent dimension is pushed below lambda
    nats, which keeps dimensions from collapsing to the prior. beta = 1 without free bits is the
    plain ELBO.
    """

    name = "elbo"

    def __init__(
        self,
        beta: str | float = 1.0,
        beta_start: str | float | None = None,
        warmup: str | float = 0.0,
        free_bits: str | float = 0.0,
    ) -> None:
        self.beta = non_negative(beta, "beta")
        self.warmup = non_negative(warmup, "warmup")
        self.free_bits = non_negative(free_bits, "free_bits")
        default_start = 0.0 if self.warmup > 0 else self.beta
        self.beta_start = default_start if beta_start is None else non_negative(beta_start, "beta_start")

    def options(self) -> dict[str, Any]:
        return {"beta": self.beta, "beta_start": self.beta_start, "warmup": self.warmup,
                "free_bits": self.free_bits}  # fmt: skip

    def beta_at(self, progress: Progress) -> float:
        """beta_t: the KL weight of a step taken ``progress.epochs_done`` epochs into training."""
        if self.warmup <= 0 or progress.epochs_done >= self.warmup:
            return self.beta
        return self.beta_start + (self.beta - self.beta_start) * progress.epochs_done / self.warmup

    def loss(self, terms: Terms, progress: Progress) -> torch.Tensor:
        reconstruction = terms.reconstruction.mean(1)
        if self.free_bits > 0:
            # The same clamped batch total for every image: their mean is Kingma et al.'s loss.
            kl = terms.kl.mean(0).clamp(min=self.free_bits).sum().expand_as(reconstruction)
        else:
            kl = terms.kl.sum(-1)
        return -(reconstruction - self.beta_at(progress) * kl)
