"""Which epoch of a run is best, and whether ``--patience`` has run out, from its epoch rows (the
objects of metrics.jsonl) alone: training (``--keep best``, ``--patience``), ``vae runs`` and
``vae plot`` judge by the same rules. No torch here, so listing runs starts at once."""

from __future__ import annotations

import math
from typing import Any

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
