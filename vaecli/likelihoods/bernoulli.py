"""``bernoulli``: binary pixels, binarised afresh from 8-bit images on every use."""

from __future__ import annotations

import math
from typing import Any

import torch

from vaecli.likelihoods.base import Likelihood, pixel_moments


class Bernoulli(Likelihood):
    """Binary pixels with probability sigmoid(logit); images binarised afresh on every use."""

    name = "bernoulli"

    def preprocessing(self) -> dict[str, Any]:
        return {"binarise": "bernoulli(pixel / 255)", "value_range": [0, 1]}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Exactly bernoulli(pixel / 255): with U uniform on {0, ..., 254}, P(U < v) = v / 255.
        u = uniform_bytes_below_255(images.shape, generator, images.device)
        if torch.compiler.is_compiling():  # (fused there; torch 2.11's compiler cannot view bool as uint8)
            return (u < images).float()
        return (u < images).view(torch.uint8).float()  # via uint8: bool -> float is a slow CPU cast

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255.0)  # E[bernoulli(pixel / 255)]

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return BernoulliLogProb.apply(params.reshape(x.shape), x)  # a view: no select's backward copy

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor:
        # The logit of each pixel's rate of ones, E[pixel / 255], with half a one and half a zero
        # added (Jeffreys): a pixel that is always 0 in the data gets a finite logit.
        n = images.shape[0]
        p = (pixel_moments(images)[0] / 255 * n + 0.5) / (n + 1)
        return torch.logit(p).float().unsqueeze(0)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[:, 0])

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)


def uniform_bytes_below_255(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    wait_free: bool | None = None,
) -> torch.Tensor:
    """uint8 values uniform on {0, ..., 254}, independent. The bytes of 32-bit random words, with
    each 255 (one in 256) drawn again by ``randint``: exact, and two to three times faster than
    ``randint`` for every value or ``torch.bernoulli``, which draw 32 random bits per value.
    (64-bit words would be faster still on CPUs, but MPS cannot draw them.)

    On a CPU only the 255s are drawn again. On a GPU (``wait_free``, the default off CPUs and
    inside a compiled graph) finding them would make the host wait for the device (how many are
    there?), and a graph cannot hold a shape that depends on the data, so a second byte is drawn
    for every value and taken where the first is 255: P(k) = 1/256 + 1/256 * 1/255 = 1/255, just
    as exact."""
    n = math.prod(shape)
    words = torch.randint(
        -(2**31), 2**31, ((n + 3) // 4,), dtype=torch.int32, generator=generator, device=device
    )
    u = words.view(torch.uint8)[:n]
    # Against a tensor, not the number 255: a scalar comparison takes a slow CPU path (100 us
    # against 8 per 300k values), as does nonzero on a bool tensor (hence the uint8 view).
    is_255 = torch.eq(u, torch.full_like(u, 255))
    if wait_free if wait_free is not None else device.type != "cpu" or torch.compiler.is_compiling():
        again = torch.randint(0, 255, u.shape, dtype=torch.uint8, generator=generator, device=device)
        return torch.where(is_255, again, u).view(shape)
    rejected = is_255.view(torch.uint8).nonzero().squeeze(1)
    u[rejected] = torch.randint(0, 255, rejected.shape, dtype=torch.uint8, generator=generator, device=device)
    return u.view(shape)


class BernoulliLogProb(torch.autograd.Function):
    """log Bernoulli(x; sigmoid(logits)) summed over each image's pixels, from logits (stable for
    any logit), with the gradient x - sigmoid(logits).

    log p = x * l - softplus(l), softplus(l) = max(l, 0) + log(1 + exp(-|l|)). torch's
    ``binary_cross_entropy_with_logits`` computes the same with ``log1p``, which is not vectorised
    on CPUs and made it a tenth of a training step; ``log`` of 1 + exp(-|l|) in (1, 2] has an
    absolute error under 1e-7 nats per pixel, and absolute error is what a sum in nats sees.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float16 logits: fp32 maths
        ctx.save_for_backward(logits, x)
        flat, target = logits.flatten(1), x.flatten(1)
        softplus = flat.abs().neg_().exp_().add_(1.0).log_().add_(flat.clamp(min=0.0))
        return (target * flat).sub_(softplus).sum(1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, x = ctx.saved_tensors
        per_image = grad.view(-1, *[1] * (logits.dim() - 1))
        grad_logits = (x - torch.sigmoid(logits)).mul_(per_image) if ctx.needs_input_grad[0] else None
        grad_x = logits * per_image if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x
