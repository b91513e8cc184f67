"""The model contract every command uses (:class:`LatentModel`), the terms a forward pass gives
(:class:`Terms`), and :class:`LatentVariableModel`, the base both built-in models share: the
likelihood, the prior of the top latent group, the decoder's output offset and the start from data."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
from torch import nn

from vaecli import registry
from vaecli.errors import UsageError, VaeError
from vaecli.likelihoods import Likelihood
from vaecli.priors import Prior
from vaecli.priors.base import check_prior

if TYPE_CHECKING:
    from vaecli.models.building import ModelSpec

PRIOR_START_IMAGES = 4096  # random training images a learned prior may start from (start_from_data)

#: A temperature for every latent group, or one per group (top first).
Temperature = float | Sequence[float]


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
    """What every command asks of a model (:class:`~vaecli.models.vae.VAE` and
    :class:`~vaecli.models.hierarchical.HierarchicalVAE` are two).

    A model's *code* is one vector of ``latent_dim`` numbers: its latent groups (``kl_groups()``,
    name: size, top group first) one after the other.

    - training: ``forward(x, eps, weights, dreg)`` gives the :class:`Terms` objectives use, for
      standard-normal noise ``eps`` (B, S, noise_dim()) that the training step draws;
      ``start_from_data(images)`` once before the first step.
    - ``vae eval``: the same ``forward(x, eps, weights=True)`` in chunks of draws, for the
      importance-sampled log p(x) (from Terms.log_weight) and the ELBO; ``kl_exact`` says whether
      Terms.kl is a closed form (the same for every draw) or a Monte-Carlo estimate to average;
      ``kl_by_group`` and ``kl_groups`` turn its parts into the KL per latent group.
    - ``vae encode``, ``map``, ``interpolate``, ``reconstruct``, active units: ``encode(x)``, the
      mean and log-variance of the code (for a hierarchy: along the path where every group takes
      its posterior mean).
    - ``vae decode``, ``sample``, the pictures: ``decode(z)``, the likelihood's parameters.
    - ``vae sample``: ``sample_prior(n, generator, temperature)`` (one temperature, or one per
      group); ``traverse``: ``code_moments()``, the centre and spread of the codes it sweeps.
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

    def sample_prior(
        self, n: int, generator: torch.Generator, temperature: Temperature = 1.0
    ) -> torch.Tensor: ...

    def code_moments(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def start_from_data(self, images: torch.Tensor) -> None: ...


class LatentVariableModel(nn.Module):
    """What the built-in models share: a likelihood p(x|...), a prior over the top latent group
    (``prior``, N(0, I) unless another is chosen), and ``output_offset``, fixed decoder parameters
    per pixel (params_per_pixel, *input_shape) added to the decoder's output: zeros until
    :meth:`start_from_data` sets them from the training images, so the decoder learns how images
    differ from their average, not the average."""

    #: Whether the model is built from ``--arch`` and ``--latent-dim`` (the hierarchy is not).
    uses_architecture = True
    #: Whether ``forward(..., dreg=True)`` gives the DReG estimator's terms.
    supports_dreg = True

    def __init__(
        self, likelihood: Likelihood, latent_dim: int, input_shape: tuple[int, int, int], prior: Prior
    ) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        self.prior = prior
        self.register_buffer("output_offset", torch.zeros(likelihood.params_per_pixel, *input_shape))
        #: How to rebuild this model's modules; set by :func:`~vaecli.models.build_model`.
        self.spec: ModelSpec | None = None

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """For a block that changes no weight (an evaluation): the model in eval mode, its prior
        frozen (:meth:`~vaecli.priors.Prior.frozen`); in the mode it was in again after it."""
        was_training = self.training
        self.eval()
        try:
            with self.prior.frozen():
                yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def start_from_data(self, images: torch.Tensor) -> None:
        """Before training: set ``output_offset`` to the likelihood's best fit to uint8 ``images``
        that ignores z (:meth:`Likelihood.constant_fit`; a likelihood without one leaves it at
        zero), the likelihood's own parameters to theirs (:meth:`Likelihood.fit_own_parameters`),
        and a learned prior's from a few prepared images. All get the images on the CPU, where
        float64 sums exist on every machine (MPS has none)."""
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

    def check_parts(self, what: str) -> None:
        """Decode two zero codes and check the parameters' shape, then call a plugin likelihood and
        prior once (:meth:`check_plugin_parts`), so a part that does not fit is named before
        training starts."""
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                params = self.decode(torch.zeros(2, self.latent_dim))
            except Exception as exc:
                raise VaeError(f"{what} fails to decode codes of size {self.latent_dim}: {exc}") from exc
        self.check_plugin_parts(what, params)

    def check_plugin_parts(self, what: str, params: torch.Tensor) -> None:
        """``params``, the decoder's output for two codes, must have the likelihood's shape; a
        plugin likelihood and prior are then called once on them
        (:func:`~vaecli.models.building.check_likelihood`, :func:`check_prior`)."""
        from vaecli.models.building import check_likelihood

        expected = (2, self.likelihood.params_per_pixel, *self.input_shape)
        if tuple(params.shape) != expected:
            raise VaeError(
                f"{what}: decoder gives shape {tuple(params.shape[1:])} per image, expected {expected[1:]}"
            )
        spec = self.spec
        if spec is None:
            return
        if registry.likelihoods.entry(spec.likelihood).distribution != "vaecli":  # (vaecli's own are tested)
            check_likelihood(self.likelihood, spec, params)
        if registry.priors.entry(spec.prior).distribution != "vaecli":
            check_prior(self.prior, registry.priors.describe(spec.prior))

    def kl_groups(self) -> dict[str, int]:
        """The latent groups (name: dimensions, top first) whose KL vae eval and the epoch rows
        report; a code is their values one after the other."""
        return {"z": self.latent_dim}

    def kl_by_group(self, kl: torch.Tensor) -> torch.Tensor:
        """Terms.kl's parts (..., parts) added up per latent group (..., groups)."""
        return kl.sum(-1, keepdim=True)

    def kl_per_dimension(self, x: torch.Tensor) -> torch.Tensor | None:
        """KL per image and latent dimension (B, latent_dim) in closed form, or None (the default:
        a model whose KL has no such parts)."""
        return None

    def group_temperatures(self, temperature: Temperature) -> list[float]:
        """One temperature per latent group from one for all or one per group (top first)."""
        groups = self.kl_groups()
        values = (
            [float(temperature)] * len(groups) if isinstance(temperature, (int, float)) else list(temperature)
        )
        if len(values) != len(groups):
            plural = "s" if len(groups) > 1 else ""
            raise UsageError(
                f"{len(values)} temperatures for {len(groups)} latent group{plural} ({', '.join(groups)}): "
                "give one, or one per group"
            )
        return values

    def code_widths(self) -> tuple[int, ...]:
        """The code sizes :meth:`decode` takes: the whole code (a hierarchy also takes its top
        groups' values alone)."""
        return (self.latent_dim,)

    def noise_dim(self) -> int:
        """Standard-normal numbers per draw of z that ``forward`` takes as ``eps``."""
        return self.latent_dim

    def code_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The centre and spread (latent_dim,) of codes that a traversal sweeps: the prior's."""
        return self.prior.moments()

    def elbo(
        self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> Elbo:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), one-sample estimate of the first term
        (with the standard-normal noise ``eps`` when given, else drawn from ``generator``)."""
        if eps is None:
            eps = torch.randn(
                (x.shape[0], self.noise_dim()), generator=generator, device=x.device, dtype=x.dtype
            )
        return self.forward(x, eps).elbo()
