"""Ctrl-C and SIGTERM: the step in progress finishes, a checkpoint is written, training stops."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from vaecli import distributed
from vaecli.errors import Stopped
from vaecli.training.callbacks import Callback
from vaecli.training.step import READ_EVERY

if TYPE_CHECKING:
    from vaecli.training.run import TrainingRun


class TrainingInterrupted(Stopped):
    """Ctrl-C or SIGTERM stopped training after a checkpoint was written (exit 130 or 143)."""


class InterruptFlag:
    """While active, the first SIGINT/SIGTERM only sets ``signum`` (training ends its step and
    writes a checkpoint); a second one stops at once (:class:`Stopped`, exit 128 + its number).
    Files are written atomically, so stopping at once corrupts nothing. Outside the main thread
    it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Stopped(
                f"{signal.Signals(signum).name} again: stopped at once, without a new checkpoint "
                "(every file is whole; --resume continues from the last one)",
                signum,
            )
        self.signum = signum

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Interrupts(Callback):
    """After a step, stop if any rank got a signal: every rank stops at the same step (in a
    distributed run one of every READ_EVERY steps, or the epoch's last), and the checkpoint holds
    the state after that step."""

    all_ranks = True  # the check is a collective: every rank takes part

    def __init__(self) -> None:
        self.flag = InterruptFlag()
        self.run: TrainingRun | None = None
        self.epoch = 0

    def on_train_start(self, run: TrainingRun) -> None:
        self.run = run
        self.flag.__enter__()

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int) -> None:
        run = self.run
        assert run is not None
        if run.ranks.distributed and step % READ_EVERY and step < run.steps_per_epoch:
            return  # (asking the other ranks waits for them: every READ_EVERY steps, and at the end)
        signum = distributed.any_signal(run.ranks, self.flag.signum, run.device)
        if signum:
            run.save_checkpoint(mid_epoch=True)
            name = signal.Signals(signum).name
            raise TrainingInterrupted(
                f"{name}: stopped at epoch {self.epoch}, step {step} of {run.steps_per_epoch}; checkpoint "
                f"written; continue with: vae train --resume {run.run_dir}",
                signum,
            )

    def on_train_end(self, run: TrainingRun) -> None:
        self.flag.__exit__()
