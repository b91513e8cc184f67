"""Priors p(z): registered parts (``--prior NAME``, ``--prior-opt KEY=VALUE``).

base.py      the contract: log p(z), draws with a temperature, a closed-form KL where one exists
normal.py    ``normal``: N(0, I), the default, with the closed-form KL
mixture.py   ``mog``: a learned mixture of K diagonal Gaussians; the mixture maths shared with vamp
vamp.py      ``vamp``: the VampPrior, a mixture of the encoder's posteriors of K learned pseudo-inputs
"""

from vaecli.priors.base import Prior, build_prior

__all__ = ["Prior", "build_prior"]
