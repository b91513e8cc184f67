"""The VAE: Gaussian encoder, reparameterisation, a prior (N(0, I) unless another is chosen),
decoder, and the ELBO."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from vaecli import registry
from vaecli.errors import VaeError
from vaecli.likelihoods import Likelihood
from vaecli.options import with_defaults
from vaecli.priors import Prior, build_prior
from vaecli.priors.base import check_prior
from vaecli.priors.normal import StandardNormal

LOG_2PI = math.log(2.0 * math.pi)
PRIOR_START_IMAGES = 4096  # random training images a learned prior may start from (start_from_data)


class Elbo(NamedTuple):
    """Per-image terms in nats: elbo = reconstruction - kl, each of shape (batch,)."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


class Terms(NamedTuple):
    """What training objectives are made of, for a batch of B images and S draws z_s ~ q(z|x)
    per image, in nats (see :mod:`vaecli.objectives`)."""

    #: log p(x|z_s), (B, S)
    reconstruction: torch.Tensor
    #: KL(q(z|x) || p(z)) in parts that sum to it, (B, parts): per latent dimension in closed
    #: form where the prior has one (N(0, I)), else the Monte-Carlo estimate mean_s [log q(z_s|x) -
    #: log p(z_s)] on the same draws, one part per latent group (see VAE.kl_exact)
    kl: torch.Tensor
    #: log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), (B, S); None unless asked for
    log_weight: torch.Tensor | None = None

    def elbo(self) -> Elbo:
        """The ELBO's terms per image: the S draws' mean reconstruction, the KL's parts summed."""
        reconstruction = self.reconstruction.mean(1)
        kl = self.kl.sum(-1)
        return Elbo(reconstruction - kl, reconstruction, kl)


