"""``vae train``: the flags, a --config file or a run to --resume, made into one TrainConfig."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from vaecli.cli.common import (
    ARGV,
    MAX_PROCESSES,
    DataDirOpt,
    DataOptOpt,
    DeviceOpt,
    ForceOpt,
    SeedOpt,
    given_on_command_line,
    given_options,
)
from vaecli.cli.train_options import (
    ArchOpt,
    ArchOptionOpt,
    BatchSizeOpt,
    BetaOpt,
    BinsOpt,
    CallbackOpt,
    CallbackOptionOpt,
    CheckpointEveryOpt,
    CompileOpt,
    ConfigOpt,
    DataNameOpt,
    EmaOpt,
    EpochsOpt,
    FreeBitsOpt,
    GradClipOpt,
    GradSkipOpt,
    HiddenOpt,
    IwSamplesOpt,
    KeepOpt,
    KlWarmupOpt,
    LatentDimOpt,
    LikelihoodOpt,
    LikelihoodOptionOpt,
    LimitTestOpt,
    LimitTrainOpt,
    LogOpt,
    LrOpt,
    LrScheduleOpt,
    ModelOpt,
    ModelOptionOpt,
    NprocOpt,
    ObjectiveOpt,
    ObjectiveOptionOpt,
    OnNanOpt,
    OutOpt,
    PatienceOpt,
    PrecisionOpt,
    PriorOpt,
    PriorOptionOpt,
    QuietOpt,
    ResumeOpt,
    SigmaOpt,
    StreamOpt,
    WeightDecayOpt,
)
from vaecli.config import TrainConfig
from vaecli.console import ConsoleObserver
from vaecli.errors import UsageError, VaeError


def train(
    ctx: typer.Context,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    data: DataNameOpt = "mnist",
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    likelihood: LikelihoodOpt = TrainConfig.likelihood,
    likelihood_opt: LikelihoodOptionOpt = None,
    sigma: SigmaOpt = None,
    bins: BinsOpt = None,
    arch: ArchOpt = TrainConfig.arch,
    arch_opt: ArchOptionOpt = None,
    hidden: HiddenOpt = None,
    latent_dim: LatentDimOpt = TrainConfig.latent_dim,
    prior: PriorOpt = TrainConfig.prior,
    prior_opt: PriorOptionOpt = None,
    model: ModelOpt = TrainConfig.model,
    model_opt: ModelOptionOpt = None,
    epochs: EpochsOpt = TrainConfig.epochs,
    batch_size: BatchSizeOpt = TrainConfig.batch_size,
    lr: LrOpt = TrainConfig.lr,
    lr_schedule: LrScheduleOpt = TrainConfig.lr_schedule,
    weight_decay: WeightDecayOpt = TrainConfig.weight_decay,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    limit_train: LimitTrainOpt = None,
    limit_test: LimitTestOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    on_nan: OnNanOpt = TrainConfig.on_nan,
    precision: PrecisionOpt = TrainConfig.precision,
    compile: CompileOpt = TrainConfig.compile,
    nproc: NprocOpt = None,
    objective: ObjectiveOpt = None,
    objective_opt: ObjectiveOptionOpt = None,
    beta: BetaOpt = None,
    kl_warmup: KlWarmupOpt = None,
    free_bits: FreeBitsOpt = None,
    iw_samples: IwSamplesOpt = None,
    grad_clip: GradClipOpt = TrainConfig.grad_clip,
    grad_skip: GradSkipOpt = TrainConfig.grad_skip,
    ema: EmaOpt = TrainConfig.ema,
    keep: KeepOpt = TrainConfig.keep,
    patience: PatienceOpt = TrainConfig.patience,
    stream: StreamOpt = TrainConfig.stream,
    callback: CallbackOpt = None,
    callback_opt: CallbackOptionOpt = None,
    log: LogOpt = None,
) -> None:
    """Train a VAE; prints the run folder on stdout when done."""
    from vaecli.train import train as run_training

    flags = _train_flags(locals())
    if nproc is not None:
        _start_torchrun(nproc)
    chosen = _chosen_config(ctx, config, resume, flags)
    result = run_training(chosen, ConsoleObserver(quiet), resume=resume is not None)
    if result.is_main:
        print(result.run_dir)


#: vae train's parameters that are TrainConfig settings of the same name, as typed.
PLAIN_FLAGS = ("data", "data_dir", "likelihood", "arch", "latent_dim", "prior", "model", "epochs",
               "batch_size", "lr", "lr_schedule", "weight_decay",
               "seed", "device", "out", "force", "limit_train", "limit_test",
               "checkpoint_every", "on_nan", "precision", "compile", "grad_clip", "grad_skip",
               "ema", "keep", "patience", "stream")  # fmt: skip


def _train_flags(given: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig settings from ``vae train``'s parameters ``given``: the KEY=VALUE options
    parsed, and the shortcut flags (--hidden, --sigma, --bins, --beta, ...) folded into them."""
    from vaecli.options import parse_key_values

    arch_options = parse_key_values(given["arch_opt"] or [], "--arch-opt")
    if given["hidden"] is not None:
        arch_options["hidden"] = given["hidden"]
    likelihood_options = parse_key_values(given["likelihood_opt"] or [], "--likelihood-opt")
    likelihood_options.update({k: given[k] for k in ("sigma", "bins") if given[k] is not None})
    objective_name, objective_options = _objective_flags(
        given["objective"], parse_key_values(given["objective_opt"] or [], "--objective-opt"), given["beta"],
        given["kl_warmup"], given["free_bits"], given["iw_samples"],
    )  # fmt: skip
    return {
        **{key: given[key] for key in PLAIN_FLAGS},
        "data_options": parse_key_values(given["data_opt"] or [], "--data-opt"),
        "likelihood_options": likelihood_options,
        "arch_options": arch_options,
        "prior_options": parse_key_values(given["prior_opt"] or [], "--prior-opt"),
        "model_options": parse_key_values(given["model_opt"] or [], "--model-opt"),
        "objective": objective_name,
        "objective_options": objective_options,
        "callbacks": _callback_flags(
            [*(given["callback"] or []), *(given["log"] or [])], given["callback_opt"] or []
        ),
    }


