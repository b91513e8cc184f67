"""``TrainingRun``: everything one training run is made of, set up from a TrainConfig.

Setting up reads the data, builds the model (and its DDP and compiled wrappers), the optimiser
and schedule, and either restores a checkpoint (``--resume``) or creates the run folder; nothing
is written before every part has been built and checked.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

import vaecli
from vaecli import distributed, registry
from vaecli.checkpoint import (
    CHECKPOINT_FILE,
    Position,
    TrainingState,
    checkpoint_format_version,
    checkpoint_header,
    load_checkpoint,
    rng_states,
    save_checkpoint,
)
from vaecli.config import AUTO, TrainConfig
from vaecli.console import note
from vaecli.datasets import ImageData, absolute_data_dir, has_validation, load_dataset, suggest
from vaecli.devices import place
from vaecli.distributed import Ranks
from vaecli.epoch_choice import early_stop
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed
from vaecli.fileio import strict_json, write_text_atomic
from vaecli.modelfile import MODEL_FILE, read_header, upgrade_architecture_options
from vaecli.models import LatentVariableModel, ModelSpec, build_model
from vaecli.objectives import Objective, Progress, build_objective
from vaecli.precision import Precision
from vaecli.runs import (
    check_run_dir,
    default_run_dir,
    discard_unresumable,
    make_run_dir,
    remove_legacy_temporaries,
)
from vaecli.training.compiling import compile_now, make_forward
from vaecli.training.feeding import DeviceFeed, StreamedFeed, make_feed
from vaecli.training.optimiser import make_optimizer
from vaecli.training.stabilisers import GradientLimit, WeightAverage
from vaecli.training.step import NanGuard, check_objective

METRICS_FILE = "metrics.jsonl"
TOTALS = ("loss", "total", "reconstruction", "kl")  # the epoch's running sums, in Position's names
# the epoch's images counted, steps skipped (non-finite) and outlier steps, kept with the sums
COUNTS = ("seen", "skipped", "outliers")


@dataclass
class TrainingRun:
    """One run: its settings, parts, data, and where it stands."""

    config: TrainConfig
    ranks: Ranks
    device: torch.device
    precision: Precision
    run_dir: Path
    model: LatentVariableModel
    #: The step's forward pass from a batch (a BatchForward): around the model, in DDP for a
    #: distributed run, compiled with --compile.
    forward: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: Any
    feed: DeviceFeed | StreamedFeed  # the training images, and how batches of them reach the step
    test_images: torch.Tensor  # uint8, on the device
    test_x: torch.Tensor  # the test images prepared once with a fixed seed
    info: dict[str, Any]  # what the model file records besides the weights
    position: Position = field(default_factory=Position)
    order: torch.Tensor | None = None  # this epoch's shuffling of the training images
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0  # perf_counter() at the run's start, its earlier sessions included
    #: Running sums over the epoch's images so far, on the device (no per-step sync): the loss,
    #: -ELBO, reconstruction and KL (a resumed rank 0 carries the checkpoint's on alone).
    totals: torch.Tensor | None = None
    #: The last step's loss per image, on the device (read it only now and then: it syncs).
    last_loss: torch.Tensor | None = None
    epoch_started: float = 0.0
    epoch_seconds_before: float = 0.0
    pictures: tuple[int, dict[str, torch.Tensor]] | None = None  # (epoch, its pictures), drawn once
    guard: NanGuard | None = None  # the steps' NaN guard, set when the loop starts
    #: The split of ``test_images``, which the epoch's row is on: "val" where the data have one.
    row_split: str = "test"
    limit: GradientLimit | None = None  # --grad-clip, --grad-skip
    average: WeightAverage | None = None  # --ema

    def evaluation_weights(self) -> contextlib.AbstractContextManager[None]:
        """The weights evaluation, pictures and the model file use: the moving average with --ema,
        else the model's own."""
        return self.average.swapped_in() if self.average is not None else contextlib.nullcontext()

    @property
    def images(self) -> int:
        return len(self.feed)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.images / self.config.batch_size)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def progress(self, epoch: int, step: int) -> Progress:
        """Where training stands before step ``step`` (1-based) of ``epoch``."""
        return Progress((epoch - 1) + (step - 1) / self.steps_per_epoch, self.config.epochs)

    def start_totals(self) -> None:
        names = (*TOTALS, *COUNTS)
        carried = [float(getattr(self.position, n)) if self.ranks.is_main else 0.0 for n in names]
        self.totals = torch.tensor(carried, dtype=torch.float64, device=self.device)

    def count_step(self, sums: torch.Tensor, counted: torch.Tensor, images: int,
                   outlier: torch.Tensor | None = None) -> None:  # fmt: skip
        """Add a step's sums (loss, -ELBO, reconstruction, KL) to the epoch's if ``counted`` (a 0-d
        bool tensor: no wait for the device); rank 0 counts its images, or the step as skipped,
        and the step as an outlier (``outlier``: its update was not applied for --grad-skip)."""
        share = 1.0 if self.ranks.is_main else 0.0
        outliers = outlier.double() * share if outlier is not None else counted.double() * 0.0
        counts = torch.stack([counted.double() * (images * share), (~counted).double() * share, outliers])
        assert self.totals is not None
        self.totals += torch.cat([torch.where(counted, sums.double(), 0.0), counts])

    def epoch_totals(self) -> list[float]:
        """The epoch's running sums so far, over all ranks (waits for the device); the position's
        ``seen`` and ``skipped`` are set from them."""
        assert self.totals is not None
        values = distributed.all_sum(self.ranks, self.totals).tolist()
        self.position.seen, self.position.skipped, self.position.outliers = (
            round(v) for v in values[len(TOTALS) :]
        )
        return values[: len(TOTALS)]

    def save_checkpoint(self, mid_epoch: bool) -> None:
        """Write the checkpoint (rank 0; every rank's state is the same). Mid-epoch, the epoch's
        sums and seconds so far are stored with it, which every rank takes part in. The guard reads
        the device first: a checkpoint is never written after a non-finite step under --on-nan stop."""
        if self.guard is not None:
            self.guard.read()
        if mid_epoch:
            for name, value in zip(TOTALS, self.epoch_totals(), strict=True):
                setattr(self.position, name, value)
            self.position.seconds = self.epoch_seconds_before + time.perf_counter() - self.epoch_started
        if self.ranks.is_main:
            extra = {"parts": self.info["parts"]}  # (so a resume can say which package is missing)
            if self.scaler.is_enabled():
                extra["scaler"] = self.scaler.state_dict()
            order = self.order if mid_epoch else None
            own = {}
            if self.average is not None:
                own, extra["ema_updates"] = self.average.state_tensors(), self.average.updates
            state = TrainingState(self.position, rng_states(self.device), order, extra, own)
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scheduler, state)


