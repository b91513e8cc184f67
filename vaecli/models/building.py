"""A model from its description (:class:`ModelSpec`): the registered model, likelihood and prior
(and, for the single-latent VAE, architecture), checked to fit together."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from vaecli import registry
from vaecli.errors import VaeError
from vaecli.likelihoods import Likelihood
from vaecli.models.base import LatentVariableModel
from vaecli.options import with_defaults
from vaecli.priors import Prior, build_prior


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's modules (weights aside). ``latent_dim`` is the
    code's size: given for ``vae``; a hierarchy's follows from its options (and is recorded)."""

    input_shape: tuple[int, int, int]
    latent_dim: int
    architecture: str = "mlp"
    architecture_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    model: str = "vae"
    model_options: dict[str, Any] = field(default_factory=dict)


def build_likelihood(name: str, options: dict[str, Any]) -> Likelihood:
    """The registered likelihood ``name`` made with ``options``."""
    likelihood, what = registry.likelihoods.build(name, options)
    if not isinstance(likelihood, Likelihood):
        raise VaeError(f"{what} did not give a vaecli Likelihood (got {type(likelihood).__name__})")
    return likelihood


def prior_factory(spec: ModelSpec):  # noqa: ANN201 (a callable (latent_dim) -> Prior)
    """What a model calls with the size of its top latent group to get the chosen prior."""

    def make(latent_dim: int) -> Prior:
        return build_prior(spec.prior, latent_dim, tuple(spec.input_shape), spec.prior_options)

    return make


def build_model(spec: ModelSpec, check_shapes: bool = True) -> LatentVariableModel:
    """Build a model from registered parts and check that their shapes fit together (a forward
    pass on zeros; ``check_shapes=False`` skips it, for skeletons on the meta device). The model's
    ``spec`` records every part's options with the defaults filled in, so a model file rebuilds
    the same modules even after a default changes."""
    likelihood = build_likelihood(spec.likelihood, spec.likelihood_options)
    registry.models.check(spec.model)
    args = (spec, likelihood, prior_factory(spec))
    model, what = registry.models.call(spec.model, args, spec.model_options, method="from_spec")
    if not isinstance(model, LatentVariableModel):
        raise VaeError(f"{what}: from_spec gave {type(model).__name__}, not the model")
    built = model.spec or spec
    factory = registry.models.load(spec.model).from_spec
    model.spec = replace(
        built, latent_dim=model.latent_dim, prior_options=model.prior.options(),
        model_options={**with_defaults(factory, args, spec.model_options), **built.model_options},
    )  # fmt: skip
    if check_shapes:
        model.check_parts(what)
    return model


def check_likelihood(likelihood: Likelihood, spec: ModelSpec, params: torch.Tensor) -> None:
    """Call a plugin likelihood's ``prepare``, ``log_prob``, ``log_prob_draws`` and ``mean`` once
    on two black images (for the draws: the first image, with both rows of params as its draws)
    and the decoder's output ``params`` for them, so that one that fails or gives the wrong shape
    is named before training starts (not as a broadcasting error deep in the loop, or as metrics
    that do not add up)."""
    what = registry.likelihoods.describe(spec.likelihood)
    n = params.shape[0]
    images = torch.zeros(n, *spec.input_shape, dtype=torch.uint8)
    try:
        with torch.no_grad():
            x = likelihood.prepare(images, torch.Generator().manual_seed(0))
            log_p, mean = likelihood.log_prob(x, params), likelihood.mean(params)
            log_p_draws = likelihood.log_prob_draws(x[:1], params)
    except VaeError:
        raise
    except Exception as exc:
        raise VaeError(f"{what} fails on decoder output of shape {tuple(params.shape)}: "
                       f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    per_image = " (one log-probability per image, summed over pixels)"
    for method, got, want, given in (
        ("prepare", x, images.shape, f"{n} images"),
        ("log_prob", log_p, (n,), f"{n} images"),
        ("log_prob_draws", log_p_draws, (n,), f"{n} draws of 1 image"),
        ("mean", mean, images.shape, f"{n} images"),
    ):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        if shape != tuple(want):
            raise VaeError(
                f"{what}: {method} gives shape {shape} for {given}, expected {tuple(want)}"
                + (per_image if method.startswith("log_prob") else "")
            )
