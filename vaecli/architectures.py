"""Encoder/decoder pairs, registered by name.

An architecture factory is called as ``factory(input_shape, latent_dim, params_per_pixel,
**options)`` and returns ``(encoder, decoder)``: the encoder maps images (B, C, H, W) to
(B, 2 * latent_dim) holding mu then log-variance; the decoder maps z (B, latent_dim) to
decoder parameters (B, params_per_pixel, C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vaecli.errors import UsageError
from vaecli.options import as_int, int_list

Shape = tuple[int, int, int]


class _ELUFunction(torch.autograd.Function):
    """elu(x) = x for x > 0, exp(x) - 1 otherwise; its derivative is min(elu(x), 0) + 1."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        # exp(min(x, 0)) - 1 is 0 where x > 0 and above x elsewhere, so the max of the two is elu.
        out = x.clamp(max=0.0).exp_().sub_(1.0)
        torch.maximum(out, x, out=out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return out.clamp(max=0.0).add_(1.0).mul_(grad)


class ELU(nn.Module):
    """The exponential linear unit (alpha 1) through ``exp``: torch's own ELU uses ``expm1``,
    which is not vectorised on CPUs and made the activations cost more than the matrix
    products; exp(x) - 1 differs from it by under 1e-7, absolute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # the compiler writes its own fused kernel; and torch
            return nn.functional.elu(x)  # 2.11's drops the gradient of the in-place function
        return _ELUFunction.apply(x)


#: Hidden-layer activations by the name the ``activation`` option takes.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": ELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def activation_factory(name: str) -> Callable[[], nn.Module]:
    """The activation module class called ``name``; one line naming the choices otherwise."""
    try:
        return ACTIVATIONS[str(name).lower()]
    except KeyError:
        raise UsageError(f"option activation: unknown '{name}' (use {', '.join(ACTIVATIONS)})") from None


def _mlp(sizes: Sequence[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class PixelHead(nn.Module):
    """Decoder output for many parameters per pixel (e.g. 256 logits): ``features`` numbers
    per pixel, then one linear map to the parameters shared by all pixels, plus a bias per
    pixel and parameter. Keeps the last layer small where a dense one would need
    hidden x pixels x params weights."""

    def __init__(self, in_width: int, params_per_pixel: int, input_shape: Shape, features: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.features = features
        self.to_features = nn.Linear(in_width, math.prod(input_shape) * features)
        self.to_params = nn.Linear(features, params_per_pixel, bias=False)
        # Parameters last in memory: the add, its gradient and a softmax over them stay contiguous.
        self.bias = nn.Parameter(torch.zeros(*input_shape, params_per_pixel))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.to_features(h)).view(h.shape[0], *self.input_shape, self.features)
        logits = self.to_params(f)
        logits += self.bias  # in place: no second logits-sized tensor
        return logits.movedim(-1, 1)


def mlp(
    input_shape: Shape,
    latent_dim: int,
    params_per_pixel: int,
    hidden: str | Sequence[int] = (512, 256),
    pixel_features: str | int = 16,
    activation: str = "elu",
) -> tuple[nn.Module, nn.Module]:
    """Fully connected encoder and decoder; ``hidden`` lists the encoder's hidden widths (the
    decoder mirrors them), ``activation`` names the hidden layers' nonlinearity (ELU: on binarised
    MNIST it reaches a given -ELBO in about two thirds of ReLU's epochs). With more than two
    parameters per pixel the decoder ends in a :class:`PixelHead` of ``pixel_features`` features
    per pixel."""
    widths = list(int_list(hidden, "hidden"))
    act = activation_factory(activation)
    pixels = math.prod(input_shape)
    encoder = nn.Sequential(nn.Flatten(), _mlp([pixels, *widths, 2 * latent_dim], act))
    if params_per_pixel <= 2:
        decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(widths), params_per_pixel * pixels], act),
            nn.Unflatten(1, (params_per_pixel, *input_shape)),
        )
    else:
        features = as_int(pixel_features, "pixel_features", minimum=1)
        if features < 1:
            raise UsageError(f"option pixel_features must be at least 1, got {pixel_features}")
        decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(widths)], act),
            act(),
            PixelHead(widths[0], params_per_pixel, input_shape, features),
        )
    return encoder, decoder


class _Crop(nn.Module):
    """Cut a decoder's output to the image size and split parameters from channels."""

    def __init__(self, params_per_pixel: int, input_shape: Shape) -> None:
        super().__init__()
        self.params_per_pixel = params_per_pixel
        self.input_shape = input_shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        c, height, width = self.input_shape
        h = h[:, :, :height, :width]
        # (contiguous: a likelihood may .view() the parameters, which refuses channels-last ones)
        return h.reshape(h.shape[0], self.params_per_pixel, c, height, width).contiguous()


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), 3x3 convolutions keeping the channels and size;
    the second convolution starts at zero, so a new block is the identity and a deep stack trains
    from the first step as a shallow one does."""

    def __init__(self, channels: int, act: Callable[[], nn.Module], norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        last = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(
            norm(channels), act(), nn.Conv2d(channels, channels, 3, padding=1), norm(channels), act(), last
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(math.gcd(8, channels), channels)


#: Normalisation inside residual blocks, by the name the ``norm`` option takes. (No batch norm:
#: its statistics differ between training and evaluation, and so would a model's bound.)
NORMS: dict[str, Callable[[int], nn.Module]] = {"none": lambda channels: nn.Identity(), "group": _group_norm}


def conv(
    input_shape: Shape,
    latent_dim: int,
    params_per_pixel: int,
    channels: str | Sequence[int] = (32, 64),
    hidden: str | int = 256,
    activation: str = "elu",
    blocks: str | int = 0,
    norm: str = "none",
) -> tuple[nn.Module, nn.Module]:
    """Convolutional encoder (stride-2 convolutions) and a mirrored transposed-convolution
    decoder, for any image size; ``channels`` lists the widths of the stride-2 stages, ``blocks``
    the :class:`ResidualBlock` s after each (with ``norm`` inside them), and ``activation`` names
    the nonlinearity between layers."""
    widths = list(int_list(channels, "channels"))
    hidden_width = as_int(hidden, "hidden", minimum=1)
    per_stage = as_int(blocks, "blocks", minimum=0)
    act = activation_factory(activation)
    if str(norm) not in NORMS:
        raise UsageError(f"option norm: unknown '{norm}' (use {', '.join(NORMS)})")
    residual = lambda ch: [ResidualBlock(ch, act, NORMS[str(norm)]) for _ in range(per_stage)]  # noqa: E731
    c, height, width = input_shape
    h, w = height, width
    enc_layers: list[nn.Module] = []
    in_ch = c
    for out_ch in widths:
        enc_layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), act(), *residual(out_ch)]
        in_ch = out_ch
        h, w = (h + 1) // 2, (w + 1) // 2
    flat = widths[-1] * h * w
    encoder = nn.Sequential(
        *enc_layers,
        nn.Flatten(),
        nn.Linear(flat, hidden_width),
        act(),
        nn.Linear(hidden_width, 2 * latent_dim),
    )
    dec_layers: list[nn.Module] = [
        nn.Linear(latent_dim, hidden_width),
        act(),
        nn.Linear(hidden_width, flat),
        act(),
        nn.Unflatten(1, (widths[-1], h, w)),
    ]
    outs = [*reversed(widths[:-1]), params_per_pixel * c]
    in_ch = widths[-1]
    for i, out_ch in enumerate(outs):
        dec_layers += [*residual(in_ch), nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
        if i < len(outs) - 1:
            dec_layers.append(act())
        in_ch = out_ch
    dec_layers.append(_Crop(params_per_pixel, input_shape))
    return encoder, nn.Sequential(*dec_layers)
