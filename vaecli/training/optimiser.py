"""The optimiser: torch's Adam, fused where this torch and device have it.

torch.optim wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` in
``torch._disable_dynamo`` and ``step`` in a guard that calls ``torch._dynamo.graph_break()``,
so the first of them imports torch._dynamo: 2 s of the 4 s a cached ``vae train`` takes to its
first step on a CPU, in a run that never compiles. :class:`EagerAdam` calls the same methods
unwrapped (``__wrapped__``, set by functools.wraps), with the step's grad mode as torch sets it;
the numbers and the state dict are torch's own. A compiled run keeps torch's Adam, whose
wrappers keep dynamo out of the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def make_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float, compiled: bool) -> torch.optim.Adam:
    """Adam with fused kernels where this torch and device have them; torch's own class for a
    compiled run (``compiled``), :class:`EagerAdam` otherwise."""
    kind = torch.optim.Adam if compiled else EagerAdam
    parameters = list(parameters)
    try:
        return kind(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return kind(parameters, lr=lr)
