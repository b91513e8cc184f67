"""What the commands share: option types, the arguments of this run, and how a command writes
its one-line notes and its output files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vaecli.config import MAX_SEED
from vaecli.errors import UsageError, VaeError

try:  # typer >= 0.20 ships its own copy of click
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - older typer
    from click.core import ParameterSource


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


DataOpt = Annotated[
    str | None, typer.Option("--data", help="Dataset to take test images from (default: the model's own).")
]
ModeOpt = Annotated[
    str, typer.Option(help="mean (expected pixels), sample (drawn pixels) or mode (categorical's argmax).")
]


MAX_PROCESSES = 1024  # --nproc and --workers: each is a process of its own
ARGV: list[str] = []  # the arguments of this run of ``vae`` (``--nproc`` passes them to torchrun)


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters the user typed on the command line (not defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


#: The config keys that flags of other names feed (any other flag feeds the key of its name).
FLAG_FEEDS = {
    "data_opt": "data_options",
    "arch_opt": "arch_options",
    "hidden": "arch_options",
    "likelihood_opt": "likelihood_options",
    "prior_opt": "prior_options",
    "model_opt": "model_options",
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


def given_on_command_line(ctx: typer.Context, allowed: set[str]) -> set[str]:
    """Config keys set by flags the user typed, mapped from the flags that feed them."""
    typed = given_options(ctx)
    keys = {FLAG_FEEDS.get(name, name) for name in typed}
    if "iw_samples" in typed:
        keys.add("objective")
    return keys & allowed


def data_choice(data: str | None, data_dir: str | None, data_opt: list[str] | None) -> Any:
    from vaecli.options import parse_key_values
    from vaecli.pictures import DataChoice

    return DataChoice(data, data_dir, parse_key_values(data_opt or [], "--data-opt"))


def write_picture(picture: Any, out: str) -> None:
    write_output(out, picture.png)
    if out != "-":
        say(f"wrote {out}: {picture.note}")


def say(line: str) -> None:
    """One line on stderr, never wrapped."""
    print(line, file=sys.stderr, flush=True)


def check_outputs(files: list[Path], force: bool) -> None:
    for file in files:
        check_output(str(file), force)


def check_output(out: str, force: bool) -> None:
    if out == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal; use --out FILE")
        return
    path = Path(out)
    if path.is_dir():
        raise VaeError(f"{out} is a folder; give a file name with --out")
    if path.exists() and not force:
        raise VaeError(f"{out} already exists; pass --force to replace it")


def write_output(out: str, payload: bytes) -> None:
    from vaecli.fileio import write_bytes_atomic

    if out == "-":
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(out, payload)
