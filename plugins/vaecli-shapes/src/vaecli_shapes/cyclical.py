"""The ``cyclical`` objective: the ELBO with cyclical KL annealing (Fu et al. 2019).

The run's epochs are cut into ``cycles`` equal cycles; in each, the KL weight rises linearly
from 0 to ``beta`` over the first ``ratio`` of the cycle and then stays there. Restarting the
weight lets the encoder relearn codes the decoder would otherwise ignore."""

from __future__ import annotations

from typing import Any

import torch

from vaecli.plugin import Objective, Progress, Terms, UsageError, as_float, as_int


class CyclicalKL(Objective):
    """loss = -(E_q log p(x|z) - beta_t KL(q(z|x) || p(z))) with beta_t cycling as above."""

    name = "cyclical"

    def __init__(self, cycles: str | int = 4, ratio: str | float = 0.5, beta: str | float = 1.0) -> None:
        self.cycles = as_int(cycles, "cycles")
        self.ratio, self.beta = as_float(ratio, "ratio"), as_float(beta, "beta")
        if self.cycles < 1:
            raise UsageError(f"option cycles must be at least 1, got {cycles}")
        if not 0 < self.ratio <= 1:
            raise UsageError(f"option ratio must be in (0, 1], got {ratio}")
        if not self.beta >= 0:
            raise UsageError(f"option beta must be at least 0, got {beta}")

    def options(self) -> dict[str, Any]:
        return {"cycles": self.cycles, "ratio": self.ratio, "beta": self.beta}

    def beta_at(self, progress: Progress) -> float:
        """The KL weight of a step taken ``progress.epochs_done`` epochs into the run."""
        period = progress.epochs / self.cycles
        within = (progress.epochs_done % period) / period
        return self.beta * min(1.0, within / self.ratio)

    def loss(self, terms: Terms, progress: Progress) -> torch.Tensor:
        return -(terms.reconstruction.mean(1) - self.beta_at(progress) * terms.kl.sum(-1))
