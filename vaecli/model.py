"""The VAE: Gaussian encoder, reparameterisation, prior N(0, I), decoder, and the ELBO."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from vaecli import registry
from vaecli.errors import VaeError
from vaecli.likelihoods import Likelihood
from vaecli.options import call_with_options, with_defaults


class Elbo(NamedTuple):
    """Per-image terms in nats: elbo = reconstruction - kl, each of shape (batch,)."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per latent dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2), p(z) = N(0, I), p(x|z) given by ``likelihood``.

    The decoder's output is added to ``output_offset``, fixed decoder parameters per pixel
    (params_per_pixel, *input_shape): zeros until :meth:`start_from_data` sets them from the
    training images, so the decoder learns how images differ from their average, not the average.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        input_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.register_buffer("output_offset", torch.zeros(likelihood.params_per_pixel, *input_shape))
        #: How to rebuild this model's modules; set by :func:`build_model`.
        self.spec: ModelSpec | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log-variance of q(z|x), each (batch, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterise(
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) (drawn unless given), so gradients reach mu and sigma."""
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder parameters (batch, params_per_pixel, C, H, W)."""
        return self.decoder(z) + self.output_offset

    @torch.no_grad()
    def start_from_data(self, images: torch.Tensor) -> None:
        """Before training: set ``output_offset`` to the likelihood's best fit to uint8 ``images``
        that ignores z (:meth:`Likelihood.constant_fit`; a likelihood without one leaves it at
        zero), and the likelihood's own parameters to theirs (:meth:`Likelihood.fit_own_parameters`).
        Both get the images on the CPU, where float64 sums exist on every machine (MPS has none)."""
        images = images.cpu()
        fit = self.likelihood.constant_fit(images)
        if fit is not None:
            self.output_offset.copy_(fit)
        self.likelihood.fit_own_parameters(images)

    def elbo(
        self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> Elbo:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), one-sample estimate of the first term
        (with the standard-normal noise ``eps`` when given, else drawn from ``generator``)."""
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar, generator, eps)
        reconstruction = self.likelihood.log_prob(x, self.decode(z))
        kl = kl_to_standard_normal(mu, logvar).sum(-1)
        return Elbo(reconstruction - kl, reconstruction, kl)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> Elbo:
        """The ELBO's terms (what training calls, through DDP and torch.compile wrappers)."""
        return self.elbo(x, eps=eps)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a VAE's modules (weights aside)."""

    input_shape: tuple[int, int, int]
    latent_dim: int
    architecture: str = "mlp"
    architecture_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)


def build_likelihood(name: str, options: dict[str, Any]) -> Likelihood:
    """The registered likelihood ``name`` made with ``options``."""
    factory = registry.likelihoods.load(name)
    what = registry.likelihoods.describe(name)
    likelihood = call_with_options(factory, what, (), options)
    if not isinstance(likelihood, Likelihood):
        raise VaeError(f"{what} did not give a vaecli Likelihood (got {type(likelihood).__name__})")
    return likelihood


def build_model(spec: ModelSpec, check_shapes: bool = True) -> VAE:
    """Build a VAE from registered parts and check that their shapes fit together (a forward pass
    on zeros; ``check_shapes=False`` skips it, for skeletons on the meta device). The model's
    ``spec`` records the architecture's options with its defaults filled in."""
    likelihood = build_likelihood(spec.likelihood, spec.likelihood_options)
    factory = registry.architectures.load(spec.architecture)
    what = registry.architectures.describe(spec.architecture)
    args = (tuple(spec.input_shape), spec.latent_dim, likelihood.params_per_pixel)
    built = call_with_options(factory, what, args, spec.architecture_options)
    if not (isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)):
        raise VaeError(f"{what} must return (encoder, decoder) torch modules, got {type(built).__name__}")
    encoder, decoder = built
    model = VAE(encoder, decoder, likelihood, spec.latent_dim, tuple(spec.input_shape))
    if check_shapes:
        _check_shapes(model, spec, what)
    # The architecture's defaults are written down with the given options: a model file then
    # rebuilds the same modules even after a default changes.
    model.spec = replace(spec, architecture_options=with_defaults(factory, args, spec.architecture_options))
    return model


def _check_shapes(model: VAE, spec: ModelSpec, what: str) -> None:
    x = torch.zeros(2, *spec.input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            h = model.encoder(x)
            params = model.decoder(torch.zeros(2, spec.latent_dim))
        except Exception as exc:
            raise VaeError(f"{what} fails on input {tuple(spec.input_shape)}: {exc}") from exc
    if tuple(h.shape) != (2, 2 * spec.latent_dim):
        raise VaeError(
            f"{what}: encoder gives shape {tuple(h.shape[1:])} per image, "
            f"expected ({2 * spec.latent_dim},) (mu and log-variance)"
        )
    expected = (2, model.likelihood.params_per_pixel, *spec.input_shape)
    if tuple(params.shape) != expected:
        raise VaeError(
            f"{what}: decoder gives shape {tuple(params.shape[1:])} per image, expected {expected[1:]}"
        )
