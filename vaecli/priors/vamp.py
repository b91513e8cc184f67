"""``vamp``: the VampPrior (Tomczak & Welling 2018), p(z) = (1/K) sum_k q(z | u_k)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaecli.errors import VaeError
from vaecli.priors.base import Encode
from vaecli.priors.mixture import MixturePrior, components_option, uniform_log_weights


class VampPrior(MixturePrior):
    """The mixture of the encoder's own posteriors of K pseudo-inputs u_k, learned images in
    the encoder's input space. They start as K training images (random ones, as the model
    prepares them), so the prior starts on the data's codes; the encoder's updates move the
    prior with it. They are learned freely, not held in [0, 1] by a hardtanh as in Tomczak &
    Welling's code: binarised images sit on its edges, where it has no gradient (held, the
    default model's stayed as they started and lost 1.4 nats of -log p(x); docs/models.md)."""

    name = "vamp"

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], k: str | int = 500) -> None:
        super().__init__(latent_dim, input_shape)
        self.k = components_option(k)
        self.pseudo_inputs = nn.Parameter(torch.rand(self.k, *input_shape))
        self._encode: Encode | None = None

    def options(self) -> dict[str, Any]:
        return {"k": self.k}

    def attach(self, encode: Encode) -> None:
        self._encode = encode

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._encode is None:
            raise VaeError("the vamp prior was not given the model's encoder")
        mu, logvar = self._encode(self.pseudo_inputs)
        return uniform_log_weights(self.k, mu), mu, logvar

    def component_inputs(self) -> torch.Tensor:
        return self.pseudo_inputs.detach()

    @torch.no_grad()
    def start_from_data(self, x: torch.Tensor) -> None:
        chosen = torch.randint(x.shape[0], (self.k,)) if x.shape[0] < self.k else torch.randperm(x.shape[0])
        self.pseudo_inputs.copy_(x[chosen[: self.k].to(x.device)])
