"""The ``vae`` command: parses options, prints, and sets exit codes. No maths here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import vaecli
from vaecli.config import MAX_SEED, EvalConfig, TrainConfig
from vaecli.console import ConsoleObserver, ProgressCounter, one_line, printable, progress_bar
from vaecli.errors import Stopped, UsageError, VaeError

try:  # typer >= 0.20 ships its own copy of click
    from typer._click import exceptions as click_exceptions
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions
    from click.core import ParameterSource

DEBUG_ENV = "VAECLI_DEBUG"

app = typer.Typer(
    name="vae",
    help="Variational autoencoders: train, sample, evaluate and encode.",
    add_completion=True,  # vae --install-completion: tab completion in bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed; the same seed gives the same result.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
DataDirOpt = Annotated[
    str | None,
    typer.Option(help="Where datasets live (default: $VAECLI_DATA_DIR, else ~/.cache/vaecli/data)."),
]
DataOptOpt = Annotated[list[str] | None, typer.Option(help="A dataset option KEY=VALUE (repeatable).")]
ModelArg = Annotated[str, typer.Argument(help="A model.safetensors file or a run folder.")]


def _version(value: bool) -> None:
    if value:
        print(f"vaecli {vaecli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help=f"Show tracebacks (also: {DEBUG_ENV}=1).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Variational autoencoders: train, sample, evaluate and encode."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


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
    given = _given_on_command_line(ctx, RESUME_MAY_CHANGE)
    settings = {**vars(base), **{k: flags[k] for k in given if k in flags}, "out": resume}
    if "callbacks" in given:
        settings["callbacks"] = {**base.callbacks, **flags["callbacks"]}
    return config_from_mapping(settings, "--resume")


def _file_config(ctx: typer.Context, path: str, flags: dict[str, Any]) -> TrainConfig:
    """A config file's settings, overridden by the flags typed (option flags add to its options)."""
    from vaecli.config import config_from_mapping, load_config_file

    base = vars(load_config_file(path))
    given = _given_on_command_line(ctx, set(flags))
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
    argv = list(_ARGV)
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


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters the user typed on the command line (not defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


def _given_on_command_line(ctx: typer.Context, allowed: set[str]) -> set[str]:
    """Config keys set by flags the user typed, mapped from the flags that feed them."""
    typed = given_options(ctx)
    feeds = {
        "data_opt": "data_options",
        "arch_opt": "arch_options",
        "hidden": "arch_options",
        "likelihood_opt": "likelihood_options",
        "prior_opt": "prior_options",
        "sigma": "likelihood_options",
        "bins": "likelihood_options",
        "objective_opt": "objective_options",
        "beta": "objective_options",
        "kl_warmup": "objective_options",
        "free_bits": "objective_options",
        "iw_samples": "objective_options",
        "callback": "callbacks",
        "callback_opt": "callbacks",
        "log": "callbacks",
    }
    keys = {feeds.get(name, name) for name in typed}
    if "iw_samples" in typed:
        keys.add("objective")
    return keys & allowed


def sample(
    model: ModelArg,
    n: Annotated[int, typer.Option("--n", help="How many images.")] = 64,
    seed: SeedOpt = 0,
    mode: Annotated[
        str,
        typer.Option(help="mean (expected pixels), sample (drawn pixels) or mode (categorical's argmax)."),
    ] = "mean",
    out: Annotated[str, typer.Option(help="Output file; - writes to stdout.")] = "samples.png",
    format: Annotated[
        str, typer.Option("--format", help="png (an image grid) or safetensors (z and images).")
    ] = "png",
    nrow: Annotated[int | None, typer.Option(help="Images per grid row (default: square).")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    temperature: Annotated[
        str,
        typer.Option(
            help="Scale of the prior's standard deviation (z ~ N(0, T^2 I)); a hierarchy takes "
            "one per group, top first, e.g. 1,0.8,0.6."
        ),
    ] = "1.0",
) -> None:
    """Draw images from a model: z ~ N(0, T^2 I) (T = 1: the prior), then the decoder."""
    from vaecli.sampling import encode_samples
    from vaecli.sampling import sample as draw

    if format not in ("png", "safetensors"):
        raise UsageError(f"unknown --format '{format}' (use png or safetensors)")
    if nrow is not None and nrow < 1:
        raise UsageError(f"--nrow must be at least 1, got {nrow}")
    _check_output(out, force)
    temperatures = parse_temperature(temperature)
    samples = draw(model, n=n, seed=seed, mode=mode, device=device, temperature=temperatures,
                   grid=format == "png")  # fmt: skip
    _write_output(out, encode_samples(samples, format, nrow))
    if out != "-":
        _note(f"wrote {n} samples to {out}")


def parse_temperature(text: str) -> float | list[float]:
    """``--temperature``: one number, or comma-separated numbers (one per latent group)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--temperature wants a number or comma-separated numbers, got '{text}'") from None
    return values[0] if len(values) == 1 else values


def plugins(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead.")] = False,
) -> None:
    """List every dataset, architecture, likelihood, prior, objective and callback, with its package."""
    import json

    from rich.table import Table

    from vaecli.registry import BY_KIND, survey

    statuses = survey()
    if json_output:
        groups: dict[str, list[dict[str, Any]]] = {f"{kind}s": [] for kind in BY_KIND}
        for status in statuses:
            groups[f"{status.entry.kind}s"].append(status.to_dict())
        print(json.dumps(groups, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("kind", "name", "package", "version", "status"):
        table.add_column(column)
    for status in statuses:
        entry = status.entry
        state = "ok" if status.error is None else f"[red]failed[/red]: {status.error}"
        if status.clashes:
            state += f" (also in {', '.join(status.clashes)}: name one as DIST:NAME)"
        table.add_row(entry.kind, entry.name, entry.distribution, entry.version, state)
    # One row a line where stdout is a pipe or file (`vae plugins | grep`), whatever its width.
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 1 << 12).print(table)


DataOpt = Annotated[
    str | None, typer.Option("--data", help="Dataset to take test images from (default: the model's own).")
]
ModeOpt = Annotated[
    str, typer.Option(help="mean (expected pixels), sample (drawn pixels) or mode (categorical's argmax).")
]


def _data_choice(data: str | None, data_dir: str | None, data_opt: list[str] | None) -> Any:
    from vaecli.options import parse_key_values
    from vaecli.pictures import DataChoice

    return DataChoice(data, data_dir, parse_key_values(data_opt or [], "--data-opt"))


def _write_picture(picture: Any, out: str) -> None:
    _write_output(out, picture.png)
    if out != "-":
        _note(f"wrote {out}: {picture.note}")


def reconstruct(
    model: ModelArg,
    paths: Annotated[
        list[str] | None, typer.Argument(help="Image files or folders (default: test images of --data).")
    ] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    n: Annotated[int, typer.Option("--n", help="How many test images (with --data).")] = 16,
    mode: ModeOpt = "mean",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "reconstructions.png",
    force: ForceOpt = False,
) -> None:
    """Originals (left column) beside their reconstructions decode(mu(x)) (right column)."""
    from vaecli.pictures import reconstruct as draw

    if paths and data is not None:
        raise UsageError("give image files or --data, not both")
    _check_output(out, force)
    picture = draw(model, paths or (), _data_choice(data, data_dir, data_opt), n, mode, seed, device)
    _write_picture(picture, out)


def interpolate(
    model: ModelArg,
    a: Annotated[str, typer.Argument(help="An image file, DATA:INDEX (e.g. mnist:3) or INDEX.")],
    b: Annotated[str, typer.Argument(help="An image file, DATA:INDEX or INDEX.")],
    steps: Annotated[int, typer.Option(help="Images in the row, both ends included (at least 2).")] = 10,
    slerp: Annotated[bool, typer.Option("--slerp", help="Along the great circle, not the line.")] = False,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    mode: ModeOpt = "mean",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "interpolation.png",
    force: ForceOpt = False,
) -> None:
    """Decode along the line (or --slerp) between the codes mu(A) and mu(B) of two images."""
    from vaecli.pictures import interpolate as draw

    _check_output(out, force)
    choice = _data_choice(data, data_dir, data_opt)
    _write_picture(draw(model, a, b, steps, slerp, choice, mode, seed, device), out)


def traverse(
    model: ModelArg,
    dims: Annotated[
        str | None,
        typer.Option(help="Latent dimensions, e.g. 0,1,5 (default: those with the highest KL)."),
    ] = None,
    range_: Annotated[
        float, typer.Option("--range", help="Sweep each dimension over [-R, R] prior standard deviations.")
    ] = 3.0,
    steps: Annotated[int, typer.Option(help="Images per row (at least 2).")] = 11,
    count: Annotated[int, typer.Option(help="Rows when --dims is not given.")] = 10,
    group: Annotated[
        str | None,
        typer.Option(
            help="Vary one latent group of a hierarchy (z1, z2, ...); --dims then number its dimensions."
        ),
    ] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    mode: ModeOpt = "mean",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "traversal.png",
    force: ForceOpt = False,
) -> None:
    """One row per latent dimension, swept over [-range, range] with the others at 0."""
    from vaecli.pictures import parse_dims
    from vaecli.pictures import traverse as draw

    chosen = parse_dims(dims) if dims is not None else None
    _check_output(out, force)
    choice = _data_choice(data, data_dir, data_opt)
    _write_picture(draw(model, chosen, range_, steps, count, choice, mode, seed, device, group), out)


def plot(
    run: Annotated[str, typer.Argument(help="A run folder (or its metrics.jsonl).")],
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "curves.png",
    force: ForceOpt = False,
) -> None:
    """Draw a run's training curves (-ELBO, reconstruction, KL per epoch) from metrics.jsonl."""
    from vaecli.plots import curves_png, read_metrics

    _check_output(out, force)
    rows = read_metrics(run)
    _write_output(out, curves_png(rows))
    if out != "-":
        _note(f"wrote {out}: {len(rows)} epochs")


def latent_map(
    model: ModelArg,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    n: Annotated[int | None, typer.Option("--n", help="A random subset of N test images.")] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "map.png",
    force: ForceOpt = False,
) -> None:
    """The test set's latent means in 2-D (PCA past 2 dimensions), coloured by label."""
    from vaecli.pictures import latent_map as draw

    _check_output(out, force)
    _write_picture(draw(model, _data_choice(data, data_dir, data_opt), n, seed, device), out)


def eval_command(
    model: ModelArg,
    data: Annotated[
        str | None, typer.Option(help="Dataset (default: the one the model was trained on).")
    ] = None,
    data_dir: DataDirOpt = None,
    data_opt: DataOptOpt = None,
    split: Annotated[
        str, typer.Option(help="test, train or val (where the data have one).")
    ] = EvalConfig.split,
    k: Annotated[int, typer.Option("--k", help="Importance samples per image.")] = EvalConfig.k,
    seed: SeedOpt = EvalConfig.seed,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Samples (images x samples) decoded at once; bounds memory (default: auto)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images.")] = None,
    device: DeviceOpt = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead.")] = False,
) -> None:
    """Score a model: -ELBO, its terms, importance-sampled log p(x), active units."""

    from vaecli.evaluation import evaluate_model
    from vaecli.fileio import strict_json
    from vaecli.options import parse_key_values

    config = EvalConfig(
        model=model,
        data=data,
        data_dir=data_dir,
        data_options=parse_key_values(data_opt or [], "--data-opt"),
        split=split,
        k=k,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        device=device,
    )
    with progress_bar("evaluating") as progress:
        report = evaluate_model(config, progress)
    if json_output:
        print(strict_json(report.to_dict(), indent=2))
    else:
        _print_eval_report(report)


def _print_eval_report(report: Any) -> None:
    from rich.table import Table

    src = report.source
    console = Console(soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"{src.get('model')}: {src.get('data')} {src.get('split')} split, {report.images} images, "
        f"k = {report.k}, seed {report.seed}"
    )
    bpd = report.bits_per_dim or {}
    table = Table(box=None, pad_edge=False)
    for column, justify in (("nats/image", "left"), ("mean", "right"), ("std. error", "right")):
        table.add_column(column, justify=justify)
    if bpd:
        table.add_column("bits/dim", justify="right")

    def row(name: str, value: float, stderr_: float | None = None, bits: float | None = None) -> None:
        cells = [name, f"{value:.2f}", "" if stderr_ is None else f"{stderr_:.2f}"]
        table.add_row(*cells, *([f"{bits:.4f}" if bits is not None else ""] if bpd else []))

    row("-ELBO", report.neg_elbo, report.neg_elbo_stderr, bpd.get("neg_elbo"))
    row("  reconstruction -E_q log p(x|z)", report.reconstruction)
    row("  KL(q(z|x) || p(z))", report.kl)
    row(f"-log p(x), importance-sampled (k = {report.k})", report.neg_log_px, report.neg_log_px_stderr,
        bpd.get("neg_log_px"))  # fmt: skip
    row("gap log p(x) - ELBO ~ KL(q(z|x) || p(z|x))", report.gap, report.gap_stderr)
    console.print(table)
    console.print(
        f"active units: {report.active_units} of {report.latent_dim} "
        f"(Cov_x(E_q[z_d]) > {report.active_threshold})"
    )
    if len(report.groups) > 1:
        console.print(_group_table(report))
    dims = Table(box=None, pad_edge=False)
    for column in ("dim", "group", "KL nats", "Cov_x(E_q[z])", "active"):
        dims.add_column(column, justify="right")
    kls = report.kl_per_dim or [None] * report.latent_dim  # (a mixture prior's KL has no parts per dimension)
    names = [name for name, size in report.groups.items() for _ in range(size)] or [""] * report.latent_dim
    for d, (kl, activity, group) in enumerate(zip(kls, report.activity, names, strict=True)):
        dims.add_row(
            str(d), group, "-" if kl is None else f"{kl:.3f}", f"{activity:.4f}",
            "yes" if activity > report.active_threshold else "no",
        )  # fmt: skip
    console.print(dims)


def _group_table(report: Any) -> Any:
    """The KL and active units of each latent group (top first)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("group", "size", "KL nats", "active units"):
        table.add_column(column, justify="right")
    for name, size in report.groups.items():
        table.add_row(name, str(size), f"{report.kl_per_group[name]:.3f}", str(report.active_per_group[name]))
    return table


def _note(line: str) -> None:
    """One line on stderr, never wrapped."""
    print(line, file=sys.stderr, flush=True)


def _check_outputs(files: list[Path], force: bool) -> None:
    for file in files:
        _check_output(str(file), force)


def encode(
    model: ModelArg,
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Image files or folders (searched recursively); - or none: paths from stdin."),
    ] = None,
    null: Annotated[
        bool, typer.Option("--null", "-0", help="Paths on stdin are NUL-separated (find -print0).")
    ] = False,
    output: Annotated[
        str | None, typer.Option("--output", "--out", "-o", help="Write to FILE (default: stdout).")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="jsonl, csv, npy or safetensors (default: from --output's suffix, else jsonl)."
        ),
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option(help="Comma-separated, in order: path, mu, logvar, z (default: path,mu,logvar[,z])."),
    ] = None,
    sample_z: Annotated[
        bool, typer.Option("--sample", help="Add z = mu + sigma * eps, drawn with --seed.")
    ] = False,
    seed: SeedOpt = 0,
    fit: Annotated[
        str | None,
        typer.Option(help="Other sizes: stretch, crop or pad (default: as the model's training data)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="The latent group to write (a hierarchy's z1, z2, ...; default: the top one) or all."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch on the device.")] = 256,
    workers: Annotated[
        int | None, typer.Option(help="Image-decoding processes (default: cores - 1, at least 1; 0: none).")
    ] = None,
    device: DeviceOpt = "auto",
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first file that cannot be read.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Encode image files to latent codes (mu, logvar[, z]); exit 1 if any file could not be read."""
    from vaecli.codefiles import DEFAULT_FIELDS, choose_format, open_writer, output_files, parse_fields
    from vaecli.encoding import ImageEncoder, encode_files, expand_paths

    chosen_fields = (
        parse_fields(fields) if fields is not None else DEFAULT_FIELDS + (("z",) if sample_z else ())
    )
    chosen_format = choose_format(format, output, chosen_fields)
    _check_encode_numbers(workers, batch_size)
    given = list(paths or ["-"])
    if "-" in given and sys.stdin.isatty():
        raise UsageError("no image paths: give files or folders, or pipe a list of paths to stdin")
    to_file = output is not None and output != "-"
    if to_file:
        _check_outputs(output_files(chosen_format, output, chosen_fields), force)
    encoder = ImageEncoder.load(
        model, device, fit, group
    )  # a missing or bad model stops here, before any work
    empty = lambda folder: _note(f"vae: warning: no image files in {printable(folder)}")  # noqa: E731
    found = expand_paths(given, sys.stdin.buffer, null, on_empty_folder=empty)
    batches = encode_files(encoder, found, batch_size, workers, sample="z" in chosen_fields, seed=seed)
    written_fields, widths = encoder.output_fields(chosen_fields)
    with (
        ProgressCounter("encoding") as progress,
        open_writer(
            chosen_format, output, written_fields, widths, sys.stdout.buffer, encoder.metadata(model)
        ) as out,
    ):
        failed = _write_encoded(batches, out, progress, strict)
        written = out.count
    if to_file:
        _note(f"wrote {written} codes to {output}")
    if failed:
        _note(f"vae: {failed} of {written + failed} files could not be encoded (exit code 1)")
        raise typer.Exit(code=1)


def _check_encode_numbers(workers: int | None, batch_size: int) -> None:
    """vae encode's --workers and --batch-size, or one line saying what is wrong."""
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (decode in this process) or more, got {workers}")
    if workers is not None and workers > MAX_PROCESSES:
        raise UsageError(f"--workers must be at most {MAX_PROCESSES}, got {workers}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")


def _write_encoded(batches: Iterator[Any], out: Any, progress: ProgressCounter, strict: bool) -> int:
    """Write the encoded batches; the files that could not be read are counted (and said), or,
    with ``strict``, the codes before the first one written and the run stopped there."""
    failed = 0
    for batch in batches:
        if strict and batch.failures:
            first = batch.failures[0]
            out.write(batch.head(first.before))
            raise VaeError(f"cannot read {printable(first.where)}: {first.reason} (stopped by --strict)")
        for failure in batch.failures:
            progress.skipped(failure.where, failure.reason)
        failed += len(batch.failures)
        out.write(batch)
        progress.advance(len(batch))
    return failed


def decode(
    model: ModelArg,
    codes: Annotated[
        str, typer.Argument(help="Codes from vae encode (jsonl, csv, npy, safetensors); - : stdin.")
    ] = "-",
    out: Annotated[str | None, typer.Option("--out", help="Folder for one PNG per record.")] = None,
    grid: Annotated[
        str | None, typer.Option("--grid", help="One PNG of all images in a grid instead.")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", help="The codes' format (default: from the suffix or the content)."),
    ] = None,
    latent: Annotated[
        str | None, typer.Option(help="Which code to decode: mu (default) or z (from encode --sample).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(help="mean (expected pixels), sample (drawn pixels) or mode (categorical's argmax)."),
    ] = "mean",
    seed: SeedOpt = 0,
    nrow: Annotated[int | None, typer.Option(help="Images per grid row (default: square).")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per batch on the device.")] = 256,
    device: DeviceOpt = "auto",
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first record that cannot be read.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Decode latent codes to images: one PNG per record (--out FOLDER) or a grid (--grid FILE)."""
    from vaecli.codefiles import read_codes
    from vaecli.decoding import GridWriter, ImageFolderWriter, decode_codes
    from vaecli.devices import choose_device
    from vaecli.modelfile import load_model

    _check_decode_choices(codes, out, grid, batch_size, nrow, force)
    target = choose_device(device)
    vae_model, _ = load_model(model, target)
    groups = tuple(vae_model.kl_groups())
    records = read_codes(codes, format, batch_size, vae_model.code_widths(), sys.stdin.buffer, groups)
    sink = ImageFolderWriter(out) if out is not None else GridWriter(str(grid), nrow, vae_model.input_shape)
    with ProgressCounter("decoding") as progress:
        batches = decode_codes(vae_model, records, latent, mode, seed, target)
        failed = _write_decoded(batches, codes, sink, progress, strict)
    if sink.count == 0 and not failed:
        source = "stdin" if codes == "-" else codes
        raise VaeError(f"no codes in {source}: nothing was written")
    if sink.count or out is not None:
        _note(sink.finish())
    if failed:
        _note(f"vae: {failed} records could not be decoded (exit code 1)")
        raise typer.Exit(code=1)


def _check_decode_choices(
    codes: str, out: str | None, grid: str | None, batch_size: int, nrow: int | None, force: bool
) -> None:
    """vae decode's choices, or one line saying what is wrong; an output that exists needs --force."""
    from vaecli.decoding import ImageFolderWriter

    if (out is None) == (grid is None):
        raise UsageError("give --out FOLDER (one PNG per record) or --grid FILE.png")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if nrow is not None and nrow < 1:
        raise UsageError(f"--nrow must be at least 1, got {nrow}")
    if codes == "-" and sys.stdin.isatty():
        raise UsageError("no codes: give a codes file, or pipe vae encode's output to stdin")
    if out is not None:
        ImageFolderWriter.check(out, force)
    else:
        _check_output(str(grid), force)


def _write_decoded(
    batches: Iterator[Any], codes: str, sink: Any, progress: ProgressCounter, strict: bool
) -> int:
    """Hand each decoded batch to ``sink`` (a folder of PNGs or a grid); returns the records that
    could not be read (each said), or, with ``strict``, stops at the first."""
    failed = 0
    for batch in batches:
        if strict and batch.failures:
            first = batch.failures[0]
            raise VaeError(f"cannot read {first.where} of {codes}: {first.reason} (stopped by --strict)")
        for failure in batch.failures:
            progress.skipped(f"{failure.where} of {codes}", failure.reason)
        failed += len(batch.failures)
        sink.write_batch(batch)
        progress.advance(len(batch.paths))
    return failed


def export_command(
    model: ModelArg,
    out: Annotated[str, typer.Argument(help="The file (one part) or folder (both parts) to write.")],
    format: Annotated[
        str, typer.Option("--format", help="onnx (any ONNX runtime) or torch-export (a .pt2 program).")
    ] = "onnx",
    part: Annotated[
        str, typer.Option(help="encoder (images to mu, logvar), decoder (z to images) or both.")
    ] = "both",
    input: Annotated[
        str, typer.Option("--input", help="What the encoder takes: uint8 pixels or prepared images.")
    ] = "uint8",
    force: ForceOpt = False,
) -> None:
    """Write the encoder and decoder as programs that run without vaecli (ONNX, torch.export)."""
    from vaecli.export import describe_difference, export

    written = export(model, out, format=format, part=part, input=input, force=force)
    for item in written:
        _note(f"wrote the {item.part} to {item.path} ({describe_difference(item.difference, format)})")


def _check_output(out: str, force: bool) -> None:
    if out == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal; use --out FILE")
        return
    path = Path(out)
    if path.is_dir():
        raise VaeError(f"{out} is a folder; give a file name with --out")
    if path.exists() and not force:
        raise VaeError(f"{out} already exists; pass --force to replace it")


def _write_output(out: str, payload: bytes) -> None:
    from vaecli.fileio import write_bytes_atomic

    if out == "-":
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(out, payload)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"vae: warning: {one_line(str(message))}", file=sys.stderr)


MAX_PROCESSES = 1024  # --nproc and --workers: each is a process of its own
_ARGV: list[str] = []  # the arguments of this run of ``vae`` (``--nproc`` passes them to torchrun)


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """While a command runs, Ctrl-C and SIGTERM raise :class:`Stopped` (exit 130 or 143, one line),
    so every temporary file is removed on the way out; training installs its own handlers."""

    def stop(signum: int, frame: Any) -> None:
        raise Stopped("interrupted" if signum == signal.SIGINT else "terminated", signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


MODELS = "Train and use a model"
PICTURES = "Pictures of a model"
EXTEND = "Extend"

#: The commands in the order a user meets them, grouped as ``vae --help`` shows them, each with
#: the one line that help gives it.
COMMANDS: list[tuple[str, Callable[..., Any], str, str]] = [
    ("train", train, MODELS, "Train a VAE; prints the run folder."),
    ("sample", sample, MODELS, "Draw images: z from the prior, then the decoder."),
    ("eval", eval_command, MODELS, "Score a model: -ELBO, -log p(x), active units."),
    ("encode", encode, MODELS, "Image files to latent codes (mu, logvar, z)."),
    ("decode", decode, MODELS, "Latent codes to images: PNG files or a grid."),
    ("export", export_command, MODELS, "The encoder and decoder as ONNX or torch.export files."),
    ("reconstruct", reconstruct, PICTURES, "Images beside their reconstructions."),
    ("interpolate", interpolate, PICTURES, "Decode along the line between two codes."),
    ("traverse", traverse, PICTURES, "Sweep each latent dimension, the others at the prior's mean."),
    ("map", latent_map, PICTURES, "The test set's codes in 2-D, coloured by label."),
    ("plot", plot, PICTURES, "A run's training curves from metrics.jsonl."),
    ("plugins", plugins, EXTEND, "Every registered part and the package it is from."),
]
for _name, _function, _panel, _summary in COMMANDS:
    app.command(_name, rich_help_panel=_panel, short_help=_summary)(_function)


#: What a value is called in help and usage lines, by its type (others: by the option's name).
METAVARS: dict[Any, str] = {int: "N", float: "X"}
ARGUMENT_METAVARS = {"model": "MODEL_OR_RUN", "paths": "[PATH]...", "codes": "[CODES]", "out": "OUT"}


def _tidy_help(group: Any) -> None:
    """Help as a shell user expects it: flags without a type, values named (N, X, KEY=VALUE, the
    option's own name), arguments in capitals in the usage line, and a box at most 80 columns
    wide on a wide terminal."""
    import shutil

    from typer import rich_utils

    if not os.environ.get("TERMINAL_WIDTH"):
        rich_utils.MAX_WIDTH = min(80, shutil.get_terminal_size().columns)
    for command in [group, *group.commands.values()]:
        command.get_help_option = _without_type(command.get_help_option)
        for param in command.params:
            if param.metavar is not None:
                continue
            if param.param_type_name == "argument":
                param.metavar = ARGUMENT_METAVARS.get(param.name, param.name.upper())
                # (typer >= 0.2x writes a required argument as {name} in the usage line, with a type)
                param._usage_display_name = lambda name=param.metavar: name
                param.display_type_rich = lambda ctx: None
            elif getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.opts[0].endswith("-opt"):
                param.metavar = "NAME.KEY=VALUE" if param.opts[0] == "--callback-opt" else "KEY=VALUE"
            else:
                named = param.opts[0].lstrip("-").upper().replace("-", "_")
                param.metavar = METAVARS.get(getattr(param.type_descriptor, "annotation", None), named)


def _without_type(get_help_option: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``--help`` shown as the flag it is, with no ``<bool>``."""

    def get(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return get


def main(argv: list[str] | None = None) -> int:
    """Run ``vae`` and return its exit code (0 ok, 1 run-time failure, 2 bad usage)."""
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    _tidy_help(command)
    debug = lambda: os.environ.get(DEBUG_ENV, "") not in ("", "0")  # noqa: E731
    try:
        with warnings.catch_warnings(), _signals_stop():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            result = command.main(args=argv, prog_name="vae", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click_exceptions.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else "vae: "
        message = one_line(exc.format_message())
        if message:  # (bare `vae` prints the help, and nothing more)
            print(f"{where}error: {message}", file=sys.stderr)
        return 2
    except click_exceptions.ClickException as exc:
        print(f"vae: error: {one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("vae: interrupted", file=sys.stderr)
        return 130
    except VaeError as exc:
        if exc.exit_code >= 128:  # stopped by a signal, after saving: not an error
            print(f"vae: {one_line(str(exc))}", file=sys.stderr)
            return exc.exit_code
        if debug():
            traceback.print_exc()
        print(f"vae: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (e.g. `vae ... | head`): not our failure to report.
        sys.stderr.close()
        return 1
    except OSError as exc:  # a path the system refuses (too long, a loop, no permission)
        if debug():
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vae: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unexpected failure: still one line unless --debug
        if debug():
            traceback.print_exc()
        from vaecli.blame import plugin_of
        from vaecli.errors import out_of_memory

        memory = out_of_memory(exc)
        if memory:
            print(f"vae: error: {memory}: ask for less (a smaller --batch-size or model)", file=sys.stderr)
            return 1
        culprit = plugin_of(exc)
        where = f"{culprit} failed: " if culprit else ""
        print(
            f"vae: error: {where}{type(exc).__name__}: {one_line(str(exc))} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1
