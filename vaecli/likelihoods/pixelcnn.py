"""An autoregressive decoder for binary pixels: each pixel given z and the pixels before it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vaecli.architectures import ELU
from vaecli.errors import UsageError
from vaecli.likelihoods.base import draws_per_image
from vaecli.likelihoods.bernoulli import Bernoulli, BernoulliLogProb
from vaecli.options import as_int

#: Ancestral draws averaged by :meth:`PixelCNN.mean`, for this many images at a time.
MEAN_DRAWS, MEAN_CHUNK = 16, 256
#: The widest window: at 63 it holds every earlier pixel of a 32x32 image; wider ones only cost.
MAX_KERNEL = 63
#: Scoring on a CPU without gradients goes through this many bytes of per-pixel activations at a
#: time: pieces that stay in the cache made eval's scoring 3-4x faster than one pass over a chunk of
#: a thousand samples, whose every elementwise layer streamed through memory.
SCORE_CHUNK_BYTES = 2 * 2**20


class PixelCNN(Bernoulli):
    """Binary pixels, each Bernoulli given z and the pixels above it and to its left (raster
    order) within a ``kernel`` x ``kernel`` window: p(x|z) = prod_i p(x_i | x_<i, z).

    The decoder gives ``features`` numbers per pixel; a masked layer reads the window of earlier
    pixels (PixelCNN's first, masked convolution), ``layers`` 1x1 layers of ``width`` channels
    mix it with the features, and the result is added to the first feature, the logit of a plain
    Bernoulli decoder (where training starts: the last layer starts at zero). The channels of one
    pixel are independent given the earlier pixels and z, each read through its own window (the
    same weights for every channel). Scoring an image is one parallel pass; drawing one takes a
    pass per pixel position, on the window alone.
    """

    name = "pixelcnn"
    sequential = True

    def __init__(
        self, kernel: str | int = 7, width: str | int = 16, layers: str | int = 0, features: str | int = 2
    ) -> None:
        super().__init__()
        self.kernel = as_int(kernel, "kernel")
        if not (3 <= self.kernel <= MAX_KERNEL and self.kernel % 2 == 1):
            raise UsageError(f"option kernel must be an odd number from 3 to {MAX_KERNEL}, got {kernel}")
        self.width = as_int(width, "width", minimum=1)
        self.layers = as_int(layers, "layers", minimum=0)
        self.features = as_int(features, "features", minimum=1)
        self.params_per_pixel = self.features
        self.window = CausalWindow(self.kernel, self.width)
        self.from_features = nn.Linear(self.features, self.width, bias=False)
        self.mixing = nn.ModuleList(nn.Linear(self.width, self.width) for _ in range(self.layers))
        self.activation = ELU()
        self.output = nn.Linear(self.width, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def options(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "width": self.width, "layers": self.layers, "features": self.features}

    def logits(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The logit of every pixel given the pixels before it: (B, C, H, W), in one pass."""
        return self._logits(self._windows(x), params)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """Each pixel's window of earlier pixels through the masked layer: (B, C, H, W, width)."""
        b, c, height, width = x.shape
        return self.window(x.reshape(b * c, height, width)).view(b, c, height, width, self.width)

    def _logits(self, windows: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) from N images' windows (N, C, H, W, width) and decoder params.

        Pixels are rows of ``width`` numbers (channels last), so every layer after the window is
        one matrix product over all pixels: a quarter of the time of 1x1 convolutions here."""
        n, c, height, width = windows.shape[:4]
        features = params.reshape(n, self.features, c, height, width).permute(0, 2, 3, 4, 1)
        h = self._mix(windows + self.from_features(features))
        return features[..., 0] + self.output(h).squeeze(-1)

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        h = self.activation(h)
        for layer in self.mixing:
            h = self.activation(layer(h))
        return h

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.log_prob_draws(x, params)

    def log_prob_draws(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The window of an image's earlier pixels depends on x alone, so it is read once per
        image, not once per draw (a fifth of eval's time with a thousand draws an image). On a
        CPU without gradients the draws are scored in pieces of ``SCORE_CHUNK_BYTES``."""
        n, draws = params.shape[0], draws_per_image(x, params)
        windows = self._windows(x)
        rows = n
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            rows = max(1, SCORE_CHUNK_BYTES // (4 * self.width * math.prod(x.shape[1:])))
        scores = []
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            piece_x, piece_windows = (repeated_rows(t, start, stop, draws) for t in (x, windows))
            logits = self._logits(piece_windows, params[start:stop])
            scores.append(BernoulliLogProb.apply(logits, piece_x))
        return scores[0] if len(scores) == 1 else torch.cat(scores)

    def constant_fit(self, images: torch.Tensor) -> torch.Tensor:
        # Bernoulli's fit as the first feature, the others at zero: the plain decoder's start.
        fit = super().constant_fit(images)
        return torch.cat([fit, fit.new_zeros(self.features - 1, *fit.shape[1:])])

    @torch.no_grad()
    def draw(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An ancestral draw x ~ p(x|params), pixel by pixel in raster order, and each pixel's
        probability of a one given the pixels drawn before it: both (B, C, H, W)."""
        b, _, c, height, width = params.shape
        k, half, taps = self.kernel, self.kernel // 2, self.window.taps
        features = params.permute(0, 2, 3, 4, 1).reshape(b * c, height, width, self.features)
        canvas = params.new_zeros(b * c, height + half, width + 2 * half)  # zero padding above and beside
        probs = params.new_empty(b * c, height, width)
        for i in range(height):
            for j in range(width):
                window = canvas[:, i : i + half + 1, j : j + k].reshape(b * c, -1)[:, :taps]
                h = self._mix(self.window.at(window) + self.from_features(features[:, i, j]))
                p = torch.sigmoid(features[:, i, j, 0] + self.output(h).squeeze(-1))
                probs[:, i, j] = p
                u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                canvas[:, i + half, j + half] = (u < p).to(canvas.dtype)
        x = canvas[:, half:, half : half + width]
        return x.reshape(b, c, height, width), probs.view(b, c, height, width)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.draw(params, generator)[0]

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|params], estimated: each pixel's probability averaged over ``MEAN_DRAWS`` ancestral
        draws (the mean of p(x_i = 1 | x_<i) over draws of x_<i is p(x_i = 1)), from a fixed seed,
        so the same codes give the same pictures; ``MEAN_CHUNK`` images at a time."""
        generator = torch.Generator(params.device).manual_seed(0)
        means = []
        for chunk in params.split(MEAN_CHUNK):
            probs = self.draw(chunk.repeat_interleave(MEAN_DRAWS, dim=0), generator)[1]
            means.append(probs.view(chunk.shape[0], MEAN_DRAWS, *probs.shape[1:]).mean(1))
        return torch.cat(means)


def repeated_rows(t: torch.Tensor, start: int, stop: int, draws: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``t`` with each of its rows repeated ``draws`` times, copied only
    where the repeats need it (and, for all of them, by an expand whose gradient is a sum)."""
    if draws == 1:
        return t[start:stop]
    if start == 0 and stop == t.shape[0] * draws:
        return t.unsqueeze(1).expand(-1, draws, *t.shape[1:]).reshape(-1, *t.shape[1:])
    return t[torch.arange(start, stop, device=t.device) // draws]


class CausalWindow(nn.Conv2d):
    """A convolution of one plane whose window at a pixel sees only the pixels before it in raster
    order: the rows above and, on its own row, the pixels to its left (PixelCNN's mask A). Those
    are the first ``taps`` numbers of the window's rows read in raster order."""

    def __init__(self, kernel: int, width: int) -> None:
        super().__init__(1, width, kernel, padding=kernel // 2)
        self.taps = kernel // 2 * (kernel + 1)
        mask = torch.zeros(kernel * kernel)
        mask[: self.taps] = 1.0
        self.register_buffer("mask", mask.view(1, 1, kernel, kernel), persistent=False)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """(N, H, W) planes to each pixel's ``width`` numbers, channels last: (N, H, W, width).
        (A masked convolution: in this layout's matrix product the copies of every pixel's window
        took three times as long.)"""
        weight = self.weight * self.mask
        out = torch.nn.functional.conv2d(
            planes.unsqueeze(1).to(weight.dtype), weight, self.bias, padding=self.padding
        )
        return out.permute(0, 2, 3, 1)

    def at(self, windows: torch.Tensor) -> torch.Tensor:
        """The same for one pixel of each plane, from its window's first ``taps`` numbers (N, taps)."""
        live = self.weight.view(self.out_channels, -1)[:, : self.taps]
        return torch.nn.functional.linear(windows, live, self.bias)
