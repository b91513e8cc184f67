"""``train()``: fit a VAE on a registered dataset and write a run folder (the Python API of
``vae train``; the loop and its parts are in :mod:`vaecli.training`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaecli import distributed
from vaecli.config import TrainConfig
from vaecli.devices import choose_device
from vaecli.distributed import Ranks
from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed
from vaecli.modelfile import MODEL_FILE
from vaecli.precision import choose_precision
from vaecli.runs import discard_unresumable, run_folder_lock
from vaecli.training.callbacks import Callback, Callbacks, build_callbacks
from vaecli.training.interrupts import Interrupts, TrainingInterrupted
from vaecli.training.loop import fit
from vaecli.training.outputs import run_folder_callbacks
from vaecli.training.run import choose_run_dir, complete_config, require_run_parts, start_run

__all__ = [
    "TEST_PREPARE_SEED",
    "Callback",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "prepare_fixed",
    "train",
]


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    metrics: list[dict[str, Any]]
    is_main: bool = True  # False on the ranks of a distributed run other than 0


def _ordered(chosen: list[Any], callbacks: Any | Sequence[Any] | None) -> list[Any]:
    """The run folder's own callbacks, then the config's, then the caller's, then the signals'."""
    given = [] if callbacks is None else list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
    return [
        *((c, None) for c in run_folder_callbacks()),
        *chosen,
        *((c, None) for c in given),
        (Interrupts(), None),  # last: a signal during a step's hooks stops after all of them
    ]


def train(
    config: TrainConfig, callbacks: Any | Sequence[Any] | None = None, resume: bool = False
) -> TrainResult:
    """Train a VAE as ``config`` says, writing the run folder as it goes. ``callbacks`` (one or
    a list; see :class:`vaecli.training.Callback`) are told of each epoch and step, after the
    run's own and the config's. With ``resume`` the run folder ``config.out`` is continued from
    its checkpoint, to the same weights an uninterrupted run would reach. Started by torchrun,
    each process trains on its share of every batch and only rank 0 reports, writes files and
    checkpoints."""
    if resume and config.out:
        require_run_parts(Path(config.out))
    ranks = Ranks.from_env()
    # (A resumed run keeps the data options it began with: one begun before they were inferred
    # from the files goes on at the size it was trained at.)
    config = complete_config(config, tell=ranks.is_main and not resume, infer_options=not resume)
    config.validate()
    chosen = build_callbacks(config.callbacks)  # (a missing package stops here, before any work)
    device = ranks.device(choose_device(config.device))
    precision = choose_precision(config.precision, device)
    distributed.start(ranks, device)
    try:
        run_dir = choose_run_dir(config, resume)
        with run_folder_lock(run_dir) if ranks.is_main else contextlib.nullcontext():
            run = start_run(config, resume, ranks, device, precision, run_dir)
            try:
                fit(run, Callbacks(_ordered(chosen, callbacks), ranks.is_main))
            except BaseException:
                if not resume and ranks.is_main:
                    discard_unresumable(run.run_dir)
                raise
        return TrainResult(run.run_dir, run.run_dir / MODEL_FILE, run.history, ranks.is_main)
    finally:
        distributed.stop(ranks)
