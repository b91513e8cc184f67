"""Models: registered parts (``--model NAME``, ``--model-opt KEY=VALUE``) that every command
uses through one contract (:class:`~vaecli.models.base.LatentModel`).

- :mod:`~vaecli.models.base`: the contract, the terms a forward pass gives, the shared base class;
- :mod:`~vaecli.models.vae`: ``vae``, one latent vector from a registered architecture;
- :mod:`~vaecli.models.hierarchical`: ``hierarchical``, a deep hierarchy of latent groups with
  a bottom-up and a top-down path of convolutional residual cells;
- :mod:`~vaecli.models.building`: a model from its description (:class:`ModelSpec`).
"""

from vaecli.models.base import Elbo, LatentModel, LatentVariableModel, Terms
from vaecli.models.building import ModelSpec, build_likelihood, build_model, check_likelihood
from vaecli.models.gaussian import LOG_2PI
from vaecli.models.vae import VAE

__all__ = [
    "LOG_2PI", "VAE", "Elbo", "LatentModel", "LatentVariableModel", "ModelSpec", "Terms", "build_likelihood",
    "build_model", "check_likelihood",
]  # fmt: skip
