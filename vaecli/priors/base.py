"""The prior contract: what a model asks of p(z), and how one is built from the registry."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from vaecli import registry
from vaecli.errors import VaeError

LOG_2PI = math.log(2.0 * math.pi)
MOMENT_DRAWS = 10_000

#: The encoder a prior may use (the VampPrior does): prepared images to (mu, logvar).
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Prior(nn.Module):
    """Base class of priors p(z) over a latent vector of ``latent_dim`` numbers; subclasses are
    registered by entry point and built as ``Class(latent_dim, input_shape, **options)``.

    Learned priors keep their parameters as the module's own: they are trained with the model
    and saved in its file. A prior without a closed-form KL returns None from :meth:`kl`; the
    model then uses the Monte-Carlo estimate log q(z|x) - log p(z) on the draws of z it decodes.
    """

    name = "prior"

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)

    def options(self) -> dict[str, Any]:
        """The options this prior was made with (recorded in the model file and config.yaml)."""
        return {}

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for codes (..., latent_dim), shape (...), in nats."""
        raise NotImplementedError("a prior must define log_prob(z)")

    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n codes (n, latent_dim) on the CPU, drawn with the CPU ``generator`` (so a seed gives the
        same codes on every device); ``temperature`` T scales the spread around the prior's (or its
        components') means by T: 1 is the prior itself, below 1 its more typical codes."""
        raise NotImplementedError("a prior must define sample(n, generator, temperature)")

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's mean and standard deviation per dimension (latent_dim,), on the CPU, where
        a latent traversal centres and scales its sweeps; by default estimated from
        :data:`MOMENT_DRAWS` draws with a fixed seed."""
        z = self.sample(MOMENT_DRAWS, torch.Generator().manual_seed(0)).double()
        return z.mean(0).float(), z.std(0).float()

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
        """KL(N(mu, diag exp(logvar)) || p(z)) per latent dimension (B, latent_dim) in closed form,
        or None where none exists (the default)."""
        return None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """A block in which the prior's parameters, and the encoder it was given, do not change (an
        evaluation): a prior may keep there what it derives from them (the default keeps nothing)."""
        yield

    def attach(self, encode: Encode) -> None:
        """Called once by the model with its encoder; a prior built from it keeps it (the default
        ignores it)."""

    def start_from_data(self, x: torch.Tensor) -> None:
        """Before training: prepared training images ``x`` (up to a few thousand) to start the
        prior's own parameters from (the default does nothing)."""


def check_prior(prior: Prior, what: str) -> None:
    """Call a plugin prior's ``log_prob``, ``sample`` and ``kl`` once on two codes, so that one that
    fails or gives the wrong shape is named before training starts (not as a broadcasting error
    deep in the loop)."""
    d = prior.latent_dim
    zeros = torch.zeros(2, d)
    try:
        with torch.no_grad():
            got = {"log_prob": prior.log_prob(zeros)}
            got["sample"] = prior.sample(2, torch.Generator().manual_seed(0))
            got["kl"] = prior.kl(zeros, zeros)
    except VaeError:
        raise
    except Exception as exc:
        raise VaeError(f"{what} fails on codes of shape (2, {d}): {type(exc).__name__}: {exc}") from exc
    for method, want in (("log_prob", (2,)), ("sample", (2, d)), ("kl", (2, d))):
        value = got[method]
        if method == "kl" and value is None:
            continue
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != want:
            raise VaeError(
                f"{what}: {method} gives shape {shape} for 2 codes of {d} numbers, expected {want}"
            )


def build_prior(
    name: str, latent_dim: int, input_shape: tuple[int, int, int], options: dict[str, Any]
) -> Prior:
    """The registered prior ``name`` for ``latent_dim`` codes of images of ``input_shape``."""
    registry.priors.check(name)
    prior, what = registry.priors.call(name, (latent_dim, tuple(input_shape)), options)
    if not isinstance(prior, Prior):
        raise VaeError(f"{what} did not give a vaecli Prior (got {type(prior).__name__})")
    return prior
