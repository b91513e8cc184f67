"""``vae train --log tensorboard``: TensorBoard event files in RUN/tensorboard/.

Per epoch: every number of the epoch's row (``train/neg_elbo``, ``test/kl``, ...) and the sample
and reconstruction grids; every ``every`` steps: the training loss (``step/loss``); once: the
config as text. Needs the ``tensorboard`` package (``pip install 'vaecli[tensorboard]'``).
"""

from __future__ import annotations

from typing import Any

import yaml

from vaecli.errors import UsageError, VaeError
from vaecli.options import as_int
from vaecli.training.callbacks import Callback
from vaecli.training.run import TrainingRun

TENSORBOARD_DIR = "tensorboard"


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or one line saying how to install what it needs."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaeError(
            "the tensorboard callback (--log or --callback tensorboard) needs the tensorboard package, "
            "which is not installed: pip install 'vaecli[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoard(Callback):
    """Writes TensorBoard event files; option ``every``: log the loss every N steps (default 50)."""

    def __init__(self, every: str | int = 50) -> None:
        self.every = as_int(every, "every")
        if self.every < 1:
            raise UsageError(f"option every must be at least 1, got {every}")
        self.writer_class = summary_writer_class()
        self.writer: Any = None
        self.epoch, self.steps = 1, 1

    def on_train_start(self, run: TrainingRun) -> None:
        self.run = run
        self.writer = self.writer_class(log_dir=str(run.run_dir / TENSORBOARD_DIR))
        if run.position.epoch == 1 and run.position.step == 0:
            config = yaml.safe_dump(run.info["training"], sort_keys=False)
            self.writer.add_text("config", "    " + config.replace("\n", "\n    "), 0)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps

    def on_step(self, step: int) -> None:
        global_step = (self.epoch - 1) * self.steps + step
        if global_step % self.every == 0 and self.run.last_loss is not None:
            self.writer.add_scalar("step/loss", self.run.last_loss.item(), global_step)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        import torch

        from vaecli.images import image_grid
        from vaecli.training.outputs import epoch_pictures

        epoch = metrics["epoch"]
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, int | float):
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "test") else f"run/{key}"
                self.writer.add_scalar(tag, value, epoch)
        pictures = epoch_pictures(self.run, epoch)
        pairs = [pictures["originals"], pictures["reconstructions"]]
        interleaved = torch.stack(pairs, dim=1).flatten(0, 1)
        self.writer.add_image("samples", image_grid(pictures["samples"].clamp(0, 1), nrow=8), epoch)
        self.writer.add_image("reconstructions", image_grid(interleaved.clamp(0, 1), nrow=8), epoch)
        self.writer.flush()

    def on_train_end(self, run: TrainingRun) -> None:
        if self.writer is not None:
            self.writer.close()
