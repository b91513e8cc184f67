"""The ``vae`` command: its commands in order, their help, and how a run ends (the exit code, one
line on stderr). The commands' modules parse their options and print; no maths here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

import vaecli
from vaecli.console import one_line
from vaecli.errors import Stopped, VaeError

try:  # typer >= 0.20 ships its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions

from vaecli.cli.codes import decode, encode
from vaecli.cli.common import ARGV
from vaecli.cli.evaluate import eval_command
from vaecli.cli.export import export_command
from vaecli.cli.pictures import interpolate, latent_map, plot, prior, reconstruct, sample, traverse
from vaecli.cli.plugins import plugins
from vaecli.cli.runs import runs
from vaecli.cli.train import train

DEBUG_ENV = "VAECLI_DEBUG"

app = typer.Typer(
    name="vae",
    help="Variational autoencoders: train, sample, evaluate and encode.",
    add_completion=True,  # vae --install-completion: tab completion in bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"vae: warning: {one_line(str(message))}", file=sys.stderr)


def _warnings_as_lines() -> None:
    """Each warning once, as one ``vae: warning:`` line (inside ``warnings.catch_warnings``)."""
    warnings.simplefilter("default")
    # torch 2.11 warns of its own deprecated jit on compiling: not the user's to act on.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated")
    warnings.showwarning = _show_warning


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
    ("runs", runs, MODELS, "List run folders: state, epochs, held-out bounds."),
    ("reconstruct", reconstruct, PICTURES, "Images beside their reconstructions."),
    ("interpolate", interpolate, PICTURES, "Decode along the line between two codes."),
    ("traverse", traverse, PICTURES, "Sweep each latent dimension, the others at the prior's mean."),
    ("map", latent_map, PICTURES, "The test set's codes in 2-D, coloured by label."),
    ("prior", prior, PICTURES, "A learned prior's components: VampPrior pseudo-inputs."),
    ("plot", plot, PICTURES, "Training curves: a run's, or several runs' side by side."),
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
    ARGV[:] = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    _tidy_help(command)
    debug = lambda: os.environ.get(DEBUG_ENV, "") not in ("", "0")  # noqa: E731
    try:
        with warnings.catch_warnings(), _signals_stop():
            _warnings_as_lines()
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
