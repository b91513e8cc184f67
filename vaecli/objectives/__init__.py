"""Training objectives: how the model's terms (:class:`vaecli.models.Terms`) become the loss.

    base.py   Objective, the contract (also in vaecli.plugin), Progress, build_objective
    elbo.py   elbo: the ELBO with a KL weight beta, KL warm-up and free bits
    iwae.py   iwae: the importance-weighted bound with k samples, optionally with DReG gradients

Each is registered under the entry-point group ``vaecli.objectives``, vaecli's own exactly as a
plugin's. Whatever the objective, training also reports the true ELBO (beta = 1, no free bits).
"""

from vaecli.objectives.base import Objective, Progress, build_objective
from vaecli.objectives.elbo import ElboObjective
from vaecli.objectives.iwae import IwaeObjective

__all__ = ["ElboObjective", "IwaeObjective", "Objective", "Progress", "build_objective"]
