"""What keeps deep models training: gradient clipping with skipping of outlier updates
(``--grad-clip``, ``--grad-skip``) and an exponential moving average of the weights
(``--ema``) that evaluation, sampling and the model file use. Neither waits for the device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vaecli.errors import VaeError


class GradientLimit:
    """The gradients' global L2 norm, taken on the device after backward: above ``skip`` the
    update is not applied (an outlier batch, counted in metrics.jsonl as ``outlier_steps``);
    above ``clip`` the gradients are scaled down to norm ``clip`` (VDVAE's recipe: clip at a
    norm the model often reaches, skip at one it reaches only when something went wrong)."""

    def __init__(self, params: list[torch.Tensor], clip: float | None, skip: float | None) -> None:
        self.params = params
        self.clip, self.skip = clip, skip

    @property
    def active(self) -> bool:
        return self.clip is not None or self.skip is not None

    def apply(self) -> torch.Tensor | None:
        """Clip the gradients in place; whether the update may go ahead (a 0-d bool tensor on the
        device), or None when no skip threshold is set."""
        if not self.active:
            return None
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
        if self.clip is not None:
            factor = (self.clip / (norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, factor.to(grads[0].dtype))
        return None if self.skip is None else norm <= self.skip

    def check_epoch(self, epoch: int, outliers: int, steps: int, non_finite: int = 0) -> None:
        """Fail when no update of ``epoch`` was applied, its steps all outliers or non-finite (and
        skipped, --on-nan skip): the model no longer changes, so the run would spend its remaining
        epochs on nothing (a diverged model, whose every gradient passes the threshold, or a
        threshold below the model's usual norms)."""
        if self.skip is None or steps <= 0 or outliers == 0 or outliers + non_finite < steps:
            return
        which = f"at all {steps} steps" if non_finite == 0 else (
            f"at {outliers} of its {steps} steps and the others were non-finite")  # fmt: skip
        raise VaeError(
            f"every update of epoch {epoch} was skipped: the gradient's norm passed --grad-skip "
            f"{self.skip:g} {which}, so the model has stopped learning (it diverged, or the threshold "
            "is below its usual norms); train again with a lower --lr or a higher --grad-skip"
        )


class WeightAverage:
    """An exponential moving average of the trainable weights, moved after every applied update
    with the decay min(``decay``, (1 + n) / (10 + n)) at update n (so the first updates are not
    dominated by the random start). A skipped step (an outlier, or non-finite under --on-nan
    skip) leaves it and n as they are, as VDVAE does: the weights did not change, and after a
    divergence the average keeps what it had instead of drifting onto weights nobody applied.
    The count is kept on the device, so an update never waits for it."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        # On a CPU a kernel a tensor is the fastest (1.0 ms a step for 2.6M weights, against 2.0 for
        # the foreach kernels and 0.7 for the old lerp whose weight was a float); on CUDA, where
        # every kernel is a launch, a few foreach kernels.
        on_cuda = bool(self.average) and self.average[0].is_cuda
        self.scratch = [torch.empty_like(p) for p in self.average] if on_cuda else None
        self.count = torch.zeros((), device=self.average[0].device if self.average else None)

    @property
    def updates(self) -> int:
        """The updates averaged so far (a read of the device)."""
        return int(self.count.item())

    @torch.no_grad()
    def update(self, applied: torch.Tensor | None = None) -> None:
        """Move the average towards the weights, unless ``applied`` (a 0-d bool tensor on the
        device: whether the optimiser applied this step's update) is False."""
        step = torch.ones_like(self.count) if applied is None else applied.to(self.count.dtype)
        decay = ((1.0 + self.count) / (10.0 + self.count)).clamp(max=self.decay)
        weight = (1.0 - decay) * step
        params = [p.detach() for p in self.params]
        if self.scratch is None:  # (Tensor.lerp_ takes the weight as a tensor; foreach lerp reads it)
            for average, param in zip(self.average, params, strict=True):
                average.lerp_(param, weight)
        else:  # the same in four foreach kernels, into a buffer kept from update to update
            torch._foreach_copy_(self.scratch, params)
            torch._foreach_sub_(self.scratch, self.average)
            torch._foreach_mul_(self.scratch, weight)
            torch._foreach_add_(self.average, self.scratch)
        self.count += step

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], own)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The average by parameter name, for the checkpoint."""
        return {
            f"ema.{name}": t.detach().cpu().contiguous()
            for name, t in zip(self.names, self.average, strict=True)
        }

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        """Restore the average from a checkpoint's tensors (a run checkpointed without an
        average starts one from its current weights)."""
        with torch.no_grad():
            for name, target in zip(self.names, self.average, strict=True):
                if f"ema.{name}" in tensors:
                    target.copy_(tensors[f"ema.{name}"])
        self.count.fill_(updates)
