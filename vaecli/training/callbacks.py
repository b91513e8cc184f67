"""Callbacks: what happens around the loop's steps and epochs, without editing the loop.

A callback overrides any of the hooks below (each does nothing by default). Training calls them
in order: vaecli's own (the run folder's files), then the ones a user asked for (``--callback
NAME``, ``--log tensorboard``), then the front end's (the CLI's progress and rows). An object
with only some of these methods (the observer of earlier vaecli releases) works too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vaecli import registry
from vaecli.errors import UsageError, VaeError

if TYPE_CHECKING:
    from vaecli.training.run import TrainingRun


class Callback:
    """Hooks into a training run. ``all_ranks``: also run on ranks other than 0 of a distributed
    run (by default only rank 0, which alone writes files and prints, calls a callback)."""

    all_ranks = False

    def on_train_start(self, run: TrainingRun) -> None:
        """Before the first step (of this process: a resumed run starts mid-way)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Epoch ``epoch`` of ``epochs`` begins; it has ``steps`` steps."""

    def on_step(self, step: int) -> None:
        """Step ``step`` of the epoch is done (``run.last_loss`` holds its loss, on the device)."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        """The epoch's row, as metrics.jsonl records it."""

    def on_train_end(self, run: TrainingRun) -> None:
        """Training has ended, however it ended (finished, interrupted or failed)."""


class Callbacks:
    """Calls one hook on every callback in order. A failure in a plugin's callback is reported as
    one line naming the callback and its package; others propagate as they are."""

    def __init__(self, items: Iterable[tuple[Any, str | None]], is_main: bool = True) -> None:
        self.items = [(c, what) for c, what in items if is_main or getattr(c, "all_ranks", False)]

    def call(self, hook: str, *args: Any) -> None:
        for callback, what in self.items:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            if what is None:
                method(*args)
                continue
            try:
                method(*args)
            except VaeError as exc:
                if exc.exit_code >= 128:  # an interrupt, not a failure
                    raise
                raise VaeError(f"{what} failed in {hook}: {exc}") from exc
            except Exception as exc:
                raise VaeError(f"{what} failed in {hook}: {type(exc).__name__}: {exc}") from exc


def build_callback(name: str, options: dict[str, Any]) -> tuple[Callback, str]:
    """The registered callback ``name`` made with ``options``, and its description."""
    if not isinstance(options, dict):
        raise UsageError(f"callback '{name}': options must be a mapping, got {options!r}")
    return registry.callbacks.build(name, options)


def build_callbacks(chosen: dict[str, dict[str, Any]]) -> list[tuple[Callback, str]]:
    """Every callback a config names, in its order."""
    return [build_callback(name, options) for name, options in chosen.items()]
