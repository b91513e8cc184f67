"""The single-latent VAE: Gaussian encoder, reparameterisation, a prior (N(0, I) unless another is
chosen), decoder, and the ELBO."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from vaecli import registry
from vaecli.errors import VaeError
from vaecli.likelihoods import Likelihood
from vaecli.models.base import LatentVariableModel, Terms
from vaecli.models.gaussian import LOG_2PI
from vaecli.options import with_defaults
from vaecli.priors import Prior
from vaecli.priors.normal import StandardNormal

if TYPE_CHECKING:
    from vaecli.models.building import ModelSpec


class VAE(LatentVariableModel):
    """q(z|x) = N(mu(x), diag sigma(x)^2) from the architecture's encoder, p(z) given by ``prior``
    (N(0, I) by default), p(x|z) given by ``likelihood`` from the architecture's decoder (plus
    the output offset, :class:`LatentVariableModel`)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        input_shape: tuple[int, int, int],
        prior: Prior | None = None,
    ) -> None:
        super().__init__(
            likelihood, latent_dim, input_shape, prior or StandardNormal(latent_dim, input_shape)
        )
        self.encoder = encoder
        self.decoder = decoder
        self.prior.attach(self.encode)

    @classmethod
    def from_spec(cls, spec: ModelSpec, likelihood: Likelihood, make_prior: Callable[[int], Prior]) -> VAE:
        """The model ``vae``: the registered architecture's encoder and decoder for a code of
        ``spec.latent_dim``; its ``spec`` records the architecture's options with their defaults."""
        args = (tuple(spec.input_shape), spec.latent_dim, likelihood.params_per_pixel)
        built, what = registry.architectures.call(spec.architecture, args, spec.architecture_options)
        factory = registry.architectures.load(spec.architecture)
        if not (
            isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)
        ):
            raise VaeError(f"{what} must return (encoder, decoder) torch modules, got {type(built).__name__}")
        model = cls(*built, likelihood, spec.latent_dim, tuple(spec.input_shape), make_prior(spec.latent_dim))
        model.spec = replace(
            spec, architecture_options=with_defaults(factory, args, spec.architecture_options)
        )
        return model

    def check_parts(self, what: str) -> None:
        """The encoder's and the decoder's output sizes on two black images and two zero codes,
        named as the architecture's, then the plugin parts (the base class)."""
        spec = self.spec
        what = registry.architectures.describe(spec.architecture) if spec else what
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                h = self.encoder(torch.zeros(2, *self.input_shape))
                params = self.decoder(torch.zeros(2, self.latent_dim))
            except Exception as exc:
                raise VaeError(f"{what} fails on input {self.input_shape}: {exc}") from exc
        if tuple(h.shape) != (2, 2 * self.latent_dim):
            raise VaeError(
                f"{what}: encoder gives shape {tuple(h.shape[1:])} per image, "
                f"expected ({2 * self.latent_dim},) (mu and log-variance)"
            )
        self.check_plugin_parts(what, params)

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

    @property
    def kl_exact(self) -> bool:
        """Whether Terms.kl is the prior's closed form per latent dimension (the same for every
        draw of z), not a Monte-Carlo estimate."""
        return type(self.prior).kl is not Prior.kl

    def kl_per_dimension(self, x: torch.Tensor) -> torch.Tensor | None:
        """KL(q(z_d|x) || p(z_d)) per image and latent dimension (B, latent_dim) in closed form,
        or None where the prior has none."""
        return self.prior.kl(*self.encode(x))

    def sample_prior(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n codes from the prior (:meth:`Prior.sample`), on the CPU."""
        (value,) = self.group_temperatures(temperature)
        return self.prior.sample(n, generator, value)

    def _draws(
        self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
        weights: bool, dreg: bool, monte_carlo_kl: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """For images x (b, ...) with q(z|x) = N(mu, exp(logvar)) and noise eps (b, s, d), z = mu +
        sigma * eps: log p(x|z), the log importance weights log p(x|z) + log p(z) - log q(z|x)
        (with ``weights``) and log q(z|x) - log p(z) for the Monte-Carlo KL (with
        ``monte_carlo_kl``), each (b, s) or None.

        ``dreg`` prepares the DReG estimator (Tucker et al. 2018): log q in the weights is taken
        with mu and sigma held fixed (gradients reach them only through z), and the gradient
        reaching the encoder through each z_s is scaled by its normalised weight w_s. A loss
        -sum_s w_s log w_s (w held fixed) then has the DReG gradient, sum_s w_s^2 d log w_s / dz_s
        dz_s / dphi, for the encoder and the IWAE gradient for the decoder."""
        b, s, d = eps.shape
        sigma = torch.exp(0.5 * logvar)
        z = mu.unsqueeze(1) + eps * sigma.unsqueeze(1)
        params = self.decode(z.reshape(b * s, d))
        log_px_z = self.likelihood.log_prob_draws(x, params).view(b, s)
        if not (weights or monte_carlo_kl):
            return log_px_z, None, None
        log_pz = self.prior.log_prob(z)
        # (z - mu) / sigma is eps itself, so log q needs no division.
        log_qz = -0.5 * (eps.square().sum(-1) + logvar.sum(-1, keepdim=True) + d * LOG_2PI)
        log_q_over_p = log_qz - log_pz if monte_carlo_kl else None
        if not weights:
            return log_px_z, None, log_q_over_p
        if dreg:
            standard = (z - mu.detach().unsqueeze(1)) / sigma.detach().unsqueeze(1)
            log_qz = -0.5 * (standard.square().sum(-1) + logvar.detach().sum(-1, keepdim=True) + d * LOG_2PI)
        log_weight = log_px_z + log_pz - log_qz
        if dreg and z.requires_grad:
            wide = torch.promote_types(log_weight.dtype, torch.float32)
            normalised = torch.softmax(log_weight.detach().to(wide), dim=1).to(z.dtype).unsqueeze(-1)
            z.register_hook(lambda grad: grad * normalised)
        return log_px_z, log_weight, log_q_over_p

    def forward(
        self,
        x: torch.Tensor,
        eps: torch.Tensor | None = None,
        weights: bool = False,
        dreg: bool = False,
        generator: torch.Generator | None = None,
    ) -> Terms:
        """The terms objectives need, for noise eps (B, S, latent_dim) or (B, latent_dim) (one
        draw per image from ``generator`` when not given): what training calls, through DDP and
        torch.compile wrappers. ``weights`` adds the log importance weights, ``dreg`` prepares
        them for the DReG estimator (:meth:`_draws`). The KL is the prior's closed form where it
        has one, else the Monte-Carlo estimate on these same draws."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        eps = eps.unsqueeze(1) if eps.dim() == 2 else eps
        closed = self.prior.kl(mu, logvar)
        reconstruction, log_weight, log_q_over_p = self._draws(
            x, mu, logvar, eps, weights or dreg, dreg, monte_carlo_kl=closed is None
        )
        kl = closed if closed is not None else log_q_over_p.mean(1, keepdim=True)
        return Terms(reconstruction, kl, log_weight)
