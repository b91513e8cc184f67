"""The objective contract: per-image losses from the model's terms, and how one is built."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaecli import registry
from vaecli.errors import VaeError

if TYPE_CHECKING:
    from vaecli.models import LatentVariableModel, Terms


@dataclass(frozen=True)
class Progress:
    """Where training stands when a step's loss is taken: ``epochs_done`` whole and fractional
    epochs before this step (0.0 at the first step, 1.5 half-way through the second epoch) of
    ``epochs``. A schedule read from it is stepwise and resumes exactly."""

    epochs_done: float
    epochs: int


class Objective:
    """Base class of training objectives; subclasses are registered by entry point.

    Options are keyword arguments of ``__init__`` (strings from the command line, values from a
    config file); return them from :meth:`options`. The training loop asks the model for
    :attr:`samples` draws of z per image (and for the log importance weights when
    :attr:`weights` is set, prepared for DReG when :attr:`dreg` is), then calls :meth:`loss`.
    """

    name = "objective"
    #: Draws z_s ~ q(z|x) per image that :meth:`loss` needs (the columns of Terms).
    samples: int = 1
    #: Whether :meth:`loss` needs Terms.log_weight.
    weights: bool = False
    #: Whether the log weights are prepared for the DReG gradient estimator.
    dreg: bool = False

    def options(self) -> dict[str, Any]:
        """The options this objective was made with (recorded in config.yaml and the model file)."""
        return {}

    def loss(self, terms: Terms, progress: Progress) -> torch.Tensor:
        """The loss to minimise for each image, shape (B,), in nats; training minimises its mean."""
        raise NotImplementedError

    def test_metrics(self, model: LatentVariableModel, x: torch.Tensor) -> dict[str, float]:
        """Numbers of this objective's own on the prepared test images ``x`` (keys without the
        ``test_`` prefix), added to each epoch's row; none by default."""
        return {}


#: Each built objective's ``objective 'NAME' (DIST VERSION)``, for messages about it.
DESCRIPTIONS: weakref.WeakKeyDictionary[Objective, str] = weakref.WeakKeyDictionary()


def build_objective(name: str, options: dict[str, Any]) -> Objective:
    """The registered objective ``name`` made with ``options``."""
    objective, what = registry.objectives.build(name, options)
    if not (isinstance(objective.samples, int) and objective.samples >= 1):
        raise VaeError(f"{what}: samples must be a whole number of at least 1, got {objective.samples!r}")
    DESCRIPTIONS[objective] = what
    return objective


def describe(objective: Objective) -> str:
    """What messages call ``objective``: its registered name and package where it was built."""
    return DESCRIPTIONS.get(objective, f"objective '{objective.name}'")
