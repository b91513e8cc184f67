"""What ``vae`` shows on stderr while it works: progress bars on a terminal, and plain progress
lines every so often where there is none (under nohup, in CI logs, in notebooks)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

stderr = Console(stderr=True, highlight=False)

#: Seconds between plain progress lines when stderr is not a terminal.
PROGRESS_ENV = "VAECLI_PROGRESS_SECONDS"
PROGRESS_SECONDS = 30.0


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 07 s``, ``1 h 02 min``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def note(text: str) -> None:
    """``vae: TEXT`` on stderr: what vaecli chose for the user, and how to choose otherwise."""
    print(f"vae: {one_line(text)}", file=sys.stderr, flush=True)


class Heartbeat:
    """``vae: WHAT: TEXT, ELAPSED`` on stderr at most once every ``$VAECLI_PROGRESS_SECONDS``
    (30) seconds, and only when stderr is not a terminal (a terminal gets a live bar instead), so
    a log shows the run is alive between its result lines. stdout is never touched."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.enabled = not stderr.is_terminal
        try:
            self.every = max(0.0, float(os.environ.get(PROGRESS_ENV, PROGRESS_SECONDS)))
        except ValueError:
            self.every = PROGRESS_SECONDS
        self.started = self.last = clock()
        self.first: tuple[float, int] | None = None  # (when, how much was done) at the first count

    def beat(self, text: Callable[[], str], done: int | None = None, total: int | None = None) -> None:
        """A line if one is due; with ``done`` of ``total`` units it ends with the time left, at
        the rate seen since the first count (a resumed run's earlier work is not counted)."""
        now = self.clock()
        if done is not None and self.first is None:
            self.first = (now, done)
        if self.enabled and now - self.last >= self.every:
            self.last = now
            left = self.time_left(now, done, total)
            line = f"vae: {self.what}: {text()}, {duration(now - self.started)}"
            line += f", about {duration(left)} left" if left is not None else ""
            print(line, file=sys.stderr, flush=True)

    def time_left(self, now: float, done: int | None, total: int | None) -> float | None:
        """Seconds until ``total`` at the rate since the first count; None before there is one."""
        if done is None or total is None or self.first is None or not self.first[1] < done < total:
            return None
        since, at_first = self.first
        return (now - since) * (total - done) / (done - at_first)


class ConsoleObserver:
    """``vae train``'s stderr: a progress bar on a terminal (plain progress lines elsewhere) and
    one row per epoch."""

    #: The row's columns; SPLIT is the split it is on: test, or val where the data have one.
    COLUMNS = {
        "train_loss": "loss",
        "train_neg_elbo": "train -ELBO",
        "SPLIT_neg_elbo": "SPLIT -ELBO",
        "SPLIT_reconstruction": "recon",
        "SPLIT_kl": "KL",
    }
    #: Numbers some objectives add to the row (a key of another objective is shown by its name).
    EXTRA = {"SPLIT_neg_iw_bound": "SPLIT -IW"}
    KNOWN = {
        "epoch",
        "SPLIT_bits_per_dim",
        "images_per_s",
        "seconds",
        "elapsed",
        "skipped_steps",
        "outlier_steps",
    }

    def __init__(self, quiet: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: Any = None
        self.header_done = False
        self.heartbeat = Heartbeat("training", clock)
        self.heartbeat.enabled &= not quiet
        self.where = (0, 0, 0)  # epoch, epochs, steps

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.where = (epoch, epochs, steps)
        if self.quiet or not stderr.is_terminal:
            return
        left = self.heartbeat.time_left(self.heartbeat.clock(), (epoch - 1) * steps, epochs * steps)
        label = f"epoch {epoch}/{epochs}" + (f", about {duration(left)} left" if left is not None else "")
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps)

    def on_step(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)
        epoch, epochs, steps = self.where
        self.heartbeat.beat(
            lambda: f"epoch {epoch} of {epochs}, step {step} of {steps}",
            done=(epoch - 1) * steps + step,
            total=epochs * steps,
        )

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.quiet:
            return
        split = "val" if "val_neg_elbo" in metrics else "test"
        named = {k.replace("SPLIT", split): v.replace("SPLIT", split) for k, v in self.COLUMNS.items()}
        known = {k.replace("SPLIT", split) for k in self.KNOWN}
        extras = {k.replace("SPLIT", split): v.replace("SPLIT", split) for k, v in self.EXTRA.items()}
        prefix = f"{split}_"
        extra = [k for k in metrics if k.startswith(prefix) and k not in named and k not in known]
        if not self.header_done:
            names = ["epoch", *named.values(), *(extras.get(k, k[len(prefix) :]) for k in extra)]
            stderr.print("  ".join(f"{c:>11}" for c in [*names, "bits/dim", "img/s"]), soft_wrap=True)
            self.header_done = True
        bpd = metrics.get(f"{split}_bits_per_dim")
        cells = [
            f"{metrics['epoch']:>11d}",
            *(f"{metrics[key]:>11.2f}" for key in [*named, *extra]),
            f"{bpd:>11.4f}" if bpd is not None else f"{'-':>11}",
            f"{metrics['images_per_s']:>11.0f}",
        ]
        stderr.print("  ".join(cells), soft_wrap=True)


@contextlib.contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr (plain lines where it is not a terminal), fed by
    (images done, images in all) calls."""
    bars: list[tuple[Progress, Any]] = []
    heartbeat = Heartbeat(what)

    def update(done: int, total: int) -> None:
        heartbeat.beat(lambda: f"{done} of {total} images", done, total)
        if not stderr.is_terminal:
            return
        if not bars:
            columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            bar = Progress(*columns, console=stderr, transient=True)
            bar.start()
            bars.append((bar, bar.add_task(what, total=total)))
        bars[0][0].update(bars[0][1], completed=done)

    try:
        yield update
    finally:
        for bar, _ in bars:
            bar.stop()


class ProgressCounter:
    """Counts images on stderr (a live line on a terminal, plain lines elsewhere); reports
    skipped inputs."""

    def __init__(self, what: str) -> None:
        self.progress: Progress | None = None
        self.done = 0
        self.heartbeat = Heartbeat(what)
        if stderr.is_terminal:
            from rich.progress import SpinnerColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(), TextColumn(f"{what} {{task.completed}} images"), TimeElapsedColumn(),
                console=stderr, transient=True,
            )  # fmt: skip
            self.task = self.progress.add_task(what, total=None)

    def __enter__(self) -> ProgressCounter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n)
        self.heartbeat.beat(lambda: f"{self.done} images")

    def skipped(self, where: str, reason: str) -> None:
        line = f"vae: warning: skipping {printable(where)}: {one_line(reason)}"
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)
