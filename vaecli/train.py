"""``train()``: fit a VAE on a registered dataset and write a run folder."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

import vaecli
from vaecli import registry
from vaecli.checkpoint import (
    CHECKPOINT_FILE,
    Position,
    TrainingState,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from vaecli.config import TrainConfig
from vaecli.datasets import ImageData, load_dataset
from vaecli.devices import choose_device
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import TEST_PREPARE_SEED, mean_elbo, prepare_fixed
from vaecli.fileio import write_bytes_atomic, write_text_atomic
from vaecli.images import grid_png
from vaecli.model import VAE, Elbo, ModelSpec, build_model
from vaecli.modelfile import MODEL_FILE, save_model
from vaecli.runs import check_run_dir, default_run_dir, make_run_dir

SAMPLE_SEED = 0  # the per-epoch sample grids decode the same z every epoch


class TrainObserver(Protocol):
    """What a front end is told while training runs (the CLI draws progress and rows)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_step(self, step: int) -> None: ...
    def on_epoch_end(self, metrics: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    metrics: list[dict[str, Any]]


def load_split(config: TrainConfig, split: str) -> ImageData:
    """The ``split`` of the configured dataset, cut to --limit-train/--limit-test."""
    limit = config.limit_train if split == "train" else config.limit_test
    return load_dataset(config.data, split, config.data_options, config.data_dir, limit)


def make_optimizer(model: VAE, lr: float) -> torch.optim.Optimizer:
    """Adam, with fused kernels where this torch and device have them."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


class TrainingInterrupted(VaeError):
    """Ctrl-C or SIGTERM stopped training after a checkpoint was written (exit 130 or 143)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class InterruptFlag:
    """While active, the first SIGINT/SIGTERM only sets ``signum`` (training ends its step and
    writes a checkpoint); a second one stops at once with KeyboardInterrupt. Files are written
    atomically, so stopping at once corrupts nothing. Outside the main thread it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _nonfinite_terms(terms: Elbo) -> str:
    bad = [name for name in ("reconstruction", "kl") if not torch.isfinite(getattr(terms, name)).all()]
    return " and ".join("KL" if b == "kl" else b for b in bad) or "gradient"


def train(config: TrainConfig, observer: TrainObserver | None = None, resume: bool = False) -> TrainResult:
    """Train a VAE as ``config`` says, writing the run folder as it goes. With ``resume`` the
    run folder ``config.out`` is continued from its checkpoint, to the same weights an
    uninterrupted run would reach."""
    config.validate()
    device = choose_device(config.device)
    stem = f"{config.data}-{config.likelihood}-{config.arch}".replace(":", "_").replace("/", "_")
    run_dir = Path(config.out) if config.out else default_run_dir(stem)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if resume and not checkpoint_path.is_file():
        raise VaeError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    if not resume:
        check_run_dir(run_dir, config.force)

    train_data, test_data = load_split(config, "train"), load_split(config, "test")
    if train_data.shape != test_data.shape:
        raise UsageError(f"dataset '{config.data}': train and test images differ in shape")
    torch.manual_seed(config.seed)
    spec = ModelSpec(
        input_shape=train_data.shape,
        latent_dim=config.latent_dim,
        architecture=config.arch,
        architecture_options=dict(config.arch_options),
        likelihood=config.likelihood,
        likelihood_options=dict(config.likelihood_options),
    )
    model = build_model(spec).to(device)
    likelihood = model.likelihood

    train_images = train_data.images.to(device)
    test_x = prepare_fixed(likelihood, test_data.images.to(device), TEST_PREPARE_SEED)
    sample_z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED)).to(
        device
    )
    optimizer = make_optimizer(model, config.lr)
    n = len(train_data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine"
        else None
    )

    resolved = {**asdict(config), "out": str(run_dir), "force": False}
    metrics_file = run_dir / "metrics.jsonl"
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, device)
        set_rng_states(state.rng, device)
        position, order = state.position, state.order
        history = [m for m in _read_metrics(metrics_file) if m["epoch"] < position.epoch]
        write_text_atomic(metrics_file, "".join(json.dumps(m) + "\n" for m in history))
    else:
        make_run_dir(run_dir, config.force)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        position, order, history = Position(), None, []
    parts = model_parts(config)
    info = {
        "data": {
            "name": config.data,
            "options": config.data_options,
            "shape": list(train_data.shape),
            "dtype": "uint8",
            "preprocessing": likelihood.preprocessing(),
        },
        "training": resolved,
        "parts": parts,
        "plugins": plugin_distributions(parts),
    }

    def checkpoint(mid_epoch: bool) -> None:
        state = TrainingState(position, rng_states(device), order if mid_epoch else None)
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, state)

    params = [p for p in model.parameters() if p.requires_grad]
    with InterruptFlag() as interrupt:
        for epoch in range(position.epoch, config.epochs + 1):
            if observer:
                observer.on_epoch_start(epoch, config.epochs, steps_per_epoch)
            model.train()
            started, seconds_before = time.perf_counter(), position.seconds
            if position.step == 0:
                order = torch.randperm(n, device=device)
            total = torch.tensor(position.total, dtype=torch.float64, device=device)
            batches = order.split(config.batch_size)
            for step in range(position.step + 1, steps_per_epoch + 1):
                x = likelihood.prepare(train_images[batches[step - 1]])
                terms = model.elbo(x)
                loss = -terms.elbo.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = _grad_norm(params)
                if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                    what = _nonfinite_terms(terms) if not torch.isfinite(loss) else "gradient"
                    if config.on_nan == "stop":
                        kept = (
                            f"the last checkpoint, {checkpoint_path}, is intact"
                            if checkpoint_path.is_file()
                            else "no checkpoint was written yet"
                        )
                        raise VaeError(
                            f"non-finite {what} at epoch {epoch}, step {step}: training stopped; {kept} "
                            "(lower --lr, or pass --on-nan skip to skip such batches)"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    position.skipped += 1
                else:
                    optimizer.step()
                    total += -terms.elbo.detach().sum()
                    position.seen += x.shape[0]
                if scheduler is not None:
                    scheduler.step()
                position.step = step
                if observer:
                    observer.on_step(step)
                if interrupt.signum is not None:
                    position.total = total.item()
                    position.seconds = seconds_before + time.perf_counter() - started
                    checkpoint(mid_epoch=True)
                    name = signal.Signals(interrupt.signum).name
                    raise TrainingInterrupted(
                        f"{name}: stopped at epoch {epoch}, step {step} of {steps_per_epoch}; checkpoint "
                        f"written; continue with: vae train --resume {run_dir}",
                        interrupt.signum,
                    )
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps_per_epoch:
                    position.total = total.item()
                    position.seconds = seconds_before + time.perf_counter() - started
                    checkpoint(mid_epoch=True)
            train_neg_elbo = total.item() / max(position.seen, 1)  # .item() waits for the device
            seconds = seconds_before + time.perf_counter() - started
            test = mean_elbo(model, test_x)
            metrics = {
                "epoch": epoch,
                "train_neg_elbo": train_neg_elbo,
                "test_neg_elbo": test["neg_elbo"],
                "test_reconstruction": test["reconstruction"],
                "test_kl": test["kl"],
                **({"test_bits_per_dim": test["bits_per_dim"]} if "bits_per_dim" in test else {}),
                "images_per_s": n / seconds,
                "seconds": seconds,
                **({"skipped_steps": position.skipped} if position.skipped else {}),
            }
            history.append(metrics)
            with open(metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            with torch.no_grad():
                pictures = likelihood.mean(model.decode(sample_z))
            write_bytes_atomic(run_dir / "samples" / f"epoch-{epoch:03d}.png", grid_png(pictures))
            save_model(run_dir / MODEL_FILE, model, {**info, "metrics": metrics})
            position = Position(epoch=epoch + 1)
            checkpoint(mid_epoch=False)
            if observer:
                observer.on_epoch_end(metrics)
    return TrainResult(run_dir=run_dir, model_path=run_dir / MODEL_FILE, metrics=history)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' total 2-norm (inf or nan when any gradient is), without touching them."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: everything after it is lost anyway
    return rows


def model_parts(config: TrainConfig) -> dict[str, dict[str, str]]:
    """Which distribution (and version) provides this run's dataset, architecture and likelihood."""
    parts = {}
    for kind, name in (
        ("dataset", config.data),
        ("architecture", config.arch),
        ("likelihood", config.likelihood),
    ):
        entry = registry.BY_KIND[kind].entry(name)
        parts[kind] = {"name": entry.name, "distribution": entry.distribution, "version": entry.version}
    return parts


def plugin_distributions(parts: dict[str, dict[str, str]]) -> dict[str, str]:
    """The distributions a model needs, with versions: vaecli and those providing its parts."""
    return {"vaecli": vaecli.__version__, **{p["distribution"]: p["version"] for p in parts.values()}}
