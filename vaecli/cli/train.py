"""``vae train``: the flags, a --config file or a run to --resume, made into one TrainConfig."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

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
from vaecli.config import TrainConfig
from vaecli.console import ConsoleObserver
from vaecli.errors import UsageError, VaeError


def train(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(help="A YAML file of training options (keys as in config.yaml); flags override it."),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue the run in this folder from its checkpoint.")
    ] = None,
    data: Annotated[str, typer.Option(help="Dataset name (see the registry), e.g. mnist.")] = "mnist",
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    likelihood: Annotated[
        str,
        typer.Option(
            help="Decoder distribution: bernoulli, gaussian, categorical (or a plugin's); auto: bernoulli "
            "for MNIST and grey images, gaussian for colour ones."
        ),
    ] = TrainConfig.likelihood,
    likelihood_opt: Annotated[
        list[str] | None, typer.Option(help="A likelihood option KEY=VALUE (repeatable).")
    ] = None,
    sigma: Annotated[
        str | None,
        typer.Option(help="gaussian: a fixed sigma, 'learned' (one value) or 'pixel' (per pixel)."),
    ] = None,
    bins: Annotated[int | None, typer.Option(help="categorical: grey levels K, 2 to 256.")] = None,
    arch: Annotated[str, typer.Option(help="Architecture: mlp or conv (or a plugin's).")] = TrainConfig.arch,
    arch_opt: Annotated[
        list[str] | None, typer.Option(help="An architecture option KEY=VALUE (repeatable).")
    ] = None,
    hidden: Annotated[
        str | None, typer.Option(help="Hidden widths, e.g. 512,256 (same as --arch-opt hidden=...).")
    ] = None,
    latent_dim: Annotated[int, typer.Option(help="Size of z.")] = TrainConfig.latent_dim,
    prior: Annotated[
        str, typer.Option(help="Prior p(z): normal (N(0, I)), vamp (VampPrior) or mog (a learned mixture).")
    ] = TrainConfig.prior,
    prior_opt: Annotated[
        list[str] | None, typer.Option(help="A prior option KEY=VALUE (repeatable), e.g. k=500.")
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model: vae (one latent vector) or hierarchical (groups of latents).")
    ] = TrainConfig.model,
    model_opt: Annotated[
        list[str] | None, typer.Option(help="A model option KEY=VALUE (repeatable), e.g. groups=2,2.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate (peak of the schedule).")] = TrainConfig.lr,
    lr_schedule: Annotated[
        str, typer.Option(help="cosine (to 0 over the run) or constant.")
    ] = TrainConfig.lr_schedule,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[
        str | None, typer.Option(help="Run folder (default: runs/DATA-LIKELIHOOD-ARCH[-N]).")
    ] = None,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or epoch rows.")] = False,
    limit_train: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    limit_test: Annotated[int | None, typer.Option(help="Use only the first N test images.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Also write checkpoint.safetensors every N steps (always: each epoch).")
    ] = None,
    on_nan: Annotated[
        str, typer.Option(help="A non-finite loss or gradient: stop (default) or skip the batch.")
    ] = TrainConfig.on_nan,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on CUDA where supported, else 32), 32, bf16 or 16-mixed (fp16 + scaler)."
        ),
    ] = TrainConfig.precision,
    compile: Annotated[
        bool, typer.Option("--compile", help="Compile the training step with torch.compile.")
    ] = TrainConfig.compile,
    nproc: Annotated[
        int | None,
        typer.Option(help="Train with N processes on this machine (starts torchrun; DDP, gloo on CPU)."),
    ] = None,
    objective: Annotated[
        str | None, typer.Option(help="Training objective: elbo (default) or iwae (or a plugin's).")
    ] = None,
    objective_opt: Annotated[
        list[str] | None, typer.Option(help="An objective option KEY=VALUE (repeatable).")
    ] = None,
    beta: Annotated[
        float | None, typer.Option(help="elbo: weight of the KL term (beta-VAE; 1 is the ELBO).")
    ] = None,
    kl_warmup: Annotated[
        float | None,
        typer.Option(help="elbo: raise the KL weight linearly from 0 to --beta over this many epochs."),
    ] = None,
    free_bits: Annotated[
        float | None,
        typer.Option(help="elbo: free bits, the least KL in nats per latent dimension (batch mean)."),
    ] = None,
    iw_samples: Annotated[
        int | None, typer.Option(help="Train on the importance-weighted bound with K samples (iwae).")
    ] = None,
    grad_clip: Annotated[
        float | None, typer.Option(help="Scale the gradients down to this L2 norm when above it.")
    ] = TrainConfig.grad_clip,
    grad_skip: Annotated[
        float | None,
        typer.Option(help="Skip updates whose gradient norm is above this (counted as outlier_steps)."),
    ] = TrainConfig.grad_skip,
    ema: Annotated[
        float,
        typer.Option(
            help="Average the weights with this decay (e.g. 0.999) for eval, samples and the model file."
        ),
    ] = TrainConfig.ema,
    stream: Annotated[
        str,
        typer.Option(
            help="Keep the training images on the host and feed batches in a background pipeline: "
            "auto (when they do not fit the device's memory), on or off."
        ),
    ] = TrainConfig.stream,
    callback: Annotated[
        list[str] | None, typer.Option(help="Run a registered callback NAME during training (repeatable).")
    ] = None,
    callback_opt: Annotated[
        list[str] | None, typer.Option(help="A callback option NAME.KEY=VALUE (repeatable).")
    ] = None,
    log: Annotated[
        list[str] | None,
        typer.Option(help="Log to a logger callback: tensorboard (RUN/tensorboard/; same as --callback)."),
    ] = None,
) -> None:
    """Train a VAE; prints the run folder on stdout when done."""
    from vaecli.train import train as run_training

    flags = _train_flags(locals())
    if nproc is not None:
        if nproc > MAX_PROCESSES:
            raise UsageError(f"--nproc must be at most {MAX_PROCESSES}, got {nproc}")
        _start_torchrun(nproc)
    if config is not None and resume is not None:
        raise UsageError("give --config or --resume, not both (a run resumes with its own config.yaml)")
    if resume is not None:
        chosen = _resumed_config(ctx, resume, flags)
    elif config is not None:
        chosen = _file_config(ctx, config, flags)
    else:
        chosen = TrainConfig(**flags)
    result = run_training(chosen, ConsoleObserver(quiet), resume=resume is not None)
    if result.is_main:
        print(result.run_dir)


#: vae train's parameters that are TrainConfig settings of the same name, as typed.
PLAIN_FLAGS = ("data", "data_dir", "likelihood", "arch", "latent_dim", "prior", "model", "epochs",
               "batch_size",
               "lr", "lr_schedule", "seed", "device", "out", "force", "limit_train", "limit_test",
               "checkpoint_every", "on_nan", "precision", "compile", "grad_clip", "grad_skip",
               "ema", "stream")  # fmt: skip


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
