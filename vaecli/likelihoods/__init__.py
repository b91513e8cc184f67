"""Decoder distributions p(x|z): registered parts (``--likelihood NAME``, ``--likelihood-opt KEY=VALUE``).

base.py         the contract: parameters per pixel, preparing 8-bit images, log p(x|params) in
                nats, means and draws; the per-pixel statistics the constant fits start from
bernoulli.py    ``bernoulli``: binary pixels, binarised afresh on every use
gaussian.py     ``gaussian``: continuous pixels on dequantised 8-bit data
categorical.py  ``categorical``: a softmax over K grey levels per pixel and channel
pixelcnn.py     ``pixelcnn``: binary pixels, each given z and the pixels drawn before it
"""

from vaecli.likelihoods.base import Likelihood, dataset_chunks, pixel_moments
from vaecli.likelihoods.bernoulli import Bernoulli, BernoulliLogProb, uniform_bytes_below_255
from vaecli.likelihoods.categorical import Categorical, ChunkedCrossEntropy
from vaecli.likelihoods.gaussian import LOG_256, OPEN_MAX, OPEN_MIN, Gaussian, dequantise
from vaecli.likelihoods.pixelcnn import PixelCNN

__all__ = [
    "LOG_256", "OPEN_MAX", "OPEN_MIN", "Bernoulli", "BernoulliLogProb", "Categorical",
    "ChunkedCrossEntropy", "Gaussian", "Likelihood", "PixelCNN", "dataset_chunks", "dequantise",
    "pixel_moments", "uniform_bytes_below_255",
]  # fmt: skip
