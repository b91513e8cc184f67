"""The public contract for plugin packages: import from here, nothing else in vaecli.

A plugin distribution declares entry points in its ``pyproject.toml`` under six groups:

    [project.entry-points."vaecli.datasets"]       name = "pkg.module:dataset_factory"
    [project.entry-points."vaecli.architectures"]  name = "pkg.module:architecture_factory"
    [project.entry-points."vaecli.likelihoods"]    name = "pkg.module:LikelihoodClass"
    [project.entry-points."vaecli.priors"]         name = "pkg.module:PriorClass"
    [project.entry-points."vaecli.objectives"]     name = "pkg.module:ObjectiveClass"
    [project.entry-points."vaecli.callbacks"]      name = "pkg.module:CallbackClass"

vaecli's own built-ins are declared the same way. ``docs/plugins.md`` walks through a
complete example package (``plugins/vaecli-shapes``).

Options given on the command line (``--data-opt KEY=VALUE``, ``--arch-opt KEY=VALUE``,
``--likelihood-opt KEY=VALUE``, ``--prior-opt KEY=VALUE``, ``--objective-opt KEY=VALUE``,
``--callback-opt NAME.KEY=VALUE``)
reach the factories as keyword arguments and are stored in the model file or config.yaml. From
the command line they are strings; from config.yaml or a model file they are the YAML or JSON
value (an int, a bool, a list). Convert every option with :func:`as_int`, :func:`as_float`,
:func:`as_bool` or :func:`int_list`, which accept both, and raise :class:`UsageError` for a bad
value.

What every command asks of a model is :class:`LatentModel`: the ELBO's terms with the KL in
parts per latent group, the log importance weights for ``vae eval``, the code ``encode`` writes,
``decode``, and draws from the prior with a temperature. A prior (:class:`Prior`) gives log p(z),
draws, and a closed-form KL where one exists (the model uses the Monte-Carlo estimate log q(z|x) -
log p(z) otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn

from vaecli.datasets import SPLITS, ImageData
from vaecli.errors import UsageError, VaeError
from vaecli.likelihoods import LOG_256, Likelihood, dequantise
from vaecli.models import LatentModel, LatentVariableModel, ModelSpec, Terms
from vaecli.objectives import Objective, Progress
from vaecli.options import as_bool, as_float, as_int, int_list
from vaecli.priors import Prior
from vaecli.training.callbacks import Callback
from vaecli.training.run import TrainingRun

#: An image shape (channels, height, width).
Shape = tuple[int, int, int]

#: The splits a dataset factory is asked for.
DATASET_SPLITS = SPLITS


class DatasetFactory(Protocol):
    """``factory(root, split, **options) -> ImageData``.

    ``root`` is vaecli's data folder (``--data-dir``, else ``$VAECLI_DATA_DIR``, else
    ``~/.cache/vaecli/data``): keep downloads under ``root / NAME``. ``split`` is "train" or
    "test". Return every image of the split at once as an :class:`ImageData`: uint8 (N, C, H, W)
    with 0..255 values, or float (N, C, H, W) in [0, 1] (vaecli quantises it to 8 bits), and
    optional integer labels (N,). Both splits must have the same image shape.
    """

    def __call__(self, root: Path, split: str, **options: Any) -> ImageData: ...


class ArchitectureFactory(Protocol):
    """``factory(input_shape, latent_dim, params_per_pixel, **options) -> (encoder, decoder)``.

    The encoder maps prepared images (B, C, H, W) to (B, 2 * latent_dim): mu, then the
    log-variance of q(z|x). The decoder maps z (B, latent_dim) to the likelihood's parameters
    (B, params_per_pixel, C, H, W). vaecli checks both shapes when it builds a model and names
    the plugin if they are wrong.
    """

    def __call__(
        self, input_shape: Shape, latent_dim: int, params_per_pixel: int, **options: Any
    ) -> tuple[nn.Module, nn.Module]: ...


__all__ = [
    "DATASET_SPLITS",
    "LOG_256",
    "ArchitectureFactory",
    "Callback",
    "DatasetFactory",
    "ImageData",
    "LatentModel",
    "LatentVariableModel",
    "Likelihood",
    "ModelSpec",
    "Objective",
    "Prior",
    "Progress",
    "Shape",
    "Terms",
    "TrainingRun",
    "UsageError",
    "VaeError",
    "as_bool",
    "as_float",
    "as_int",
    "dequantise",
    "int_list",
]
