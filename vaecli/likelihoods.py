"""Decoder distributions p(x|z): log-probabilities in nats per image, means and draws.

A likelihood says how many parameters the decoder outputs per pixel, how 8-bit images are
prepared for it, and how to score, summarise and sample images from those parameters. The
training loop, ``sample`` and ``eval`` only call these methods; they never ask for a name.

Decoder parameters have the shape (batch, params_per_pixel, channels, height, width) and
prepared images the shape (batch, channels, height, width) with values in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.errors import UsageError
from vaecli.mappedfiles import drop_pages
from vaecli.options import as_float, as_int


class Likelihood(nn.Module):
    """Base class of decoder distributions; subclasses are registered by entry point."""

    name: ClassVar[str] = "likelihood"
    modes: ClassVar[tuple[str, ...]] = ("mean", "sample")
    #: True when the prepared data stand for 8-bit pixels, so bits/dim compare across models.
    reports_bits_per_dim: ClassVar[bool] = False

    params_per_pixel: int = 1

    def __init__(self) -> None:  # subclasses name their options as keyword arguments
        super().__init__()

    def options(self) -> dict[str, Any]:
        """The options that rebuild this likelihood (stored in the model file)."""
        return {}

    def preprocessing(self) -> dict[str, Any]:
        """A description of what ``prepare`` does to 8-bit images (stored in the model file)."""
        raise NotImplementedError

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Turn uint8 images (B, C, H, W) into the float data this likelihood models."""
        raise NotImplementedError

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """What ``vae encode`` feeds the encoder for uint8 images (B, C, H, W): the expected value
        of ``prepare``, so an image always gets the same code. The default is ``prepare`` itself,
        right when it draws no noise; likelihoods whose ``prepare`` is random override this."""
        return self.prepare(images)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) in nats, summed over pixels: shape (batch,)."""
        raise NotImplementedError

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor | None:
        """The decoder parameters (params_per_pixel, C, H, W) that fit uint8 ``images`` (N, C, H, W,
        on the CPU) best while ignoring z: the maximum-likelihood fit to the prepared data, per pixel (or
        pooled over pixels where one pixel's own would overfit, as gaussian's sigma). Training
        starts the decoder's output there (``VAE.output_offset``). None, the default: from zero."""
        return None

    def fit_own_parameters(self, images: torch.Tensor) -> None:
        """Set this likelihood's own learned parameters (not the decoder's), if it has any, to
        their maximum-likelihood fit to uint8 ``images`` (N, C, H, W, on the CPU) under
        :meth:`constant_fit`'s decoder output: where training starts them (gaussian's
        ``sigma=learned``). The default does nothing."""

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params], an image in [0, 1]."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x | params), an image in [0, 1]."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        """Fail with one line unless ``mode`` is one of this likelihood's ``modes``."""
        if mode not in self.modes:
            raise UsageError(
                f"likelihood '{self.name}' has no mode '{mode}' (it has: {', '.join(self.modes)})"
            )

    def image(
        self, params: torch.Tensor, mode: str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The picture of ``params`` in one of ``modes``: an image in [0, 1]."""
        self.check_mode(mode)
        if mode == "sample":
            return self.sample(params, generator)
        return getattr(self, mode)(params)


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


DATASET_CHUNK_BYTES = 64 << 20  # 8-byte numbers per chunk when summing over a whole dataset


def dataset_chunks(
    images: torch.Tensor, bytes_per_value: int = 8, max_images: int | None = None
) -> Iterator[torch.Tensor]:
    """``images`` in runs of whole images whose copies at ``bytes_per_value`` fit
    ``DATASET_CHUNK_BYTES`` (and at most ``max_images`` of them); the pages of a memory-mapped
    dataset cache are handed back after each run, so one pass over a set larger than memory
    leaves the resident memory flat."""
    per_image = max(bytes_per_value * images[0].numel(), 1)
    size = max(1, DATASET_CHUNK_BYTES // per_image)
    for chunk in images.split(min(size, max_images or size)):
        yield chunk
        drop_pages(chunk)


#: A float32 sum of this many squared 8-bit values (each at most 255^2) stays below 2^24, where
#: every integer is exact: a chunk's sums are exact integers, and their float64 totals too.
EXACT_FLOAT32_IMAGES = 2**24 // 255**2


def pixel_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's mean and variance over uint8 ``images`` (N, C, H, W), in float64 (so on the
    CPU or CUDA, not MPS); summed exactly in float32 chunks (a quarter of the time of float64
    ones), so no float copy of the whole dataset is made."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for chunk in dataset_chunks(images, 4, EXACT_FLOAT32_IMAGES):
        values = chunk.float()
        total += values.sum(0)
        squares += values.square_().sum(0)
    n = max(images.shape[0], 1)
    mean = total / n
    return mean, (squares / n - mean.square()).clamp_(min=0.0)


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


LOG_256 = math.log(256.0)


def dequantise(
    images: torch.Tensor, generator: torch.Generator | None = None, open_interval: bool = False
) -> torch.Tensor:
    """8-bit pixels to float32 (x + u) / 256 with u ~ U[0, 1): a density on [0, 1] whose log,
    less D log 256, is a lower bound on the discrete 8-bit log-likelihood. Both ends occur: 0
    where x = 0 and u = 0, 1 where float32 rounds 255 + u up to 256. ``open_interval`` moves
    those few values just inside (0, 1), for a likelihood that cannot take 0 or 1 (a Beta, a
    logit transform); every other value is the same draw."""
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    x = (images.float() + noise).div_(256.0)
    return x.clamp_(OPEN_MIN, OPEN_MAX) if open_interval else x


OPEN_MIN, OPEN_MAX = 2.0**-32, 1.0 - 2.0**-24  # the smallest nonzero draw; the largest float32 below 1


class Gaussian(Likelihood):
    """Continuous pixels: N(mean, sigma^2) on uniformly dequantised 8-bit data.

    ``sigma`` is a fixed number, ``learned`` (one value for all pixels) or ``pixel`` (the
    decoder outputs a log-scale per pixel). Learned log-scales are bounded below by
    ``LOG_SIGMA_MIN`` so a density can never collapse onto a point. ``log_prob`` includes
    every constant and the -D log 256 of the dequantisation, so it is in nats of 8-bit images
    and its bits/dim compare with the categorical decoder's.
    """

    name = "gaussian"
    reports_bits_per_dim = True
    LOG_SIGMA_MIN = -7.0  # sigma >= 0.0009, a quarter of one 8-bit level

    def __init__(self, sigma: str | float = "pixel") -> None:
        super().__init__()
        self.sigma_option: str | float = sigma
        self.fixed_log_sigma: float | None = None
        if str(sigma) not in ("learned", "pixel"):
            value = as_float(sigma, "sigma")
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"option sigma must be positive, 'learned' or 'pixel', got '{sigma}'")
            self.fixed_log_sigma = math.log(value)
        self.params_per_pixel = 2 if str(sigma) == "pixel" else 1
        self.raw_log_sigma = nn.Parameter(torch.zeros(())) if str(sigma) == "learned" else None

    def options(self) -> dict[str, Any]:
        return {"sigma": self.sigma_option}

    def preprocessing(self) -> dict[str, Any]:
        return {"dequantise": "(pixel + u) / 256, u ~ U[0, 1)", "value_range": [0, 1]}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dequantise(images, generator)

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().add_(0.5).div_(256.0)  # E[(pixel + u) / 256], u ~ U[0, 1)

    def log_sigma(self, params: torch.Tensor) -> torch.Tensor:
        """log sigma, broadcastable against the means params[:, 0]."""
        if self.fixed_log_sigma is not None:
            return params.new_full((), self.fixed_log_sigma)
        raw = self.raw_log_sigma if self.raw_log_sigma is not None else params[:, 1]
        return self.LOG_SIGMA_MIN + F.softplus(raw - self.LOG_SIGMA_MIN)

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor:
        # The dequantised pixel (v + u) / 256 has mean (E v + 1/2) / 256 and variance
        # (Var v + 1/12) / 256^2. A per-pixel sigma starts at the pixels' pooled standard
        # deviation, not each pixel's own: a pixel that is constant in the training images would
        # get a sigma at the floor, and an image that differs there a loss of 10^5 nats.
        mean, variance = pixel_moments(images)
        params = [(mean + 0.5) / 256]
        if self.params_per_pixel == 2:
            params.append(torch.full_like(mean, self._pooled_raw_log_sigma(variance)))
        return torch.stack(params).float()

    def fit_own_parameters(self, images: torch.Tensor) -> None:
        # A learned sigma, one for all pixels, starts where sigma=pixel does: the pooled fit.
        if self.raw_log_sigma is not None:
            with torch.no_grad():
                self.raw_log_sigma.fill_(self._pooled_raw_log_sigma(pixel_moments(images)[1]))

    def _pooled_raw_log_sigma(self, variance: torch.Tensor) -> float:
        """The raw log-scale whose :meth:`log_sigma` is the dequantised pixels' pooled standard
        deviation, from the 8-bit pixels' variances: (mean of Var v + 1/12) / 256^2 is the
        maximum-likelihood sigma^2 of one Gaussian per pixel about each pixel's mean."""
        log_sigma = 0.5 * math.log((variance.mean().item() + 1 / 12) / 256**2)
        return self.LOG_SIGMA_MIN + math.log(math.expm1(log_sigma - self.LOG_SIGMA_MIN))  # softplus inverted

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean, log_sigma = params[:, 0], self.log_sigma(params)
        log_density = (
            -0.5 * ((x - mean) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        )
        log_density = log_density.expand_as(x).flatten(1).sum(1)
        return log_density - x[0].numel() * LOG_256

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params[:, 0].clamp(0, 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = params[:, 0]
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + eps * torch.exp(self.log_sigma(params))).clamp(0, 1)


CROSS_ENTROPY_CHUNK_BYTES = 4 << 20  # a chunk of logits that stays in the CPU's cache


class ChunkedCrossEntropy(torch.autograd.Function):
    """-log softmax(logits)[target] per row of a (N, K) matrix, computed in cache-sized chunks.

    ``F.cross_entropy`` writes a full log-softmax, and its backward a zero-filled full gradient
    before the softmax gradient: with K = 256 logits per pixel these are the largest tensors of
    a training step. Here the forward keeps only one logsumexp per row, and the backward
    recomputes softmax - onehot chunk by chunk straight into the one gradient tensor.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.contiguous()
        rows = max(1, CROSS_ENTROPY_CHUNK_BYTES // (logits.shape[1] * logits.element_size()))
        lse = torch.cat([torch.logsumexp(chunk, dim=1) for chunk in logits.split(rows)])
        ctx.save_for_backward(logits, target, lse)
        ctx.rows = rows
        return lse - logits.gather(1, target.unsqueeze(1)).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad_nll: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, target, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.rows):
            rows = slice(start, start + ctx.rows)
            chunk = torch.sub(logits[rows], lse[rows, None], out=grad[rows]).exp_()  # the softmax
            chunk.scatter_add_(1, target[rows, None], chunk.new_full((chunk.shape[0], 1), -1.0))
            chunk.mul_(grad_nll[rows, None])
        return grad, None


class Categorical(Likelihood):
    """A K-way softmax per pixel and channel over the grey levels (K = ``bins``, 2 to 256).

    8-bit pixels are quantised to K levels (level = pixel * K // 256, shown as level / (K-1));
    ``log_prob`` is exact in nats of the K-level images, so with K = 256 it is the discrete
    8-bit log-likelihood.
    """

    name = "categorical"
    modes = ("mean", "mode", "sample")
    reports_bits_per_dim = True

    def __init__(self, bins: str | int = 256) -> None:
        super().__init__()
        self.bins = as_int(bins, "bins")
        if not 2 <= self.bins <= 256:
            raise UsageError(f"option bins must be from 2 to 256 (grey levels of 8-bit data), got {bins}")
        self.params_per_pixel = self.bins

    def options(self) -> dict[str, Any]:
        return {"bins": self.bins}

    def preprocessing(self) -> dict[str, Any]:
        return {"quantise": f"level = pixel * {self.bins} // 256", "value_range": [0, 1]}

    def prepare(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        levels = torch.div(images.long() * self.bins, 256, rounding_mode="floor")
        return levels.float().div_(self.bins - 1)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (self.bins - 1)).round_().long()

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Classes last, as rows of one 2-D matrix: free when the decoder already lays its logits
        # out that way (PixelHead does).
        logits = params.movedim(1, -1).reshape(-1, self.bins)
        nll = ChunkedCrossEntropy.apply(logits, self.levels(x).reshape(-1))
        return -nll.view(x.shape[0], -1).sum(1)

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor:
        # The log of each pixel's level frequencies, with half an image added at every level.
        pixels = images[0].numel()
        counts = torch.zeros(pixels * self.bins, dtype=torch.float64, device=images.device)
        first_bin = torch.arange(pixels, device=images.device) * self.bins
        for chunk in dataset_chunks(images):
            levels = torch.div(chunk.flatten(1).long() * self.bins, 256, rounding_mode="floor")
            counts += torch.bincount((levels + first_bin).flatten(), minlength=counts.numel())
        log_freq = (counts + 0.5).log_() - math.log(images.shape[0] + 0.5 * self.bins)
        return log_freq.view(*images.shape[1:], self.bins).movedim(-1, 0).float()

    def _values(self, params: torch.Tensor) -> torch.Tensor:
        shape = (1, self.bins) + (1,) * (params.dim() - 2)
        return torch.linspace(0, 1, self.bins, device=params.device, dtype=params.dtype).view(shape)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(params, dim=1) * self._values(params)).sum(1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return params.argmax(dim=1).float().div_(self.bins - 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from the softmax.
        u = torch.rand(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
        return (params + gumbel).argmax(dim=1).float().div_(self.bins - 1)
