"""``hierarchical``: a deep hierarchical VAE in the LVAE / VDVAE form.

A bottom-up path of convolutional residual cells turns the image into features at a few
resolutions (each half the one before). A top-down path starts from a learned state at the
coarsest one and passes through L latent groups, coarse to fine: at each, the posterior
q(z_l | x, z_<l) is read from the top-down state and the bottom-up features of its resolution,
the prior p(z_l | z_<l) from the top-down state alone (the top group's is the chosen ``--prior``),
and the drawn z_l is added into the state. The state at the finest resolution is decoded into the
likelihood's parameters. Each group is a map of ``latent`` x height x width numbers (conv
cells) or a vector of ``latent`` numbers (dense cells); a code is the groups' values one after the
other, top first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.architectures import Shape, activation_factory
from vaecli.errors import UsageError, VaeError
from vaecli.likelihoods import Likelihood
from vaecli.models.base import LatentVariableModel, Temperature, Terms
from vaecli.models.gaussian import kl_divergence, log_density, standard_log_density
from vaecli.options import as_int, int_list
from vaecli.priors import Prior

if TYPE_CHECKING:
    from vaecli.models.building import ModelSpec

#: softplus(x + SOFTPLUS_SHIFT) is 1 at x = 0: a new group starts at unit scale.
SOFTPLUS_SHIFT = math.log(math.e - 1.0)
MIN_SCALE = 1e-4  # the softplus scale's floor: log sigma stays finite however far the net pushes it
MOMENT_DRAWS = 2000  # ancestral draws whose spread a traversal sweeps
SAMPLE_CHUNK = 1024  # codes drawn at once


def _logvar_exp(raw: torch.Tensor) -> torch.Tensor:
    return raw


def _logvar_softplus(raw: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.log(F.softplus(raw + SOFTPLUS_SHIFT) + MIN_SCALE)


#: How a network's raw output becomes a log-variance, by the name the ``scales`` option takes:
#: ``softplus`` (sigma = softplus(raw), floored; its gradient never explodes as exp's can, the
#: usual cure for a hierarchy's NaNs) or ``exp`` (logvar = raw, as the single-latent VAE).
SCALES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"softplus": _logvar_softplus, "exp": _logvar_exp}
#: How a group's posterior is read from its network's output, by the ``posterior`` option's name:
#: ``absolute`` (the output is the posterior's mean and scale) or ``residual`` (NVAE's residual
#: normal: the output is a shift of the group's prior mean and a factor of its scale, so that the
#: KL measures only where q departs from p, and a prior that narrows takes the posterior with it).
POSTERIORS = ("absolute", "residual")


class Layers:
    """How the cells are made: ``conv`` (latent groups are maps at halving resolutions, 3x3
    convolutions) or ``dense`` (latent groups are vectors, fully connected layers: the same
    hierarchy for a fraction of the arithmetic, the one that trains in hours on a CPU)."""

    name = "conv"

    def layer(self, width_in: int, width_out: int, kernel: int = 3) -> nn.Module:
        return nn.Conv2d(width_in, width_out, kernel, padding=kernel // 2)

    def sizes(self, input_shape: tuple[int, int, int], stages: int) -> list[tuple[int, ...]]:
        """The stages' sizes, coarse to fine (each half the one below, rounded up)."""
        sizes = [tuple(input_shape[1:])]
        for _ in range(stages):
            sizes.append(tuple((v + 1) // 2 for v in sizes[-1]))
        return sizes[:0:-1]

    def stem(self, input_shape: tuple[int, int, int], width: int) -> nn.Module:
        return nn.Conv2d(input_shape[0], width, 3, padding=1)

    def down(self, width: int) -> nn.Module:
        return nn.Conv2d(width, width, 3, stride=2, padding=1)

    def upsample(self, h: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return F.interpolate(h, scale_factor=2.0, mode="nearest")[:, :, : size[0], : size[1]]

    def head(self, width: int, params: int, input_shape: tuple[int, int, int], act: Callable[[], nn.Module]
             ) -> nn.Module:  # fmt: skip
        """The finest state to the likelihood's parameters (B, params * C, H, W), uncropped."""
        return nn.Sequential(
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), act(),
            nn.Conv2d(width, params * input_shape[0], 3, padding=1),
        )  # fmt: skip


class DenseLayers(Layers):
    """Fully connected cells: every state and group is a vector."""

    name = "dense"

    def layer(self, width_in: int, width_out: int, kernel: int = 3) -> nn.Module:
        return nn.Linear(width_in, width_out)

    def sizes(self, input_shape: tuple[int, int, int], stages: int) -> list[tuple[int, ...]]:
        return [() for _ in range(stages)]

    def stem(self, input_shape: tuple[int, int, int], width: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))

    def down(self, width: int) -> nn.Module:
        return nn.Linear(width, width)

    def upsample(self, h: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return h

    def head(self, width: int, params: int, input_shape: tuple[int, int, int], act: Callable[[], nn.Module]
             ) -> nn.Module:  # fmt: skip
        return nn.Sequential(nn.Linear(width, params * math.prod(input_shape)),
                             nn.Unflatten(1, (params * input_shape[0], *input_shape[1:])))  # fmt: skip


#: The kinds of cell, by the name the ``cells`` option takes.
CELLS: dict[str, Layers] = {"conv": Layers(), "dense": DenseLayers()}
#: ``width`` and ``latent`` when not given, by kind of cell: 32 channels and maps of 4 channels
#: (4 x 7 x 7 = 196 numbers at 7x7), or 256 units and vectors of 32 numbers.
DEFAULT_WIDTH = {"conv": 32, "dense": 256}
DEFAULT_LATENT = {"conv": 4, "dense": 32}


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Cell(nn.Module):
    """x + layer(act(layer(act(x)))), keeping the width (and size); the second layer starts at
    zero, so a new cell is the identity and a deep stack trains from the first step."""

    def __init__(self, layers: Layers, width: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(act(), layers.layer(width, width), act(), _zero(layers.layer(width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Posterior(nn.Sequential):
    """q's layers: (top-down state, bottom-up features) -> mean and raw scale. The first layer
    is linear in its input, so its features' half is taken once per image and shared by the
    image's ``repeats`` draws (in ``vae eval``, thousands), its state's half once per draw."""

    def forward(self, h: torch.Tensor, a: torch.Tensor, repeats: int = 1) -> torch.Tensor:  # type: ignore[override]
        first, width = self[0], h.shape[1]
        from_features = _linear(first, a, first.weight[:, width:], first.bias)
        if repeats > 1:
            from_features = from_features.repeat_interleave(repeats, dim=0)
        out = _linear(first, h, first.weight[:, :width], None) + from_features
        for layer in list(self)[1:]:
            out = layer(out)
        return out


def _linear(
    layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``layer`` (a Linear or Conv2d) applied to x with another weight and bias."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, bias)
    return nn.functional.linear(x, weight, bias)


class Group(nn.Module):
    """One latent group: its posterior from (top-down state, bottom-up features), its prior and a
    change of state from the top-down state (none for the top group, whose prior is the model's
    ``prior``), the drawn z's way into the state, and the cells after it."""

    def __init__(self, layers: Layers, width: int, latent: int, blocks: int, act: Callable[[], nn.Module],
                 top: bool) -> None:  # fmt: skip
        super().__init__()
        self.latent = latent
        self.posterior = Posterior(layers.layer(2 * width, width), act(), layers.layer(width, 2 * latent, 1))
        self.prior = None
        if not top:  # (its last layer starts at zero: a new group's prior is N(0, I) and changes nothing)
            self.prior = nn.Sequential(
                layers.layer(width, width), act(), _zero(layers.layer(width, 2 * latent + width, 1))
            )
        self.z_in = layers.layer(latent, width, 1)
        self.cells = nn.Sequential(*[Cell(layers, width, act) for _ in range(blocks)])

    def conditional_prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prior's mean and raw scale (B, latent, ...) and the state's change (B, width, ...)."""
        assert self.prior is not None
        zc = self.latent
        out = self.prior(h)
        return out[:, :zc], out[:, zc : 2 * zc], out[:, 2 * zc :]

    def step(self, h: torch.Tensor, z: torch.Tensor, change: torch.Tensor | None) -> torch.Tensor:
        """The state after z (B, latent, ...) is drawn."""
        h = h + self.z_in(z) if change is None else h + change + self.z_in(z)
        return self.cells(h)


@dataclass
class Draw:
    """What the top-down pass gives: the decoder's parameters, and per group the KL, log p(z_l |
    z_<l) - log q(z_l | x, z_<l) at the drawn z (when asked), the codes and their log-variances
    (from the posterior), or the log prior of given codes, each (B,)."""

    params: torch.Tensor
    kl: list[torch.Tensor]
    log_p_over_q: list[torch.Tensor]
    codes: list[torch.Tensor]
    logvars: list[torch.Tensor]
    log_prior: list[torch.Tensor]  # log p(z_l | z_<l) of given codes


class HierarchicalVAE(LatentVariableModel):
    """L latent groups over len(groups) resolutions; see the module's description."""

    uses_architecture = False
    supports_dreg = False

    def __init__(self, likelihood: Likelihood, input_shape: Shape, make_prior: Callable[[int], Prior],
                 layers: Layers, width: int, groups: Sequence[int], latent: int, blocks: int,
                 activation: str, scales: str, posterior: str = "absolute") -> None:  # fmt: skip
        #: The top-down stages' sizes, coarse to fine, and each group's.
        stage_sizes = layers.sizes(tuple(input_shape), len(groups))
        group_sizes = [size for size, count in zip(stage_sizes, groups, strict=True) for _ in range(count)]
        dims = [latent * math.prod(size) for size in group_sizes]
        super().__init__(likelihood, sum(dims), input_shape, make_prior(dims[0]))
        self.layers, self.stage_sizes, self.group_sizes = layers, stage_sizes, group_sizes
        self.groups_per_stage = list(groups)
        self.stage_of = [stage for stage, count in enumerate(groups) for _ in range(count)]
        self.dims = dims
        self.latent = latent
        self.logvar_of = SCALES[scales]
        self.residual = posterior == "residual"
        act = activation_factory(activation)
        self.stem = layers.stem(tuple(input_shape), width)
        self.down = nn.ModuleList(
            nn.Sequential(act(), layers.down(width), *[Cell(layers, width, act) for _ in range(blocks)])
            for _ in groups
        )
        self.start = nn.Parameter(torch.zeros(1, width, *stage_sizes[0]))
        self.latents = nn.ModuleList(
            Group(layers, width, latent, blocks, act, i == 0) for i in range(len(dims))
        )
        self.head = layers.head(width, likelihood.params_per_pixel, tuple(input_shape), act)
        self.prior.attach(self.encode_top)

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, likelihood: Likelihood, make_prior: Callable[[int], Prior],
        cells: str = "conv", width: str | int | None = None, groups: str | Sequence[int] = (2, 2),
        latent: str | int | None = None, blocks: str | int = 1, activation: str = "elu",
        scales: str = "softplus", posterior: str = "absolute",
    ) -> HierarchicalVAE:  # fmt: skip
        """The model ``hierarchical``: ``groups`` latent groups per stage, coarsest first (so L is
        their sum; with conv cells each stage halves the resolution: "2,2" on 28x28 images puts
        two groups of ``latent`` maps at 7x7 and two at 14x14; with dense cells each group is a
        vector of ``latent`` numbers); ``width`` the channels (or units) of both paths, ``blocks``
        the residual cells after each downsampling and each group, ``scales`` how the scales are
        made (:data:`SCALES`), ``posterior`` how a group's posterior relates to its prior
        (:data:`POSTERIORS`); ``width`` and ``latent`` default to :data:`DEFAULT_WIDTH` and
        :data:`DEFAULT_LATENT`. ``--arch`` and ``--latent-dim`` do not apply: the cells are the
        model's own and the code's size follows from these options."""
        for name, value, choices in (("cells", cells, CELLS), ("scales", scales, SCALES),
                                     ("posterior", posterior, POSTERIORS)):  # fmt: skip
            if str(value) not in choices:
                raise UsageError(f"option {name}: unknown '{value}' (use {', '.join(choices)})")
        per_stage = int_list(groups, "groups")
        if len(per_stage) > 8 or sum(per_stage) > 64:
            raise UsageError(f"option groups asks for {sum(per_stage)} groups over {len(per_stage)} stages; "
                             "at most 64 over 8")  # fmt: skip
        width = DEFAULT_WIDTH[str(cells)] if width is None else width
        latent = DEFAULT_LATENT[str(cells)] if latent is None else latent
        sizes = (as_int(width, "width", minimum=1), as_int(latent, "latent", minimum=1))
        model = cls(likelihood, tuple(spec.input_shape), make_prior, CELLS[str(cells)], sizes[0], per_stage,
                    sizes[1], as_int(blocks, "blocks", minimum=0), activation, str(scales),
                    str(posterior))  # fmt: skip
        model.spec = replace(
            spec, model_options={**spec.model_options, "width": sizes[0], "latent": sizes[1]}
        )
        return model

    # -- the two paths -------------------------------------------------------------------------

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up features at each top-down stage's resolution, coarse to fine."""
        h = self.stem(x)
        features = []
        for down in self.down:
            h = down(h)
            features.append(h)
        return features[::-1]

    def _params(self, h: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters (B, params_per_pixel, C, H, W) from the finest state."""
        c, height, width = self.input_shape
        out = self.head(h)[:, :, :height, :width]  # (contiguous: see architectures._Crop)
        params = out.reshape(h.shape[0], self.likelihood.params_per_pixel, c, height, width).contiguous()
        return params + self.output_offset

    def _as_map(self, flat: torch.Tensor, index: int) -> torch.Tensor:
        # (unflatten, not a reshape naming the batch: torch 2.9's export then guards batch != 1)
        return flat.unflatten(1, (self.latent, *self.group_sizes[index]))

    def top_down(
        self,
        n: int,
        features: list[torch.Tensor] | None = None,
        eps: torch.Tensor | None = None,
        codes: torch.Tensor | None = None,
        temperatures: Sequence[float] | None = None,
        weights: bool = False,
        repeats: int = 1,
        score: bool = False,
    ) -> Draw:
        """The top-down pass for n rows, either from the posterior (``features`` of n / ``repeats``
        images, each image's draws ``repeats`` consecutive rows, and ``eps`` (n, noise_dim):
        z_l = mu_q + sigma_q eps_l) or from ``codes`` (n, width), the values of the top
        m groups (any m: a prefix of a code): the groups below take their prior means, or with
        ``temperatures`` and ``eps``, z_l = mu_p + T_l sigma_p eps_l (ancestral sampling). ``score``
        adds log p(z_l | z_<l) of the given codes: off for decoding and sampling, where a learned
        top prior's density (a VampPrior runs the encoder on its K pseudo-inputs) is not wanted."""
        h = self.start.expand(n, *self.start.shape[1:])
        noise = eps.split(self.dims, dim=1) if eps is not None else None
        given = self.split_prefix(codes) if codes is not None else []
        draw = Draw(params=h, kl=[], log_p_over_q=[], codes=[], logvars=[], log_prior=[])
        for index, group in enumerate(self.latents):
            stage = self.stage_of[index]
            if index > 0 and stage != self.stage_of[index - 1]:
                h = self.layers.upsample(h, self.stage_sizes[stage])
            change, prior = None, None
            if group.prior is not None:
                prior_mu, prior_raw, change = group.conditional_prior(h)
                prior = (prior_mu, self.logvar_of(prior_raw))
            if features is not None:
                a = features[stage]
                z = self._posterior_draw(group, h, a, repeats, noise[index], index, draw, weights, prior)
            elif index < len(given):
                z = self._as_map(given[index], index)
                if score:
                    top = prior is None
                    draw.log_prior.append(self.prior.log_prob(given[index]) if top else
                                          log_density(z, *prior).flatten(1).sum(-1))  # fmt: skip
            elif temperatures is not None and noise is not None:
                z = prior[0] + temperatures[index] * torch.exp(0.5 * prior[1]) * self._as_map(
                    noise[index], index
                )
            else:
                z = prior[0]
            draw.codes.append(z.flatten(1))
            h = group.step(h, z, change)
        draw.params = self._params(h)
        return draw

    def code_widths(self) -> tuple[int, ...]:
        """The sizes of the top group, the top two, ... all groups: what :meth:`decode` takes."""
        return tuple(sum(self.dims[: m + 1]) for m in range(len(self.dims)))

    def split_prefix(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Codes (n, width) split into the top groups they give values for; a width that is not
        the size of the top m groups for some m is an error naming the sizes that are."""
        widths = list(self.code_widths())
        if codes.shape[-1] not in widths:
            raise VaeError(
                f"codes of {codes.shape[-1]} numbers: this model takes the top groups' values, "
                f"{', '.join(map(str, widths))} numbers (the top group, the top two, ... all {len(widths)})"
            )
        m = widths.index(codes.shape[-1]) + 1
        return list(codes.split(self.dims[:m], dim=1))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_l | z_<l) of every group for whole codes z (n, latent_dim): (n, L)."""
        if z.shape[-1] != self.latent_dim:
            raise VaeError(f"log_prior takes whole codes of {self.latent_dim} numbers, got {z.shape[-1]}")
        return torch.stack(self.top_down(z.shape[0], codes=z, score=True).log_prior, dim=-1)

    def _posterior_draw(self, group: Group, h: torch.Tensor, a: torch.Tensor, repeats: int, eps: torch.Tensor,
                        index: int, draw: Draw, weights: bool,
                        prior: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:  # fmt: skip
        """z_l from q(z_l | x, z_<l), with its KL (and log p - log q at z) added to ``draw``."""
        zc = self.latent
        out = group.posterior(h, a, repeats)
        mu, logvar = out[:, :zc], self.logvar_of(out[:, zc:])
        if self.residual and prior is not None:  # mu_p + dmu, sigma_p * dsigma
            mu, logvar = prior[0] + mu, prior[1] + logvar
        eps = self._as_map(eps, index)
        z = mu + torch.exp(0.5 * logvar) * eps
        draw.logvars.append(logvar.flatten(1))
        if prior is None:  # the top group: the chosen prior over the flattened map
            flat_mu, flat_logvar, flat_z = mu.flatten(1), logvar.flatten(1), z.flatten(1)
            closed = self.prior.kl(flat_mu, flat_logvar)
            log_q = standard_log_density(eps, logvar).flatten(1).sum(-1)
            log_p = self.prior.log_prob(flat_z) if weights or closed is None else None
            draw.kl.append(closed.sum(-1) if closed is not None else log_q - log_p)
        else:
            draw.kl.append(kl_divergence(mu, logvar, *prior).flatten(1).sum(-1))
            log_q = standard_log_density(eps, logvar).flatten(1).sum(-1) if weights else None
            log_p = log_density(z, *prior).flatten(1).sum(-1) if weights else None
        if weights:
            draw.log_p_over_q.append(log_p - log_q)
        return z

    # -- the contract ----------------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None = None, weights: bool = False, dreg: bool = False,
        generator: torch.Generator | None = None,
    ) -> Terms:  # fmt: skip
        """The terms objectives need for noise eps (B, S, noise_dim) or (B, noise_dim): the
        bottom-up pass once per image, the top-down pass once per draw. Terms.kl has one part per
        group: the closed-form KL of each group given the draws above it (the top group's: the
        prior's closed form, else log q - log p), averaged over the draws."""
        if dreg:
            raise VaeError("the hierarchical model has no DReG estimator: use --objective iwae (or elbo)")
        if eps is None:
            eps = torch.randn(
                (x.shape[0], self.noise_dim()), generator=generator, device=x.device, dtype=x.dtype
            )
        eps = eps.unsqueeze(1) if eps.dim() == 2 else eps
        b, s, d = eps.shape
        draw = self.top_down(b * s, self.bottom_up(x), eps.reshape(b * s, d), weights=weights, repeats=s)
        reconstruction = self.likelihood.log_prob_draws(x, draw.params).view(b, s)
        kl = torch.stack(draw.kl, dim=-1).view(b, s, -1).mean(1)
        log_weight = None
        if weights:
            log_weight = reconstruction + torch.stack(draw.log_p_over_q, dim=-1).sum(-1).view(b, s)
        return Terms(reconstruction, kl, log_weight)

    @property
    def kl_exact(self) -> bool:
        """False: every group's KL below the top depends on the draws above it."""
        return False

    def kl_groups(self) -> dict[str, int]:
        return {f"z{i + 1}": dim for i, dim in enumerate(self.dims)}

    def kl_by_group(self, kl: torch.Tensor) -> torch.Tensor:
        return kl

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every group's posterior mean and log-variance (B, latent_dim), along the path where
        each group takes its mean (eps = 0)."""
        zeros = torch.zeros(x.shape[0], self.noise_dim(), device=x.device, dtype=x.dtype)
        draw = self.top_down(x.shape[0], self.bottom_up(x), zeros)
        return torch.cat(draw.codes, dim=1), torch.cat(draw.logvars, dim=1)

    def encode_top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top group's posterior mean and log-variance (B, dims[0]): what a prior built from
        the encoder (the VampPrior) uses."""
        group, h = self.latents[0], self.start.expand(x.shape[0], *self.start.shape[1:])
        out = group.posterior(h, self.bottom_up(x)[0])
        zc = self.latent
        return out[:, :zc].flatten(1), self.logvar_of(out[:, zc:]).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters for codes z (B, width): every group's values, or the top m
        groups' (the groups below then take their prior means given those above)."""
        return self.top_down(z.shape[0], codes=z).params

    @torch.no_grad()
    def sample_prior(
        self, n: int, generator: torch.Generator, temperature: Temperature = 1.0
    ) -> torch.Tensor:
        """n codes (n, latent_dim) on the CPU by ancestral sampling: the top group from the prior,
        each below from its prior given those above, each with its temperature (one for all, or
        one per group: T scales the spread around the group's prior mean)."""
        temperatures = self.group_temperatures(temperature)
        top = self.prior.sample(n, generator, temperatures[0])
        eps = torch.randn((n, self.latent_dim), generator=generator)
        device, dtype = self.start.device, self.start.dtype
        codes = [
            torch.cat(
                self.top_down(
                    part.shape[0],
                    eps=noise.to(device, dtype),
                    codes=part.to(device, dtype),
                    temperatures=temperatures,
                ).codes,
                dim=1,
            ).cpu()  # fmt: skip
            for part, noise in zip(top.split(SAMPLE_CHUNK), eps.split(SAMPLE_CHUNK), strict=True)
        ]
        return torch.cat(codes) if codes else torch.empty(0, self.latent_dim)

    @torch.no_grad()
    def code_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and standard deviation of :data:`MOMENT_DRAWS` ancestral draws (fixed seed)."""
        z = self.sample_prior(MOMENT_DRAWS, torch.Generator().manual_seed(0)).double()
        return z.mean(0).float(), z.std(0).float()