#: Fewer optimiser steps than this per epoch is warned about (450 images at batch 384: 2 steps).
FEW_STEPS = 10
#: The likelihood a shortcut option implies under ``auto``: ``--sigma`` gaussian, ``--bins`` categorical.
IMPLIED_BY_OPTION = {"sigma": "gaussian", "bins": "categorical"}


def complete_config(config: TrainConfig, tell: bool = True, infer_options: bool = True) -> TrainConfig:
    """A run's settings with what its data suggest filled in: options the dataset infers (a
    folder's image size and channels) and, for ``likelihood: auto``, the likelihood that suits the
    images (or the one a shortcut option belongs to); each choice is said in one line (``tell``)."""
    config = canonical_names(config)
    likelihood = config.likelihood
    if likelihood == AUTO:
        options = config.likelihood_options
        implied = {key: IMPLIED_BY_OPTION[key] for key in options if key in IMPLIED_BY_OPTION}
        if len(set(implied.values())) > 1:
            owners = " and ".join(f"{key} is {name}'s" for key, name in implied.items())
            raise UsageError(f"options of two likelihoods ({owners}): choose one with --likelihood")
        likelihood = next(iter(implied.values()), AUTO)
    suggestion = suggest(config.data, dict(config.data_options), config.data_dir)
    auto = likelihood == AUTO
    told = (suggestion.options_note if infer_options else None, suggestion.likelihood_note if auto else None)
    for line in told if tell else ():
        if line:
            note(line)
    inferred = suggestion.options if infer_options else {}
    return replace(
        config,
        likelihood=suggestion.likelihood if auto else likelihood,
        data_options={**inferred, **config.data_options},
    )


