"""``fit()``: the training loop. Epochs of steps, then each epoch's report; everything else
(files, pictures, checkpoints, signals, progress, logging) is a callback."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from vaecli.checkpoint import Position
from vaecli.evaluation import mean_elbo
from vaecli.objectives.base import describe
from vaecli.training.callbacks import Callbacks
from vaecli.training.run import TrainingRun
from vaecli.training.selection import stops_early, tell_kept
from vaecli.training.step import NanGuard, train_step


def fit(run: TrainingRun, callbacks: Callbacks) -> None:
    """Train from where ``run`` stands to its last epoch."""
    guard = run.guard = NanGuard(run)
    callbacks.call("on_train_start", run)
    try:
        for epoch in range(run.position.epoch, run.config.epochs + 1):
            run_epoch(run, guard, callbacks, epoch)
            if stops_early(run):
                break
        tell_kept(run)
    finally:
        run.guard = None  # (run and guard refer to each other: no cycle keeps DDP alive past the run)
        callbacks.call("on_train_end", run)


def run_epoch(run: TrainingRun, guard: NanGuard, callbacks: Callbacks, epoch: int) -> None:
    """One epoch's steps (the rest of it, resumed mid-way), then its report."""
    callbacks.call("on_epoch_start", epoch, run.config.epochs, run.steps_per_epoch)
    run.model.train()
    run.epoch_started, run.epoch_seconds_before = time.perf_counter(), run.position.seconds
    if run.position.step == 0:
        run.order = run.feed.order()
    assert run.order is not None
    run.start_totals()
    first = run.position.step + 1
    with contextlib.closing(run.feed.batches(run.order, run.config.batch_size, first - 1)) as batches:
        for step, batch in enumerate(batches, first):
            train_step(run, guard, batch, epoch, step)
            callbacks.call("on_step", step)
    guard.read()
    totals = run.epoch_totals()
    guard.check_epoch(epoch)
    if run.limit is not None:
        run.limit.check_epoch(epoch, run.position.outliers, run.steps_per_epoch, run.position.skipped)
    seconds = run.epoch_seconds_before + time.perf_counter() - run.epoch_started
    if run.ranks.is_main:  # rank 0 evaluates and reports; the others go on to the next epoch
        metrics = epoch_report(run, epoch, totals, seconds)
        run.history.append(metrics)
    run.position = Position(epoch=epoch + 1)
    if run.ranks.is_main:
        callbacks.call("on_epoch_end", metrics)


def epoch_report(run: TrainingRun, epoch: int, totals: list[float], seconds: float) -> dict[str, Any]:
    """The epoch's row: the training loss and the true -ELBO with its terms (per image, over the
    epoch's applied steps), the same on the fixed test set, the objective's own test numbers."""
    seen = max(run.position.seen, 1)
    loss, neg_elbo, reconstruction, kl = (t / seen for t in totals)
    with run.evaluation_weights():
        test = mean_elbo(run.model, run.test_x)
        extra = objective_test_metrics(run)
    split = run.row_split  # (test, or val where the data have a validation split)
    return {
        "epoch": epoch,
        "objective": run.config.objective,  # (its options are in config.yaml)
        "train_neg_elbo": neg_elbo,
        "train_reconstruction": reconstruction,
        "train_kl": kl,
        "train_loss": loss,
        f"{split}_neg_elbo": test["neg_elbo"],
        f"{split}_reconstruction": test["reconstruction"],
        f"{split}_kl": test["kl"],
        **{f"{split}_{key}": value for key, value in test.items() if key.startswith("kl_")},
        **({f"{split}_bits_per_dim": test["bits_per_dim"]} if "bits_per_dim" in test else {}),
        **{f"{split}_{key}": value for key, value in extra.items()},
        "images_per_s": run.images / seconds,
        "seconds": seconds,
        "elapsed": time.perf_counter() - run.started,
        **({"skipped_steps": run.position.skipped} if run.position.skipped else {}),
        **({"outlier_steps": run.position.outliers} if run.config.grad_skip is not None else {}),
    }


def objective_test_metrics(run: TrainingRun) -> dict[str, float]:
    """The objective's own numbers on the test set (iwae: its k-sample bound), checked."""
    from vaecli.errors import VaeError

    was_training = run.model.training
    try:
        with torch.no_grad():
            numbers = run.objective.test_metrics(run.model, run.test_x)
    except VaeError:
        raise
    except Exception as exc:
        raise VaeError(
            f"{describe(run.objective)} failed in test_metrics: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        run.model.train(was_training)
    if not (isinstance(numbers, dict) and all(isinstance(k, str) and isinstance(v, float | int)
                                              for k, v in numbers.items())):  # fmt: skip
        raise VaeError(f"{describe(run.objective)}: test_metrics must give a mapping of names to numbers")
    return {key: float(value) for key, value in numbers.items()}
