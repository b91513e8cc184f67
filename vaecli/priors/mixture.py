"""``mog``: a learned mixture of K diagonal Gaussians, and the mixture maths the VampPrior shares."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vaecli.errors import UsageError
from vaecli.options import as_int
from vaecli.priors.base import LOG_2PI, Prior

MAX_COMPONENTS = 1 << 16  # far past any published K (the VampPrior's MNIST runs use 500)
#: Numbers (codes x components) in one piece of the mixture's density: bounds the memory of
#: scoring many codes at once (vae eval's chunks) whatever K is.
PIECE_ELEMENTS = 1 << 24


def components_option(value: str | int, name: str = "k") -> int:
    """A number of mixture components from an option: a whole number from 1."""
    k = as_int(value, name)
    if not 1 <= k <= MAX_COMPONENTS:
        raise UsageError(f"option {name} must be a whole number from 1 to {MAX_COMPONENTS}, got {value}")
    return k


def mixture_log_prob(
    z: torch.Tensor, log_weights: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log sum_k w_k N(z; mu_k, diag exp(logvar_k)) for codes z (..., D), components (K, D) and
    normalised log weights (K,): shape (...), in z's dtype.

    Each component's square is expanded, sum_d (z_d - mu_kd)^2 / v_kd = z^2 . (1/v_k) -
    2 z . (mu_k / v_k) + mu_k^2 . (1/v_k), so all codes meet all components in two matrix
    products (K x D x codes operations, not K x D x codes tensors). The expansion cancels large
    terms for narrow components, so it is done in float64 (outside autocast): exact to ~1e-10
    nats where float32 would lose ~1e-3. Taken in pieces of codes so memory stays bounded."""
    d, k = z.shape[-1], mu.shape[0]
    with torch.autocast(z.device.type, enabled=False):
        flat = z.reshape(-1, d).double()
        precision = torch.exp(-logvar.double())  # (K, D)
        scaled_mu = mu.double() * precision
        constant = (mu.double() * scaled_mu).sum(-1) + logvar.double().sum(-1) + d * LOG_2PI  # (K,)
        log_w = log_weights.double()
        rows = max(1, PIECE_ELEMENTS // k)
        pieces = []
        for piece in flat.split(rows):
            quadratic = piece.square() @ precision.T - 2.0 * (piece @ scaled_mu.T) + constant
            pieces.append(torch.logsumexp(log_w - 0.5 * quadratic, dim=-1))
    return torch.cat(pieces).view(z.shape[:-1]).to(z.dtype)


def mixture_sample(
    n: int, generator: torch.Generator, temperature: float,
    log_weights: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """n draws on the CPU: a component k ~ w, then z = mu_k + T sigma_k eps."""
    log_weights, mu, logvar = (t.detach().float().cpu() for t in (log_weights, mu, logvar))
    chosen = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
    eps = torch.randn(n, mu.shape[1], generator=generator)
    return mu[chosen] + temperature * torch.exp(0.5 * logvar[chosen]) * eps


class MixturePrior(Prior):
    """A prior that is a mixture of diagonal Gaussians: subclasses say what its components are."""

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normalised log weights (K,), means (K, D) and log-variances (K, D)."""
        raise NotImplementedError

    def component_inputs(self) -> torch.Tensor | None:
        """The images (K, C, H, W) the components are made from, in the encoder's input space, for
        ``vae prior`` to show beside them (the VampPrior's pseudo-inputs); None (the default) where
        the components are not made from images."""
        return None

    #: The components, kept inside :meth:`frozen`.
    kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Keep the components for the block: the VampPrior's are the encoder run on its K
        pseudo-inputs, which vae eval would otherwise do again for every chunk of samples. (A block
        inside another keeps the outer one's.)"""
        if self.kept is not None:
            yield
            return
        with torch.no_grad():
            self.kept = tuple(t.detach() for t in self.components())  # type: ignore[assignment]
        try:
            yield
        finally:
            self.kept = None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        log_weights, mu, logvar = self.kept if self.kept is not None else self.components()
        return mixture_log_prob(z, log_weights, mu, logvar)

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's exact mean sum_k w_k mu_k and standard deviation, from
        Var = sum_k w_k (sigma_k^2 + mu_k^2) - mean^2."""
        log_weights, mu, logvar = (t.detach().double().cpu() for t in self.components())
        w = log_weights.exp().unsqueeze(1)
        mean = (w * mu).sum(0)
        variance = (w * (logvar.exp() + mu.square())).sum(0) - mean.square()
        return mean.float(), variance.clamp(min=0).sqrt().float()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        return mixture_sample(n, generator, temperature, *self.components())


class GaussianMixture(MixturePrior):
    """p(z) = sum_k pi_k N(mu_k, diag sigma_k^2), with pi, mu and sigma learned with the model.

    The means start spread as N(0, I) draws (equal components would get equal gradients and
    never part), the variances at 1, the weights equal."""

    name = "mog"

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], k: str | int = 10) -> None:
        super().__init__(latent_dim, input_shape)
        self.k = components_option(k)
        self.means = nn.Parameter(torch.randn(self.k, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(self.k, latent_dim))
        self.logits = nn.Parameter(torch.zeros(self.k))

    def options(self) -> dict[str, Any]:
        return {"k": self.k}

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.log_softmax(self.logits, dim=0), self.means, self.logvars


def uniform_log_weights(k: int, like: torch.Tensor) -> torch.Tensor:
    """log(1/K) for each of K components, on ``like``'s device and dtype."""
    return torch.full((k,), -math.log(k), device=like.device, dtype=like.dtype)