class LatentModel(Protocol):
    """What every command asks of a model (the single-latent :class:`VAE` is one).

    - training: ``forward(x, eps, weights, dreg)`` gives the :class:`Terms` objectives use, for
      standard-normal noise ``eps`` (B, S, noise_dim()) that the training step draws;
      ``start_from_data(images)`` once before the first step.
    - ``vae eval``: the same ``forward(x, eps, weights=True)`` in chunks of draws, for the
      importance-sampled log p(x) (from Terms.log_weight) and the ELBO; ``kl_exact`` says whether
      Terms.kl is a closed form (the same for every draw) or a Monte-Carlo estimate to average;
      ``kl_by_group`` and ``kl_groups`` turn its parts into the KL per latent group.
    - ``vae encode``, ``map``, ``interpolate``, ``reconstruct``, active units: ``encode(x)``, the
      mean and log-variance of the code that ``encode`` writes.
    - ``vae decode``, ``sample``, the pictures: ``decode(z)``, the likelihood's parameters.
    - ``vae sample``: ``sample_prior(n, generator, temperature)``; ``traverse``: ``prior.moments()``.
    """

    likelihood: Likelihood
    latent_dim: int
    input_shape: tuple[int, int, int]
    prior: Prior

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None = None, weights: bool = False, dreg: bool = False
    ) -> Terms: ...

    def noise_dim(self) -> int: ...

    @property
    def kl_exact(self) -> bool: ...

    def kl_groups(self) -> dict[str, int]: ...

    def kl_by_group(self, kl: torch.Tensor) -> torch.Tensor: ...

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def sample_prior(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor: ...

    def start_from_data(self, images: torch.Tensor) -> None: ...


class VAE(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2), p(z) given by ``prior`` (N(0, I) by default), p(x|z)
    given by ``likelihood``.

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
        prior: Prior | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        self.prior = prior if prior is not None else StandardNormal(latent_dim, self.input_shape)
        self.prior.attach(self.encode)
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
            if not isinstance(fit, torch.Tensor) or fit.shape != self.output_offset.shape:
                got = tuple(fit.shape) if isinstance(fit, torch.Tensor) else type(fit).__name__
                what = registry.likelihoods.describe(self.spec.likelihood) if self.spec else "the likelihood"
                raise VaeError(
                    f"{what}: constant_fit gives shape {got}, expected {tuple(self.output_offset.shape)}"
                    " (params_per_pixel, C, H, W)"
                )
            self.output_offset.copy_(fit)  # (any float dtype and device: copied into the model's)
        self.likelihood.fit_own_parameters(images)
        if type(self.prior).start_from_data is not Prior.start_from_data:  # (no draws for N(0, I))
            few = images[torch.randperm(images.shape[0])[:PRIOR_START_IMAGES]]
            self.prior.start_from_data(self.likelihood.prepare(few, torch.Generator().manual_seed(0)))

    @property
    def kl_exact(self) -> bool:
        """Whether Terms.kl is the prior's closed form per latent dimension (the same for every
        draw of z), not a Monte-Carlo estimate."""
        return type(self.prior).kl is not Prior.kl

    def kl_groups(self) -> dict[str, int]:
        """The latent groups (name: dimensions) whose KL vae eval and the epoch rows report."""
        return {"z": self.latent_dim}

    def kl_by_group(self, kl: torch.Tensor) -> torch.Tensor:
        """Terms.kl's parts (..., parts) added up per latent group (..., groups)."""
        return kl.sum(-1, keepdim=True)

    def kl_per_dimension(self, x: torch.Tensor) -> torch.Tensor | None:
        """KL(q(z_d|x) || p(z_d)) per image and latent dimension (B, latent_dim) in closed form,
        or None where the prior has none."""
        return self.prior.kl(*self.encode(x))

    def noise_dim(self) -> int:
        """Standard-normal numbers per draw of z that :meth:`forward` takes as ``eps``."""
        return self.latent_dim

    def sample_prior(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n codes from the prior (:meth:`Prior.sample`), on the CPU."""
        return self.prior.sample(n, generator, temperature)

    def elbo(
        self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> Elbo:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), one-sample estimate of the first term
        (with the standard-normal noise ``eps`` when given, else drawn from ``generator``)."""
        return self.forward(x, eps, generator=generator).elbo()

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
        repeated = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        log_px_z = self.likelihood.log_prob(repeated, params).view(b, s)
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


@dataclass
class ModelSpec:
    """Everything needed to rebuild a VAE's modules (weights aside)."""

    input_shape: tuple[int, int, int]
    latent_dim: int
    architecture: str = "mlp"
    architecture_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)


def build_likelihood(name: str, options: dict[str, Any]) -> Likelihood:
    """The registered likelihood ``name`` made with ``options``."""
    likelihood, what = registry.likelihoods.build(name, options)
    if not isinstance(likelihood, Likelihood):
        raise VaeError(f"{what} did not give a vaecli Likelihood (got {type(likelihood).__name__})")
    return likelihood


def build_model(spec: ModelSpec, check_shapes: bool = True) -> VAE:
    """Build a VAE from registered parts and check that their shapes fit together (a forward pass
    on zeros; ``check_shapes=False`` skips it, for skeletons on the meta device). The model's
    ``spec`` records the architecture's options with its defaults filled in."""
    likelihood = build_likelihood(spec.likelihood, spec.likelihood_options)
    args = (tuple(spec.input_shape), spec.latent_dim, likelihood.params_per_pixel)
    built, what = registry.architectures.call(spec.architecture, args, spec.architecture_options)
    factory = registry.architectures.load(spec.architecture)
    if not (isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)):
        raise VaeError(f"{what} must return (encoder, decoder) torch modules, got {type(built).__name__}")
    encoder, decoder = built
    prior = build_prior(spec.prior, spec.latent_dim, tuple(spec.input_shape), spec.prior_options)
    model = VAE(encoder, decoder, likelihood, spec.latent_dim, tuple(spec.input_shape), prior)
    if check_shapes:
        _check_shapes(model, spec, what)
    # The architecture's defaults are written down with the given options: a model file then
    # rebuilds the same modules even after a default changes.
    model.spec = replace(
        spec, architecture_options=with_defaults(factory, args, spec.architecture_options),
        prior_options=prior.options(),
    )  # fmt: skip
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
    if registry.likelihoods.entry(spec.likelihood).distribution != "vaecli":  # (vaecli's own are tested)
        check_likelihood(model.likelihood, spec, params)
    if registry.priors.entry(spec.prior).distribution != "vaecli":
        check_prior(model.prior, registry.priors.describe(spec.prior))


def check_likelihood(likelihood: Likelihood, spec: ModelSpec, params: torch.Tensor) -> None:
    """Call a plugin likelihood's ``prepare``, ``log_prob`` and ``mean`` once on two black
    images and the decoder's output ``params`` for them, so that one that fails or gives the
    wrong shape is named before training starts (not as a broadcasting error deep in the loop,
    or as metrics that do not add up)."""
    what = registry.likelihoods.describe(spec.likelihood)
    images = torch.zeros(params.shape[0], *spec.input_shape, dtype=torch.uint8)
    try:
        with torch.no_grad():
            x = likelihood.prepare(images, torch.Generator().manual_seed(0))
            log_p, mean = likelihood.log_prob(x, params), likelihood.mean(params)
    except VaeError:
        raise
    except Exception as exc:
        raise VaeError(f"{what} fails on decoder output of shape {tuple(params.shape)}: "
                       f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    for method, got, want in (
        ("prepare", x, images.shape), ("log_prob", log_p, (images.shape[0],)), ("mean", mean, images.shape)
    ):  # fmt: skip
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        if shape != tuple(want):
            raise VaeError(
                f"{what}: {method} gives shape {shape} for {images.shape[0]} images, expected {tuple(want)}"
                + (" (one log-probability per image, summed over pixels)" if method == "log_prob" else "")
            )