def canonical_names(config: TrainConfig) -> TrainConfig:
    """The config with every part named as registered (``--data FashionMNIST``: ``fashion-mnist``),
    so that run folders, config.yaml and model files spell names one way."""
    names = {"data": registry.datasets, "arch": registry.architectures, "prior": registry.priors,
             "model": registry.models, "objective": registry.objectives}  # fmt: skip
    if config.likelihood != AUTO:
        names["likelihood"] = registry.likelihoods
    return replace(config, **{key: kind.canonical(getattr(config, key)) for key, kind in names.items()})


def warn_if_few_steps(config: TrainConfig, steps: int, images: int) -> None:
    """A whole dataset (not one cut by --limit-train) that makes epochs of a handful of steps."""
    if config.limit_train is None and steps < FEW_STEPS:
        warnings.warn(
            f"an epoch is only {steps} step{'s' if steps > 1 else ''} ({images} training images at "
            f"--batch-size {config.batch_size}),"
            f" so each changes the model little: a smaller --batch-size (e.g. {max(8, images // 20)}) or"
            " more --epochs trains it further",
            stacklevel=3,
        )


def choose_run_dir(config: TrainConfig, resume: bool) -> Path:
    """The run folder: ``--out``, else the first free ``runs/DATA-LIKELIHOOD-ARCH[-N]``; one to
    resume must hold a checkpoint."""
    body = config.arch if config.model == "vae" else config.model  # (a hierarchy has no --arch)
    stem = f"{config.data}-{config.likelihood}-{body}".replace(":", "_").replace("/", "_")
    run_dir = Path(config.out) if config.out else default_run_dir(stem)
    if resume and not (run_dir / CHECKPOINT_FILE).is_file():
        raise VaeError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    return run_dir


def load_split(config: TrainConfig, split: str, shape: tuple[int, ...] | None = None) -> ImageData:
    """The ``split`` of the configured dataset, cut to --limit-train/--limit-test (``shape``: as
    for :func:`load_dataset`)."""
    limit = config.limit_train if split == "train" else config.limit_test
    return load_dataset(config.data, split, config.data_options, config.data_dir, limit, shape)


def build_run_model(config: TrainConfig, data: ImageData, checkpoint: Path | None) -> LatentVariableModel:
    """The model, seeded with ``config.seed``; a run begun by an older vaecli (``checkpoint``
    given) is rebuilt as that vaecli built it, and a new one starts from the data."""
    torch.manual_seed(config.seed)
    arch_options = dict(config.arch_options)
    if checkpoint is not None:
        distribution = registry.architectures.entry(config.arch).distribution
        version = checkpoint_format_version(checkpoint)
        arch_options = upgrade_architecture_options(config.arch, distribution, arch_options, version)
    spec = ModelSpec(
        input_shape=data.shape,
        latent_dim=config.latent_dim,
        architecture=config.arch,
        architecture_options=arch_options,
        likelihood=config.likelihood,
        likelihood_options=dict(config.likelihood_options),
        prior=config.prior,
        prior_options=dict(config.prior_options),
        model=config.model,
        model_options=dict(config.model_options),
    )
    model = build_model(spec)
    if checkpoint is None:  # (a resumed run's offset and likelihood come from its checkpoint)
        model.start_from_data(data.images)
    return model


