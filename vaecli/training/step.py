"""One optimiser step: the batch, the forward pass, the objective's loss, backward, the NaN
guard, and the update."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

from vaecli import distributed, registry
from vaecli.errors import VaeError
from vaecli.model import Terms
from vaecli.objectives import Objective, Progress
from vaecli.objectives.base import describe

if TYPE_CHECKING:
    from vaecli.distributed import Ranks
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
    objective: Objective, model: torch.nn.Module, images: torch.Tensor, latent_dim: int
) -> None:
    """Take the objective's loss once on two training images (fixed noise, no gradients, the
    global random state untouched), so that a plugin objective that fails or gives the wrong
    shape stops before the run folder is written."""
    generator = torch.Generator(device=images.device).manual_seed(0)
    x = model.likelihood.prepare(images[:2], generator)
    samples = objective.samples
    eps = torch.randn((x.shape[0], samples, latent_dim), generator=generator, device=images.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            objective_loss(objective, model(x, eps, weights=objective.weights, dreg=objective.dreg), START)
    finally:
        model.train(was_training)


def forward_loss(
    net: torch.nn.Module,
    objective: Objective,
    x: torch.Tensor,
    ranks: Ranks,
    device: torch.device,
    precision: Precision,
    latent_dim: int,
    progress: Progress | None,
) -> tuple[torch.Tensor, Terms]:
    """This rank's part of a batch: the loss per image and the terms. The whole batch's noise is
    drawn on every rank (the same numbers); each rank computes the loss of its part."""
    samples = objective.samples
    shape = (x.shape[0], latent_dim) if samples == 1 else (x.shape[0], samples, latent_dim)
    eps = torch.randn(shape, device=device)
    part = ranks.shard(x.shape[0])
    with precision.autocast(device):
        terms = net(x[part], eps[part], weights=objective.weights, dreg=objective.dreg)
    return objective_loss(objective, terms, progress or START).float(), terms


class NanGuard:
    """A step is applied only if its loss, its ELBO and every gradient are finite on every rank;
    otherwise training stops (``--on-nan stop``) naming the term, epoch and step, or skips it."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.params = [p for p in run.model.parameters() if p.requires_grad]

    def step_is_finite(self, part_loss: torch.Tensor, elbo_sum: torch.Tensor, terms: Terms, epoch: int,
                       step: int) -> bool:  # fmt: skip
        """Whether to apply the step (raises under --on-nan stop)."""
        status = torch.stack([part_loss.detach(), elbo_sum.detach(), *_grad_sums(self.params)])
        loss_sum, elbo, *grad_sums = distributed.all_sum(self.run.ranks, status).tolist()
        loss_ok, grads_ok = (
            math.isfinite(loss_sum) and math.isfinite(elbo),
            all(map(math.isfinite, grad_sums)),
        )
        # float16 gradients overflow now and then: the scaler skips those steps itself.
        if loss_ok and (grads_ok or self.run.precision.scaled):
            return True
        what = "gradient" if loss_ok else _nonfinite_terms(terms, self.run.ranks.distributed)
        if self.run.config.on_nan != "stop":
            return False
        if not self.run.optimizer.state:  # no update yet: the learning rate cannot be the cause
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


def train_step(run: TrainingRun, guard: NanGuard, indices: torch.Tensor, epoch: int, step: int) -> None:
    """Train on the images ``indices``: step ``step`` of ``epoch``."""
    # (index_select: on CPUs ten times the speed of train_images[batch].)
    x = run.model.likelihood.prepare(run.train_images.index_select(0, indices))
    config, ranks = run.config, run.ranks
    loss, terms = forward_loss(
        run.net,
        run.objective,
        x,
        ranks,
        run.device,
        run.precision,
        config.latent_dim,
        run.progress(epoch, step),
    )
    part_loss = loss.sum()
    elbo = terms.elbo()
    elbo_sum = elbo.elbo.float().sum()
    optimizer = run.optimizer
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(part_loss * (ranks.world_size / x.shape[0])).backward()  # DDP averages over ranks
    run.scaler.unscale_(optimizer)
    if guard.step_is_finite(part_loss, elbo_sum, terms, epoch, step):
        run.scaler.step(optimizer)
        run.scaler.update()
        sums = [part_loss, -elbo_sum, -elbo.reconstruction.float().sum(), elbo.kl.float().sum()]
        run.totals += torch.stack(sums).detach()
        run.position.seen += x.shape[0]
    else:
        optimizer.zero_grad(set_to_none=True)
        run.position.skipped += 1
    if run.scheduler is not None:
        with warnings.catch_warnings():  # a skipped step still moves the schedule on, as resume does
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            run.scheduler.step()
    run.position.step = step
    run.last_loss = part_loss.detach() / max(loss.shape[0], 1)


def _nonfinite_terms(terms: Terms, distributed: bool) -> str:
    elbo = terms.elbo()
    bad = [name for name in ("reconstruction", "kl") if not torch.isfinite(getattr(elbo, name)).all()]
    return " and ".join("KL" if b == "kl" else b for b in bad) or (
        "loss (on another rank)" if distributed else "loss (the objective's; its terms are finite)"
    )


def _grad_sums(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each gradient's sum: inf or nan when any of its entries is (or when the entries' total
    overflows, which is no gradient to step with either). The cheapest such test: the step took
    twice as long with the norms."""
    return [p.grad.sum() for p in params if p.grad is not None]