OPTION_KEYS = {"data_options", "arch_options", "likelihood_options", "prior_options", "model_options",
               "objective_options", "callbacks"}  # fmt: skip


def _chosen_config(
    ctx: typer.Context, config: str | None, resume: str | None, flags: dict[str, Any]
) -> TrainConfig:
    """The run's settings: the flags alone, a --config file's under them, or a --resume'd run's."""
    if config is not None and resume is not None:
        raise UsageError("give --config or --resume, not both (a run resumes with its own config.yaml)")
    if resume is not None:
        return _resumed_config(ctx, resume, flags)
    if config is not None:
        return _file_config(ctx, config, flags)
    return TrainConfig(**flags)


def _resumed_config(ctx: typer.Context, resume: str, flags: dict[str, Any]) -> TrainConfig:
    """The run's own config.yaml, with what may change on a resume taken from the flags typed."""
    from vaecli.config import config_from_mapping, load_config_file
    from vaecli.training.run import require_run_parts

    run_config = Path(resume) / "config.yaml"
    if not run_config.is_file():
        raise VaeError(f"{resume} is not a vaecli run folder (it has no config.yaml)")
    require_run_parts(Path(resume))
    base = load_config_file(run_config)
    _refuse_on_resume(ctx, resume)
    given = given_on_command_line(ctx, RESUME_MAY_CHANGE)
    settings = {**vars(base), **{k: flags[k] for k in given if k in flags}, "out": resume}
    if "callbacks" in given:
        settings["callbacks"] = {**base.callbacks, **flags["callbacks"]}
    return config_from_mapping(settings, "--resume")


def _file_config(ctx: typer.Context, path: str, flags: dict[str, Any]) -> TrainConfig:
    """A config file's settings, overridden by the flags typed (option flags add to its options)."""
    from vaecli.config import config_from_mapping, load_config_file

    base = vars(load_config_file(path))
    given = given_on_command_line(ctx, set(flags))
    merged = {**base, **{k: flags[k] for k in given}}
    for key in given & OPTION_KEYS:
        merged[key] = {**base[key], **flags[key]}
    for part in ("objective", "prior"):  # another part's options replace the file's
        if part in given and flags[part] != base[part]:
            merged[f"{part}_options"] = flags[f"{part}_options"]
    return config_from_mapping(merged, path)


