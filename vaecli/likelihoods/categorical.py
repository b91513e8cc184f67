"""``categorical``: a softmax over the grey levels of every pixel and channel."""

from __future__ import annotations

import math
from typing import Any

import torch

from vaecli.errors import UsageError
from vaecli.likelihoods.base import Likelihood, dataset_chunks
from vaecli.options import as_int

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
