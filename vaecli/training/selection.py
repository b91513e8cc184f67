"""Choosing an epoch on the validation split during training: ``--keep best`` (the model file
holds the epoch with the lowest held-out bound) and ``--patience N`` (stop after N epochs without
a lower one), by the rules of :mod:`vaecli.epoch_choice`, read from the epoch rows
(``run.history``, which a resumed run reads back from metrics.jsonl), so a resumed run chooses as
an uninterrupted one would, with no state of its own in the checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaecli import distributed
from vaecli.console import note
from vaecli.epoch_choice import best_row, early_stop, held_out_bound

if TYPE_CHECKING:
    from vaecli.training.run import TrainingRun


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