ELBO_SHORTCUTS = {"beta": "beta", "kl_warmup": "warmup", "free_bits": "free_bits"}
#: What ``vae train --resume`` may be told: where the run runs and what watches it.
RESUME_MAY_CHANGE = {"device", "quiet", "checkpoint_every", "on_nan", "data_dir", "precision", "compile",
                     "callbacks"}  # fmt: skip
RESUME_FLAGS = {"resume", "device", "quiet", "checkpoint_every", "on_nan", "data_dir", "precision", "compile",
                "callback", "callback_opt", "log", "nproc"}  # fmt: skip


def _objective_flags(
    name: str | None,
    options: dict[str, Any],
    beta: float | None,
    kl_warmup: float | None,
    free_bits: float | None,
    iw_samples: int | None,
) -> tuple[str, dict[str, Any]]:
    """The objective and its options from --objective, --objective-opt and the shortcuts."""
    elbo = {"beta": beta, "kl_warmup": kl_warmup, "free_bits": free_bits}
    typed = [flag for flag, value in elbo.items() if value is not None]
    if iw_samples is not None:
        if name not in (None, "iwae"):
            raise UsageError(f"--iw-samples trains the iwae objective, not --objective {name}")
        name, options = "iwae", {**options, "k": iw_samples}
    chosen = name or TrainConfig.objective
    if typed and chosen.rpartition(":")[2] != "elbo":
        flags = ", ".join("--" + flag.replace("_", "-") for flag in typed)
        raise UsageError(f"{flags}: an option of the elbo objective, not of {chosen}")
    options.update({ELBO_SHORTCUTS[flag]: elbo[flag] for flag in typed})
    return chosen, options


def _callback_flags(names: list[str], options: list[str]) -> dict[str, dict[str, Any]]:
    """{NAME: {KEY: VALUE}} from --callback/--log NAME and --callback-opt NAME.KEY=VALUE."""
    from vaecli.options import parse_key_values

    chosen: dict[str, dict[str, Any]] = {name: {} for name in names}
    for item in options:
        ((target, value),) = parse_key_values([item], "--callback-opt").items()
        name, dot, key = target.rpartition(".")
        if not dot or not name or not key:
            raise UsageError(f"--callback-opt '{item}' is not of the form NAME.KEY=VALUE")
        if name not in chosen:
            raise UsageError(f"--callback-opt '{item}': no --callback {name} (or --log {name}) was given")
        chosen[name][key] = value
    return chosen


def _refuse_on_resume(ctx: typer.Context, run: str) -> None:
    """One line naming the first flag typed on --resume that a resumed run cannot change."""
    for param in ctx.command.params:
        if param.name in given_options(ctx) - RESUME_FLAGS:
            flag = max(param.opts, key=len)
            why = (
                "the learning-rate schedule and the run's length were set when it began"
                if param.name == "epochs"
                else "a run resumes with the settings in its config.yaml"
            )
            raise UsageError(
                f"{flag} cannot change when resuming {run} ({why}); to train differently, start a new "
                f"run from its settings: vae train --config {Path(run) / 'config.yaml'} {flag} ... --out NEW"
            )


def _start_torchrun(nproc: int) -> None:
    """Replace this process by torchrun running the same ``vae train`` as ``nproc`` processes."""
    from vaecli.distributed import torchrun_command

    if nproc > MAX_PROCESSES:
        raise UsageError(f"--nproc must be at most {MAX_PROCESSES}, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--nproc starts torchrun itself: do not give it under torchrun")
    argv = list(ARGV)
    for i, arg in enumerate(argv):  # drop --nproc N / --nproc=N, keep everything else as typed
        if arg == "--nproc":
            argv = argv[:i] + argv[i + 2 :]
            break
        if arg.startswith("--nproc="):
            argv = argv[:i] + argv[i + 1 :]
            break
    command = torchrun_command(nproc, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
