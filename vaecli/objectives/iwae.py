"""``iwae``: the importance-weighted bound of Burda et al. (2015) as the training loss."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from vaecli.errors import UsageError
from vaecli.models import Terms
from vaecli.objectives.base import Objective, Progress
from vaecli.options import as_bool, as_int

if TYPE_CHECKING:
    from vaecli.models import LatentVariableModel

TEST_SEED = 1234  # the test set's k-sample bound draws the same noise every epoch


MAX_K = 1 << 16  # samples per image in every training step: far past any published k (5000 is eval's)


class IwaeObjective(Objective):
    """loss = -log (1/k) sum_s p(x, z_s) / q(z_s|x), z_1..z_k ~ q(z|x): a bound on log p(x) that
    tightens as k grows. k = 1 is the ELBO, and trains exactly as ``elbo`` does (closed-form
    KL). ``dreg`` gives the encoder the doubly reparameterised gradient of Tucker et al. (2018),
    whose signal-to-noise ratio grows with k where the plain IWAE gradient's shrinks."""

    name = "iwae"

    def __init__(self, k: str | int = 5, dreg: str | bool = False) -> None:
        self.k = as_int(k, "k")
        if self.k < 1:
            raise UsageError(f"option k must be at least 1, got {k}")
        if self.k > MAX_K:
            raise UsageError(f"option k must be at most {MAX_K}, got {k}")
        self.dreg = as_bool(dreg, "dreg")
        self.samples = self.k
        self.weights = self.k > 1 or self.dreg

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "dreg": self.dreg}

    def loss(self, terms: Terms, progress: Progress) -> torch.Tensor:
        if terms.log_weight is None:  # k = 1 without DReG: the ELBO itself
            return -(terms.reconstruction.mean(1) - terms.kl.sum(-1))
        # (float32 at least: a logsumexp of half-precision weights loses the bound's digits)
        log_weight = terms.log_weight.to(torch.promote_types(terms.log_weight.dtype, torch.float32))
        if self.dreg:
            # Value: the bound; gradient: sum_s w_s d log w_s (the model scales the encoder's share).
            normalised = torch.softmax(log_weight.detach(), dim=1)
            bound = torch.logsumexp(log_weight, dim=1).detach() - math.log(self.k)
            surrogate = (normalised * log_weight).sum(1)
            return -(bound + surrogate - surrogate.detach())
        return -(torch.logsumexp(log_weight, dim=1) - math.log(self.k))

    def test_metrics(self, model: LatentVariableModel, x: torch.Tensor) -> dict[str, float]:
        """-log p(x) by the same k-sample bound on the test images, with fixed noise."""
        from vaecli.evaluation import evaluate

        return {"neg_iw_bound": evaluate(model, x, k=self.k, seed=TEST_SEED).neg_log_px}