def wrap_model(run_model: LatentVariableModel, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model as training calls it: in DDP for a distributed run."""
    net: torch.nn.Module = run_model
    if ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Every rank fits the same output offset, and it never changes: no buffer broadcasts in
        # the forward pass (torch 2.14 renamed the switch, and warns on every rank at the old name).
        takes = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in takes else "broadcast_buffers": False}
        device_ids = [device] if device.type == "cuda" else None
        net = DistributedDataParallel(run_model, device_ids=device_ids, **no_sync)
    return net


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    if config.lr_schedule != "cosine":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)


def start_run(
    config: TrainConfig, resume: bool, ranks: Ranks, device: torch.device, precision: Precision, run_dir: Path
) -> TrainingRun:
    """Set up a run: a new one (its folder created, config.yaml written) or one resumed from its
    checkpoint (metrics.jsonl cut back to the checkpoint's epoch)."""
    if not resume and ranks.is_main:
        check_run_dir(run_dir, config.force)  # (a new run: checked to be free before any work)
    # The epoch's row is on the validation split when there is one: the test set is for vae eval.
    row_split = "val" if has_validation(config.data, config.data_options) else "test"
    train_data, test_data = load_split(config, "train"), load_split(config, row_split)
    if train_data.shape != test_data.shape:
        raise UsageError(f"dataset '{config.data}': train and test images differ in shape")
    objective = build_objective(config.objective, dict(config.objective_options))
    model = place(build_run_model(config, train_data, run_dir / CHECKPOINT_FILE if resume else None), device)
    if objective.dreg and not model.supports_dreg:
        raise UsageError(
            f"{registry.models.describe(config.model)} has no DReG estimator (--objective-opt dreg=true): "
            "train it with plain iwae"
        )
    feed = make_feed(config.stream, train_data, device, tell=ranks.is_main)
    test_images = test_data.images.to(device)
    if registry.objectives.entry(config.objective).distribution != "vaecli":  # (vaecli's own are tested)
        check_objective(objective, model, feed.sample(2), model.noise_dim())
    compile_started = time.perf_counter()
    net = wrap_model(model, ranks, device)
    forward = make_forward(net, model, objective, ranks, precision, device, config.compile)
    if config.compile:
        compile_now(forward, model, objective, feed, config, ranks, device)
    compile_seconds = time.perf_counter() - compile_started
    optimizer = make_optimizer(model, config.lr, compiled=config.compile, weight_decay=config.weight_decay)
    run = TrainingRun(
        config, ranks, device, precision, run_dir, model, forward, objective, optimizer,
        precision.scaler(device), None, feed, test_images,
        prepare_fixed(model.likelihood, test_images, TEST_PREPARE_SEED), {},
    )  # fmt: skip
    run.scheduler = make_scheduler(optimizer, config, run.steps_per_epoch)
    run.row_split = row_split
    run.limit = GradientLimit(
        [p for p in model.parameters() if p.requires_grad], config.grad_clip, config.grad_skip
    )
    run.average = WeightAverage(model, config.ema) if config.ema else None
    if ranks.is_main and not resume:
        warn_if_few_steps(config, run.steps_per_epoch, len(train_data))
    resolved = resolved_config(config, model, objective, run_dir)
    run.info = model_info(config, train_data, model, resolved)
    if resume:
        remove_legacy_temporaries(run_dir)
        restore(run)
    elif ranks.is_main:
        make_run_dir(run_dir, config.force)
        try:
            write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        except BaseException:
            discard_unresumable(run_dir)
            raise
    # The run's wall clock, compiling, evaluation and files included, carried on across a resume.
    elapsed_before = run.history[-1].get("elapsed", 0.0) if run.history else 0.0
    run.started = time.perf_counter() - elapsed_before - run.position.seconds - compile_seconds
    return run


def restore(run: TrainingRun) -> None:
    """Continue from the checkpoint: weights, optimiser, schedule, scaler, RNG states, position."""
    from vaecli.checkpoint import set_rng_states

    state = load_checkpoint(run.checkpoint_path, run.model, run.optimizer, run.scheduler, run.device)
    if state.position.epoch > run.config.epochs:
        raise VaeError(
            f"{run.run_dir} has finished its {run.config.epochs} epochs: nothing to resume (to train "
            f"longer, start a new run: vae train --config {run.run_dir / 'config.yaml'} --epochs N --out NEW)"
        )
    if run.scaler.is_enabled() and state.extra.get("scaler"):
        run.scaler.load_state_dict(state.extra["scaler"])
    set_rng_states(state.rng, run.device)
    run.position, run.order = state.position, state.order
    if run.average is not None:
        run.average.load(state.tensors, int(state.extra.get("ema_updates", 0)))
    metrics_file = run.run_dir / METRICS_FILE
    run.history = [m for m in read_metrics(metrics_file) if m["epoch"] < run.position.epoch]
    stopped = early_stop(run.history, run.row_split, run.config.patience)
    if stopped is not None:
        raise VaeError(f"{run.run_dir} {stopped}: nothing to resume")
    if run.ranks.is_main:
        write_metrics(metrics_file, run.history)


def resolved_config(
    config: TrainConfig, model: LatentVariableModel, objective: Objective, run_dir: Path
) -> dict[str, Any]:
    """config.yaml: the architecture's, the prior's and the objective's options with their
    defaults, as the model file holds them."""
    arch = dict(model.spec.architecture_options) if model.spec else dict(config.arch_options)
    data_dir = absolute_data_dir(config.data_dir) if config.data_dir else None  # (a relative one: from here)
    return {**asdict(config), "data_dir": data_dir, "arch_options": arch,
            "objective_options": objective.options(), "out": str(run_dir), "force": False,
            "prior_options": dict(model.spec.prior_options) if model.spec else dict(config.prior_options),
            "model_options": dict(model.spec.model_options) if model.spec else dict(config.model_options),
            **plugin_part_names(config)}  # fmt: skip


def plugin_part_names(config: TrainConfig) -> dict[str, str]:
    """The config's parts that come from plugins, as DIST:NAME: a package installed later that
    registers the same name is then never taken for them (vaecli's own take precedence over any
    plugin's, so their bare names are safe)."""
    kinds = {"data": "dataset", "arch": "architecture", "likelihood": "likelihood", "prior": "prior",
             "model": "model", "objective": "objective"}  # fmt: skip
    named = {}
    for key, kind in kinds.items():
        entry = registry.BY_KIND[kind].entry(getattr(config, key))
        if entry.distribution != "vaecli":
            named[key] = entry.qualified_name
    return named


def model_info(
    config: TrainConfig, data: ImageData, model: LatentVariableModel, resolved: dict[str, Any]
) -> dict[str, Any]:
    """What the model file records besides the weights (the metrics are added each epoch)."""
    parts = model_parts(config)
    return {
        "data": {
            "name": config.data,
            "options": config.data_options,
            "dir": absolute_data_dir(config.data_dir),
            "shape": list(data.shape),
            "dtype": "uint8",
            "preprocessing": model.likelihood.preprocessing(),
            **({"protocol": data.protocol} if data.protocol else {}),
        },
        "training": resolved,
        "parts": parts,
        "plugins": plugin_distributions(parts),
    }


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one strict-JSON row per epoch, the whole file written through a temporary."""
    write_text_atomic(path, "".join(strict_json(row) + "\n" for row in rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
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
    """Which distribution (and version) provides this run's dataset, architecture, likelihood,
    prior and objective."""
    parts = {}
    for kind, name in (
        ("dataset", config.data),
        ("architecture", config.arch),
        ("likelihood", config.likelihood),
        ("prior", config.prior),
        ("model", config.model),
        ("objective", config.objective),
    ):
        entry = registry.BY_KIND[kind].entry(name)
        parts[kind] = {"name": entry.name, "distribution": entry.distribution, "version": entry.version}
    return parts


def plugin_distributions(parts: dict[str, dict[str, str]]) -> dict[str, str]:
    """The distributions a model needs, with versions: vaecli and those providing its parts."""
    return {"vaecli": vaecli.__version__, **{p["distribution"]: p["version"] for p in parts.values()}}


def require_run_parts(run_dir: Path) -> None:
    """Check, before a run's config.yaml is read, that every part it was trained with is still
    installed: a missing plugin is one line naming the package to install (as the checkpoint,
    or else the model file, records it), not just an unknown name."""
    for kind, part in recorded_parts(run_dir).items():
        if kind in registry.BY_KIND and isinstance(part, dict) and isinstance(part.get("name"), str):
            registry.BY_KIND[kind].require(part["name"], part, str(run_dir))


def recorded_parts(run_dir: Path) -> dict[str, Any]:
    """The ``parts`` a run's checkpoint records (older checkpoints: its model file's); {} if neither."""
    try:
        if (run_dir / CHECKPOINT_FILE).is_file():
            parts = checkpoint_header(run_dir / CHECKPOINT_FILE).get("extra", {}).get("parts")
            if isinstance(parts, dict):
                return parts
        if (run_dir / MODEL_FILE).is_file():
            parts = read_header(run_dir / MODEL_FILE).get("parts")
            return parts if isinstance(parts, dict) else {}
    except (VaeError, AttributeError):
        pass  # (resuming reads both files again, and says what is wrong with them)
    return {}
