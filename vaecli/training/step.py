"""One optimiser step: the batch, the forward pass, the objective's loss, backward, the NaN
guard, and the update."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from vaecli import distributed, registry
from vaecli.errors import VaeError
from vaecli.models import Elbo, Terms
from vaecli.objectives import Objective, Progress
from vaecli.objectives.base import describe
from vaecli.training.feeding import Batch

if TYPE_CHECKING:
    from vaecli.distributed import Ranks
    from vaecli.models import LatentVariableModel
    from vaecli.precision import Precision
    from vaecli.training.run import TrainingRun

START = Progress(0.0, 1)


def objective_loss(objective: Objective, terms: Terms, progress: Progress) -> torch.Tensor:
    """The objective's loss per image, checked: a failure or a wrong shape names the objective."""
    images = terms.kl.shape[0]
    try:
        loss = objective.loss(terms, progress)
    except VaeError:
        raise
    except Exception as exc:
        raise VaeError(f"{describe(objective)} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (images,):
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise VaeError(
            f"{describe(objective)}: loss must be one number per image, shape ({images},), got {got}"
        )
    return loss


def check_objective(
    objective: Objective, model: LatentVariableModel, images: torch.Tensor, noise_dim: int
) -> None:
    """Take the objective's loss once on two training images (fixed noise, no gradients, the
    global random state untouched), so that a plugin objective that fails or gives the wrong
    shape stops before the run folder is written."""
    generator = torch.Generator(device=images.device).manual_seed(0)
    x = model.likelihood.prepare(images[:2], generator)
    samples = objective.samples
    eps = torch.randn((x.shape[0], samples, noise_dim), generator=generator, device=images.device)
    with torch.no_grad(), model.evaluating():
        objective_loss(objective, model(x, eps, weights=objective.weights, dreg=objective.dreg), START)


class BatchForward(torch.nn.Module):
    """A step's forward pass from its batch: the images gathered, prepared by the likelihood
    (binarised, dequantised), the noise drawn, and this rank's part through ``net`` (the model,
    or the model in DDP). The whole batch's noise, ``noise_dim`` standard-normal numbers per draw
    (the model's ``noise_dim()``), is drawn on every rank (the same numbers); each rank runs its
    part. One module, so that a step compiled on CUDA holds all of it in one graph
    (``compiling.py``)."""

    def __init__(self, net: torch.nn.Module, model: LatentVariableModel, objective: Objective,
                 ranks: Ranks, precision: Precision) -> None:  # fmt: skip
        super().__init__()
        self.net, self.likelihood = net, model.likelihood
        self.noise_dim, self.ranks, self.precision = model.noise_dim(), ranks, precision
        self.samples, self.weights, self.dreg = objective.samples, objective.weights, objective.dreg

    def forward(self, source: torch.Tensor, indices: torch.Tensor | None) -> Terms:
        """The terms of this rank's part of the batch ``Batch(source, indices)``."""
        x = self.likelihood.prepare(Batch(source, indices).images())
        n = x.shape[0]
        eps = torch.randn((n, self.noise_dim) if self.samples == 1 else (n, self.samples, self.noise_dim),
                          device=x.device)  # fmt: skip
        part = self.ranks.shard(n)
        with self.precision.autocast(x.device):
            return self.net(x[part], eps[part], weights=self.weights, dreg=self.dreg)


def forward_loss(
    forward: torch.nn.Module, objective: Objective, batch: Batch, progress: Progress | None
) -> tuple[torch.Tensor, Terms]:
    """This rank's part of ``batch`` through ``forward`` (a :class:`BatchForward`, perhaps
    compiled): the objective's loss per image (float32), and the terms."""
    terms = forward(batch.source, batch.indices)
    return objective_loss(objective, terms, progress or START).float(), terms


#: Steps between the guard's reads of the device (and a distributed run's checks for signals):
#: in between, a step runs without the host waiting for the device.
READ_EVERY = 32

# What went wrong at the first non-finite step, as bits of the number the device records.
_RECONSTRUCTION, _KL, _LOSS = 1, 2, 4


class NanGuard:
    """A step is applied only if its loss, its ELBO and every gradient are finite on every rank;
    otherwise training stops (``--on-nan stop``) naming the term, epoch and step, or skips it.

    The test runs on the device and decides there whether the optimiser applies the update (the
    fused optimiser's ``found_inf``), so a step never waits for the device; the host reads the
    outcome every :data:`READ_EVERY` steps, at the end of an epoch and before a checkpoint
    (:meth:`read`). Under ``stop`` a non-finite step also halts every later one, so the weights
    stay those from before it, and the error raised when it is read names that step."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.params = [p for p in run.model.parameters() if p.requires_grad]
        self.stop = run.config.on_nan == "stop"
        device = run.device
        #: Updates applied so far (any before this session count: a resumed run has some).
        self.updates = torch.full((), float(bool(run.optimizer.state)), device=device)
        self.halted = torch.zeros((), dtype=torch.bool, device=device)
        #: The first non-finite step since the last read: its place in ``steps``, what was
        #: non-finite (bits), and the updates applied before it; -1 while there is none.
        self.first = torch.full((3,), -1.0, device=device)
        self.steps: list[tuple[int, int]] = []  # (epoch, step) of each step since the last read
        # Where the fused kernels are missing the optimiser cannot skip on the device: the step
        # then reads the verdict itself (one wait for the device per step).
        self.on_device = bool(run.optimizer.defaults.get("fused"))

    def decide(self, part_loss: torch.Tensor, elbo_sum: torch.Tensor, elbo: Elbo, epoch: int,
               step: int, within: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Whether the step's images count (a 0-d tensor), with the update applied or skipped
        accordingly when the optimiser steps (:meth:`step`); ``within`` False (the gradient's norm
        passed --grad-skip) skips the update but counts the images, as the step was finite."""
        status = torch.stack([part_loss.detach(), elbo_sum.detach(), *_grad_sums(self.params)]).float()
        finite = torch.isfinite(distributed.all_sum(self.run.ranks, status))
        loss_ok, grads_ok = finite[:2].all(), finite[2:].all()
        # float16 gradients overflow now and then: such a step is skipped but is no error.
        error = ~loss_ok if self.run.precision.scaled else ~(loss_ok & grads_ok)
        apply = loss_ok & grads_ok if within is None else loss_ok & grads_ok & within
        if self.stop:
            fresh = error & ~self.halted
            bits = (
                (~torch.isfinite(elbo.reconstruction).all()).float() * _RECONSTRUCTION
                + (~torch.isfinite(elbo.kl).all()).float() * _KL
                + (~loss_ok).float() * _LOSS
            )
            place = torch.full((), float(len(self.steps)), device=bits.device)
            self.first = torch.where(fresh, torch.stack([place, bits, self.updates]), self.first)
            self.halted = self.halted | error
            apply, counted = apply & ~self.halted, ~self.halted
        else:
            counted = ~error
        self.steps.append((epoch, step))
        self.apply = apply
        return counted

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the update that :meth:`decide` allowed, or leave the weights and the optimiser's
        state as they are."""
        if self.on_device:
            optimizer.found_inf = (~self.apply).float()  # type: ignore[attr-defined]
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf  # type: ignore[attr-defined]
        elif bool(self.apply):
            optimizer.step()
        self.updates = self.updates + self.apply.float()

    def due(self) -> bool:
        """Whether the host should read the device now (every :data:`READ_EVERY` steps)."""
        return len(self.steps) >= READ_EVERY

    def read(self) -> None:
        """Wait for the device and raise for a non-finite step under ``--on-nan stop``."""
        steps, self.steps = self.steps, []
        if not self.stop:
            return
        place, bits, updates = (int(v) for v in self.first.tolist())
        if place < 0:
            return
        epoch, step = steps[place]
        what = "gradient" if not bits & _LOSS else _nonfinite_terms(bits, self.run.ranks.distributed)
        if updates == 0:  # no update yet: the learning rate cannot be the cause
            raise VaeError(
                f"non-finite {what} at epoch {epoch}, step {step}, before any update: the untrained "
                f"model gives it on this data; check the data and its parts ({model_parts(self.run)})"
            )
        path = self.run.checkpoint_path
        kept = f"the last checkpoint, {path}, is intact" if path.is_file() else "no checkpoint was written"
        raise VaeError(
            f"non-finite {what} at epoch {epoch}, step {step}: training stopped; {kept} "
            "(lower --lr, or pass --on-nan skip to skip such batches)"
        )

    def check_epoch(self, epoch: int) -> None:
        """Fail when every step of ``epoch`` was skipped: nothing was learned, and its numbers
        would be averages over no images."""
        if self.run.position.seen == 0:
            raise VaeError(
                f"every step of epoch {epoch} had a non-finite loss or gradient and was skipped "
                f"(--on-nan skip): nothing was learned; check the data and the model's parts "
                f"({model_parts(self.run)}), or lower --lr"
            )


def model_parts(run: TrainingRun) -> str:
    """The run's dataset, likelihood and architecture, each with its package."""
    config = run.config
    parts = (("dataset", config.data), ("likelihood", config.likelihood), ("architecture", config.arch))
    return ", ".join(registry.BY_KIND[kind].describe(name) for kind, name in parts)


def train_step(run: TrainingRun, guard: NanGuard, batch: Batch, epoch: int, step: int) -> None:
    """Train on ``batch``: step ``step`` of ``epoch``. Nothing here waits for the device (the
    guard reads it now and then)."""
    ranks, size = run.ranks, batch.size
    loss, terms = forward_loss(run.forward, run.objective, batch, run.progress(epoch, step))
    part_loss = loss.sum()
    elbo = terms.elbo()
    elbo_sum = elbo.elbo.float().sum()
    optimizer = run.optimizer
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(part_loss * (ranks.world_size / size)).backward()  # DDP averages over ranks
    run.scaler.unscale_(optimizer)
    within = run.limit.apply() if run.limit is not None else None
    counted = guard.decide(part_loss, elbo_sum, elbo, epoch, step, within)
    guard.step(optimizer)
    run.scaler.update()
    if run.average is not None:
        run.average.update(guard.apply)
    sums = [part_loss, -elbo_sum, -elbo.reconstruction.float().sum(), elbo.kl.float().sum()]
    outlier = None if within is None else counted & ~within
    run.count_step(torch.stack(sums).detach(), counted, size, outlier)
    if run.scheduler is not None:
        with warnings.catch_warnings():  # a skipped step still moves the schedule on, as resume does
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            run.scheduler.step()
    run.position.step = step
    run.last_loss = part_loss.detach() / max(loss.shape[0], 1)
    if guard.due():
        guard.read()


def _nonfinite_terms(bits: int, distributed: bool) -> str:
    bad = [name for bit, name in ((_RECONSTRUCTION, "reconstruction"), (_KL, "KL")) if bits & bit]
    return " and ".join(bad) or (
        "loss (on another rank)" if distributed else "loss (the objective's; its terms are finite)"
    )


def _grad_sums(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each gradient's sum: inf or nan when any of its entries is (or when the entries' total
    overflows, which is no gradient to step with either). The cheapest such test: the step took
    twice as long with the norms."""
    return [p.grad.sum() for p in params if p.grad is not None]
