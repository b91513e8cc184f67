"""Choosing an epoch on the validation split: ``--keep best`` (the model file holds the epoch
with the lowest held-out bound) and ``--patience N`` (stop after N epochs without a lower one).

Everything here is derived from the epoch rows (``run.history``, which a resumed run reads back
from metrics.jsonl), so a resumed run chooses as an uninterrupted one would, with no state of its
own in the checkpoint.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from vaecli import distributed
from vaecli.console import note

if TYPE_CHECKING:
    from vaecli.training.run import TrainingRun

#: The held-out bound on -log p(x) an epoch is judged by: the first of these the row has, with
#: the split's prefix: the objective's k-sample bound (iwae: tighter, and what it trains), else
#: the -ELBO.
SELECTION_METRICS = ("neg_iw_bound", "neg_elbo")


def held_out_bound(row: dict[str, Any], split: str) -> tuple[str, float]:
    """The name and value of the bound ``row`` is judged by; nan counts as no better than any."""
    for metric in SELECTION_METRICS:
        key = f"{split}_{metric}"
        if key in row:
            value = float(row[key])
            return key, value if math.isfinite(value) else math.inf
    raise KeyError(f"the epoch row has no {split}_neg_elbo")


def best_row(history: list[dict[str, Any]], split: str) -> dict[str, Any] | None:
    """The row with the lowest bound (the earliest of equal ones), or None before any row."""
    if not history:
        return None
    return min(history, key=lambda row: held_out_bound(row, split)[1])


def is_best(history: list[dict[str, Any]], split: str) -> bool:
    """Whether the last row's bound is below every row's before it."""
    return best_row(history, split) is history[-1]


def early_stop(history: list[dict[str, Any]], split: str, patience: int | None) -> str | None:
    """Why training stops after the last row (``patience`` epochs since the best), else None."""
    best = best_row(history, split)
    if patience is None or best is None or history[-1]["epoch"] - best["epoch"] < patience:
        return None
    key, value = held_out_bound(best, split)
    return (
        f"stopped early after epoch {history[-1]['epoch']}: {key} has not gone below epoch "
        f"{best['epoch']}'s {value:.2f} in {patience} epoch{'s' if patience > 1 else ''} (--patience)"
    )


def stops_early(run: TrainingRun) -> bool:
    """After an epoch: whether ``--patience`` ends training here, decided by rank 0 (which alone
    has the rows) and told to every rank, so that all of them stop after the same epoch."""
    if run.config.patience is None:
        return False
    reason = early_stop(run.history, run.row_split, run.config.patience) if run.ranks.is_main else None
    stop = distributed.any_rank(run.ranks, reason is not None, run.device)
    if reason is not None:
        note(reason)
    return stop


def tell_kept(run: TrainingRun) -> None:
    """After the last epoch of a ``--keep best`` run: which epoch model.safetensors holds."""
    best = best_row(run.history, run.row_split) if run.ranks.is_main else None
    if run.config.keep != "best" or best is None:
        return
    key, value = held_out_bound(best, run.row_split)
    epoch, epochs = best["epoch"], len(run.history)
    note(f"model.safetensors holds epoch {epoch}: the lowest {key} ({value:.2f}) of the {epochs} epochs")
