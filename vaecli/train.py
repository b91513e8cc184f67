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
from vaecli import distributed, registry
from vaecli.checkpoint import (
    CHECKPOINT_FILE,
    Position,
    TrainingState,
    checkpoint_format_version,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from vaecli.config import TrainConfig
from vaecli.datasets import ImageData, load_dataset
from vaecli.devices import choose_device
from vaecli.distributed import Ranks
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import TEST_PREPARE_SEED, mean_elbo, prepare_fixed
from vaecli.fileio import write_bytes_atomic, write_text_atomic
from vaecli.images import grid_png
from vaecli.model import VAE, Elbo, ModelSpec, build_model
from vaecli.modelfile import MODEL_FILE, save_model, upgrade_architecture_options
from vaecli.pictures import Inputs, reconstruction_grid, reconstructions
from vaecli.plots import CURVES_FILE, curves_png
from vaecli.precision import Precision, choose_precision
from vaecli.runs import check_run_dir, default_run_dir, make_run_dir

SAMPLE_SEED = 0  # the per-epoch sample grids decode the same z every epoch
RECON_IMAGES = 16  # the per-epoch reconstruction grids show the first test images
RECONSTRUCTIONS_DIR = "reconstructions"


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
    is_main: bool = True  # False on the ranks of a distributed run other than 0


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
    return " and ".join("KL" if b == "kl" else b for b in bad) or "loss (on another rank)"


def train(config: TrainConfig, observer: TrainObserver | None = None, resume: bool = False) -> TrainResult:
    """Train a VAE as ``config`` says, writing the run folder as it goes. With ``resume`` the
    run folder ``config.out`` is continued from its checkpoint, to the same weights an
    uninterrupted run would reach. Started by torchrun, each process trains on its share of
    every batch and only rank 0 reports, writes files and checkpoints."""
    config.validate()
    ranks = Ranks.from_env()
    device = ranks.device(choose_device(config.device))
    precision = choose_precision(config.precision, device)
    distributed.start(ranks, device)
    try:
        return _train(config, observer if ranks.is_main else None, resume, ranks, device, precision)
    finally:
        distributed.stop(ranks)


def compile_model(net: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` the training forward pass (fused kernels, less per-step overhead)."""
    return torch.compile(net)  # type: ignore[return-value]


def compile_now(
    net: torch.nn.Module,
    model: VAE,
    images: torch.Tensor,
    batch_sizes: list[int],
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    precision: Precision,
) -> None:
    """Run the compiled ``net`` forward and backward once per batch size an epoch has, on the
    first training images, so that compiling happens now: before the run folder is written or an
    old run replaced (a missing C++ compiler, or a layer the compiler cannot take, fails with one
    line and leaves nothing behind), and outside the epochs' timing. The model's weights, buffers
    and gradients and the random generators are left as they were."""
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    rng = rng_states(device)
    try:
        for size in batch_sizes:
            x = model.likelihood.prepare(images[:size])
            eps = torch.randn(size, config.latent_dim, device=device)
            part = ranks.shard(size)
            with precision.autocast(device):
                terms = net(x[part], eps[part])
            terms.elbo.float().sum().backward()
    except Exception as exc:
        what = str(exc).split("Set TORCHDYNAMO_VERBOSE")[0].strip()  # (torch's hints for its developers)
        raise VaeError(
            f"--compile: torch.compile cannot compile this model here ({type(exc).__name__}: {what}); "
            "train without --compile"
        ) from exc
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        set_rng_states(rng, device)


def _train(
    config: TrainConfig,
    observer: TrainObserver | None,
    resume: bool,
    ranks: Ranks,
    device: torch.device,
    precision: Precision,
) -> TrainResult:
    stem = f"{config.data}-{config.likelihood}-{config.arch}".replace(":", "_").replace("/", "_")
    run_dir = Path(config.out) if config.out else default_run_dir(stem)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if resume and not checkpoint_path.is_file():
        raise VaeError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    if not resume and ranks.is_main:
        check_run_dir(run_dir, config.force)

    train_data, test_data = load_split(config, "train"), load_split(config, "test")
    if train_data.shape != test_data.shape:
        raise UsageError(f"dataset '{config.data}': train and test images differ in shape")
    torch.manual_seed(config.seed)
    arch_options = dict(config.arch_options)
    if resume:  # a run begun by an older vaecli is rebuilt as that vaecli built it
        distribution = registry.architectures.entry(config.arch).distribution
        version = checkpoint_format_version(checkpoint_path)
        arch_options = upgrade_architecture_options(config.arch, distribution, arch_options, version)
    spec = ModelSpec(
        input_shape=train_data.shape,
        latent_dim=config.latent_dim,
        architecture=config.arch,
        architecture_options=arch_options,
        likelihood=config.likelihood,
        likelihood_options=dict(config.likelihood_options),
    )
    model = build_model(spec).to(device)
    likelihood = model.likelihood

    if not resume:  # (a resumed run's offset and likelihood come from its checkpoint)
        model.start_from_data(train_data.images)
    train_images = train_data.images.to(device)
    test_x = prepare_fixed(likelihood, test_data.images.to(device), TEST_PREPARE_SEED)
    sample_z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED)).to(
        device
    )
    recon_images = test_data.images[:RECON_IMAGES].to(device)
    recon_inputs = Inputs(images=recon_images, x=test_x[:RECON_IMAGES])
    net: torch.nn.Module = model
    if ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Every rank fits the same output offset, and it never changes: no buffer broadcasts.
        net = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
        )
    n = len(train_data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    compile_started = time.perf_counter()
    if config.compile:
        net = compile_model(net)
        # An epoch's batches, then its last, smaller one: compiled in the order training meets them.
        last = n - (steps_per_epoch - 1) * config.batch_size
        sizes = list(dict.fromkeys([min(config.batch_size, n), last]))
        compile_now(net, model, train_images, sizes, config, ranks, device, precision)
    compile_seconds = time.perf_counter() - compile_started
    optimizer = make_optimizer(model, config.lr)
    scaler = precision.scaler(device)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine"
        else None
    )

    # config.yaml holds the architecture's options with its defaults, as the model file does.
    arch_resolved = dict(model.spec.architecture_options) if model.spec else arch_options
    resolved = {**asdict(config), "arch_options": arch_resolved, "out": str(run_dir), "force": False}
    metrics_file = run_dir / "metrics.jsonl"
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, device)
        if scaler.is_enabled() and state.extra.get("scaler"):
            scaler.load_state_dict(state.extra["scaler"])
        set_rng_states(state.rng, device)
        position, order = state.position, state.order
        history = [m for m in _read_metrics(metrics_file) if m["epoch"] < position.epoch]
        if ranks.is_main:
            write_text_atomic(metrics_file, "".join(json.dumps(m) + "\n" for m in history))
    else:
        if ranks.is_main:
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
        """Rank 0 writes the checkpoint (every rank's state is the same)."""
        if ranks.is_main:
            extra = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
            state = TrainingState(position, rng_states(device), order if mid_epoch else None, extra)
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, state)

    def epoch_totals() -> list[float]:
        """-ELBO, reconstruction and KL summed over the epoch's images so far, over all ranks."""
        return distributed.all_sum(ranks, total).tolist()  # waits for the device

    params = [p for p in model.parameters() if p.requires_grad]
    # The run's wall clock, compiling, evaluation and files included, carried on across a resume.
    elapsed_before = history[-1].get("elapsed", 0.0) if history else 0.0
    run_started = time.perf_counter() - elapsed_before - position.seconds - compile_seconds
    with InterruptFlag() as interrupt:
        for epoch in range(position.epoch, config.epochs + 1):
            if observer:
                observer.on_epoch_start(epoch, config.epochs, steps_per_epoch)
            model.train()
            started, seconds_before = time.perf_counter(), position.seconds
            if position.step == 0:
                order = torch.randperm(n, device=device)
            # Running sums of -ELBO, reconstruction and KL, kept on the device (no per-step sync).
            # A checkpoint holds the sums over all ranks: resumed, rank 0 carries them on alone.
            carried = [position.total, position.reconstruction, position.kl] if ranks.is_main else [0.0] * 3
            total = torch.tensor(carried, dtype=torch.float64, device=device)
            batches = order.split(config.batch_size)
            for step in range(position.step + 1, steps_per_epoch + 1):
                # The whole batch's data and noise are drawn on every rank (the same numbers);
                # each rank computes the loss of its part. One process: the part is everything.
                # (index_select: on CPUs ten times the speed of train_images[batch].)
                x = likelihood.prepare(train_images.index_select(0, batches[step - 1]))
                eps = torch.randn(x.shape[0], config.latent_dim, device=device)
                part = ranks.shard(x.shape[0])
                with precision.autocast(device):
                    terms = net(x[part], eps[part])
                part_sum = -terms.elbo.float().sum()
                loss = part_sum * (ranks.world_size / x.shape[0])  # DDP averages over ranks
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                status = torch.stack([part_sum.detach(), *_grad_sums(params)])
                loss_sum, *grad_sums = distributed.all_sum(ranks, status).tolist()
                loss_ok, grads_ok = math.isfinite(loss_sum), all(map(math.isfinite, grad_sums))
                # float16 gradients overflow now and then: the scaler skips those steps itself.
                if not (loss_ok and (grads_ok or precision.scaled)):
                    what = "gradient" if loss_ok else _nonfinite_terms(terms)
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
                    scaler.step(optimizer)
                    scaler.update()
                    sums = [part_sum, -terms.reconstruction.float().sum(), terms.kl.float().sum()]
                    total += torch.stack(sums).detach()
                    position.seen += x.shape[0]
                if scheduler is not None:
                    scheduler.step()
                position.step = step
                if observer:
                    observer.on_step(step)
                signum = distributed.any_signal(ranks, interrupt.signum, device)
                if signum:
                    position.total, position.reconstruction, position.kl = epoch_totals()
                    position.seconds = seconds_before + time.perf_counter() - started
                    checkpoint(mid_epoch=True)
                    name = signal.Signals(signum).name
                    raise TrainingInterrupted(
                        f"{name}: stopped at epoch {epoch}, step {step} of {steps_per_epoch}; checkpoint "
                        f"written; continue with: vae train --resume {run_dir}",
                        signum,
                    )
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps_per_epoch:
                    position.total, position.reconstruction, position.kl = epoch_totals()
                    position.seconds = seconds_before + time.perf_counter() - started
                    checkpoint(mid_epoch=True)
            train_neg_elbo, train_reconstruction, train_kl = (
                t / max(position.seen, 1) for t in epoch_totals()
            )
            seconds = seconds_before + time.perf_counter() - started
            if not ranks.is_main:  # rank 0 evaluates and writes; the others go on to the next epoch
                position = Position(epoch=epoch + 1)
                continue
            test = mean_elbo(model, test_x)
            metrics = {
                "epoch": epoch,
                "train_neg_elbo": train_neg_elbo,
                "train_reconstruction": train_reconstruction,
                "train_kl": train_kl,
                "test_neg_elbo": test["neg_elbo"],
                "test_reconstruction": test["reconstruction"],
                "test_kl": test["kl"],
                **({"test_bits_per_dim": test["bits_per_dim"]} if "bits_per_dim" in test else {}),
                "images_per_s": n / seconds,
                "seconds": seconds,
                "elapsed": time.perf_counter() - run_started,
                **({"skipped_steps": position.skipped} if position.skipped else {}),
            }
            history.append(metrics)
            with open(metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            with torch.no_grad():
                pictures = likelihood.mean(model.decode(sample_z))
            write_bytes_atomic(run_dir / "samples" / f"epoch-{epoch:03d}.png", grid_png(pictures))
            recon = reconstruction_grid(recon_images, reconstructions(model, recon_inputs))
            write_bytes_atomic(run_dir / RECONSTRUCTIONS_DIR / f"epoch-{epoch:03d}.png", recon)
            write_bytes_atomic(run_dir / CURVES_FILE, curves_png(history))
            save_model(run_dir / MODEL_FILE, model, {**info, "metrics": metrics})
            position = Position(epoch=epoch + 1)
            checkpoint(mid_epoch=False)
            if observer:
                observer.on_epoch_end(metrics)
    return TrainResult(run_dir, run_dir / MODEL_FILE, history, ranks.is_main)


def _grad_sums(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each gradient's sum: inf or nan when any of its entries is (or when the entries' total
    overflows, which is no gradient to step with either). The cheapest such test: the step took
    twice as long with the norms."""
    return [p.grad.sum() for p in params if p.grad is not None]


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
