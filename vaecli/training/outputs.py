"""The run folder's files, each written by a callback: metrics.jsonl and curves.png, the
per-epoch pictures, the model file, and the checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from vaecli.epoch_choice import best_row, is_best
from vaecli.fileio import write_bytes_atomic
from vaecli.images import grid_png
from vaecli.modelfile import MODEL_FILE, save_model
from vaecli.pictures import Inputs, reconstruction_grid, reconstructions
from vaecli.plots import CURVES_FILE, curves_png
from vaecli.run_summaries import objective_label
from vaecli.training.callbacks import Callback
from vaecli.training.run import METRICS_FILE, TrainingRun, write_metrics

SAMPLE_SEED = 0  # the per-epoch sample grids decode the same z every epoch
SAMPLES = 64
RECON_IMAGES = 16  # the per-epoch reconstruction grids show the first test images
SAMPLES_DIR = "samples"
RECONSTRUCTIONS_DIR = "reconstructions"


class RunCallback(Callback):
    """A callback that keeps the run it was started on."""

    def on_train_start(self, run: TrainingRun) -> None:
        self.run = run


class MetricsFile(RunCallback):
    """One JSON row per epoch in metrics.jsonl (the whole file written anew each epoch, so a
    full disk or a kill never leaves half a row), and curves.png drawn from all of them (with the
    kept epoch marked in a ``--keep best`` run)."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        write_metrics(self.run.run_dir / METRICS_FILE, self.run.history)
        config, history = self.run.config, self.run.history
        label = objective_label(config.objective, config.objective_options)
        kept = best_row(history, self.run.row_split) if config.keep == "best" else None
        png = curves_png(history, label, kept["epoch"] if kept else None)
        write_bytes_atomic(self.run.run_dir / CURVES_FILE, png)


class EpochPictures(RunCallback):
    """samples/epoch-NNN.png (the same z every epoch) and reconstructions/epoch-NNN.png (the first
    test images beside their reconstructions)."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        pictures = epoch_pictures(self.run, metrics["epoch"])
        name = f"epoch-{metrics['epoch']:03d}.png"
        write_bytes_atomic(self.run.run_dir / SAMPLES_DIR / name, grid_png(pictures["samples"]))
        recon = reconstruction_grid(pictures["originals"], pictures["reconstructions"])
        write_bytes_atomic(self.run.run_dir / RECONSTRUCTIONS_DIR / name, recon)


def epoch_pictures(run: TrainingRun, epoch: int) -> dict[str, torch.Tensor]:
    """The model's pictures at the end of ``epoch``: ``samples`` (decoded from fixed z),
    ``originals`` (the first test images) and their ``reconstructions``, each (N, C, H, W) in
    [0, 1] on the CPU; drawn once per epoch, however many callbacks ask."""
    if run.pictures is None or run.pictures[0] != epoch:
        with run.evaluation_weights():
            run.pictures = (epoch, _draw_pictures(run))
    return run.pictures[1]


def _draw_pictures(run: TrainingRun) -> dict[str, torch.Tensor]:
    model = run.model
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    z = model.sample_prior(SAMPLES, generator).to(run.device)
    with torch.no_grad():
        samples = model.likelihood.mean(model.decode(z))
    inputs = Inputs(images=run.test_images[:RECON_IMAGES], x=run.test_x[:RECON_IMAGES])
    return {
        "samples": samples.float().cpu(),
        "originals": inputs.images.float().cpu() / 255.0,
        "reconstructions": reconstructions(model, inputs).float().cpu(),
    }


class ModelFile(RunCallback):
    """model.safetensors after every epoch, with that epoch's metrics in its header; with
    ``--keep best`` only after an epoch whose validation bound is the lowest so far."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        if self.run.config.keep == "best" and not is_best(self.run.history, self.run.row_split):
            return
        with self.run.evaluation_weights():  # (the moving average, with --ema)
            save_model(self.run.run_dir / MODEL_FILE, self.run.model, {**self.run.info, "metrics": metrics})


class Checkpoints(RunCallback):
    """checkpoint.safetensors at every epoch's end and, with --checkpoint-every N, every N steps."""

    all_ranks = True  # a mid-epoch checkpoint sums the epoch's totals over all ranks

    def on_step(self, step: int) -> None:
        every = self.run.config.checkpoint_every
        if every and step % every == 0 and step < self.run.steps_per_epoch:
            self.run.save_checkpoint(mid_epoch=True)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.run.save_checkpoint(mid_epoch=False)


def run_folder_callbacks() -> list[Callback]:
    """vaecli's own callbacks, in the order they run: the model file, the metrics and pictures,
    then the checkpoint. A failure at any point leaves a run that resumes: metrics.jsonl never
    records an epoch whose model was not saved (with --keep best: a best one), and rows past the
    checkpoint are redone."""
    return [ModelFile(), MetricsFile(), EpochPictures(), Checkpoints()]
