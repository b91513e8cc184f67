"""``train()``: fit a VAE on a registered dataset and write a run folder."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

import vaecli
from vaecli import registry
from vaecli.config import TrainConfig
from vaecli.datasets import ImageData, resolve_data_dir
from vaecli.devices import choose_device
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import mean_elbo
from vaecli.fileio import write_bytes_atomic, write_text_atomic
from vaecli.images import grid_png
from vaecli.likelihoods import Likelihood
from vaecli.model import VAE, ModelSpec, build_model
from vaecli.modelfile import MODEL_FILE, save_model
from vaecli.options import call_with_options
from vaecli.runs import check_run_dir, default_run_dir, make_run_dir

TEST_PREPARE_SEED = 0  # the test set is prepared (e.g. binarised) once, the same in every run
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
    factory = registry.datasets.load(config.data)
    root = resolve_data_dir(config.data_dir)
    what = registry.datasets.describe(config.data)
    data = call_with_options(factory, what, (root, split), config.data_options)
    if not isinstance(data, ImageData):
        raise VaeError(f"{what} did not give vaecli ImageData (got {type(data).__name__})")
    limit = config.limit_train if split == "train" else config.limit_test
    if limit is not None:
        data = ImageData(data.images[:limit], None if data.labels is None else data.labels[:limit], data.name)
    return data


@torch.no_grad()
def prepare_fixed(likelihood: Likelihood, images: torch.Tensor, seed: int) -> torch.Tensor:
    """Prepare a whole uint8 set once with a fixed seed (e.g. the binarised test set)."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return torch.cat([likelihood.prepare(chunk, generator) for chunk in images.split(4096)])


def make_optimizer(model: VAE, lr: float) -> torch.optim.Optimizer:
    """Adam, with fused kernels where this torch and device have them."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def train(config: TrainConfig, observer: TrainObserver | None = None) -> TrainResult:
    """Train a VAE as ``config`` says, writing the run folder as it goes."""
    config.validate()
    device = choose_device(config.device)
    stem = f"{config.data}-{config.likelihood}-{config.arch}".replace(":", "_").replace("/", "_")
    run_dir = Path(config.out) if config.out else default_run_dir(stem)
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

    make_run_dir(run_dir, config.force)
    resolved = {**asdict(config), "out": str(run_dir), "force": False}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
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

    optimizer = make_optimizer(model, config.lr)
    n = len(train_data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine"
        else None
    )
    history: list[dict[str, Any]] = []
    metrics_file = run_dir / "metrics.jsonl"
    for epoch in range(1, config.epochs + 1):
        if observer:
            observer.on_epoch_start(epoch, config.epochs, steps_per_epoch)
        model.train()
        started = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)
        perm = torch.randperm(n, device=device)
        for step, batch in enumerate(perm.split(config.batch_size), start=1):
            x = likelihood.prepare(train_images[batch])
            terms = model.elbo(x)
            loss = -terms.elbo.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += -terms.elbo.detach().sum()
            if observer:
                observer.on_step(step)
        train_neg_elbo = total.item() / n  # .item() waits for the device: the timing is honest
        seconds = time.perf_counter() - started
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
        }
        history.append(metrics)
        with open(metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        with torch.no_grad():
            pictures = likelihood.mean(model.decode(sample_z))
        write_bytes_atomic(run_dir / "samples" / f"epoch-{epoch:03d}.png", grid_png(pictures))
        save_model(run_dir / MODEL_FILE, model, {**info, "metrics": metrics})
        if observer:
            observer.on_epoch_end(metrics)
    return TrainResult(run_dir=run_dir, model_path=run_dir / MODEL_FILE, metrics=history)


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
