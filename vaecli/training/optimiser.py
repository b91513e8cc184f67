"""The optimiser: torch's Adam, fused where this torch and device have it, with AdamW's
decoupled weight decay on the layers' weights when ``--weight-decay`` asks for it.

torch.optim wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` in
``torch._disable_dynamo`` and ``step`` in a guard that calls ``torch._dynamo.graph_break()``,
so the first of them imports torch._dynamo: 2 s of the 4 s a cached ``vae train`` takes to its
first step on a CPU, in a run that never compiles. :class:`EagerAdam` calls the same methods
unwrapped (``__wrapped__``, set by functools.wraps), with the step's grad mode as torch sets it;
the numbers and the state dict are torch's own. A compiled run keeps torch's Adam, whose
wrappers keep dynamo out of the optimiser.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


def unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` without its decorators (itself where torch has none)."""
    while hasattr(method, "__wrapped__"):
        method = method.__wrapped__
    return method


class EagerAdam(torch.optim.Adam):
    """torch.optim.Adam without the first-call import of torch._dynamo (see the module's text)."""

    add_param_group = unwrapped(torch.optim.Optimizer.add_param_group)
    zero_grad = unwrapped(torch.optim.Optimizer.zero_grad)
    state_dict = unwrapped(torch.optim.Optimizer.state_dict)
    load_state_dict = unwrapped(torch.optim.Optimizer.load_state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return ADAM_STEP(self, closure)


ADAM_STEP = unwrapped(torch.optim.Adam.step)


#: The layers whose ``weight`` --weight-decay shrinks: the matrices and kernels that scale a
#: network's features. Biases, norms' gains, a hierarchy's start state and a prior's own
#: parameters (pseudo-inputs, component means) are places, not scales: decay would pull them
#: towards 0 (a VampPrior's pseudo-inputs towards a black image), so they are left alone.
DECAYED_LAYERS = (torch.nn.Linear, torch.nn.Bilinear, torch.nn.modules.conv._ConvNd)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The optimiser's groups: one of every parameter without decay; with ``weight_decay`` the
    weights of :data:`DECAYED_LAYERS` outside the prior first, decayed, then the rest."""
    parameters = list(model.parameters())
    if not weight_decay:
        return [{"params": parameters}]
    prior = getattr(model, "prior", None)
    in_prior = {id(p) for p in prior.parameters()} if isinstance(prior, torch.nn.Module) else set()
    decayed = {
        id(module.weight): module.weight
        for module in model.modules()
        if isinstance(module, DECAYED_LAYERS) and id(module.weight) not in in_prior
    }
    if not decayed:
        warnings.warn(
            f"--weight-decay {weight_decay} decays nothing: the model has no linear or convolutional "
            "layer outside its prior",
            stacklevel=3,
        )
    rest = [p for p in parameters if id(p) not in decayed]
    return [
        {"params": list(decayed.values()), "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: torch.nn.Module, lr: float, compiled: bool, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """Adam (AdamW's decoupled decay ``weight_decay`` on :func:`parameter_groups`' first group)
    with fused kernels where this torch and device have them; torch's own class for a compiled
    run (``compiled``), :class:`EagerAdam` otherwise."""
    kind = torch.optim.Adam if compiled else EagerAdam
    groups = parameter_groups(model, weight_decay)
    # (only with a decay: a run without one keeps exactly the step it had, torch's fused Adam)
    decoupled = {"decoupled_weight_decay": True} if weight_decay else {}
    try:
        return kind(groups, lr=lr, fused=True, **decoupled)
    except (RuntimeError, TypeError):
        return kind(groups, lr=lr, **decoupled)
