"""The picture commands: sample, reconstruct, interpolate, traverse, prior, plot and map."""

from __future__ import annotations

from typing import Annotated

import typer

from vaecli.cli.common import (
    DataDirOpt,
    DataOpt,
    DataOptOpt,
    DeviceOpt,
    ForceOpt,
    ModelArg,
    ModeOpt,
    SeedOpt,
    check_output,
    data_choice,
    say,
    write_output,
    write_picture,
)
from vaecli.errors import UsageError


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
    check_output(out, force)
    temperatures = parse_temperature(temperature)
    samples = draw(model, n=n, seed=seed, mode=mode, device=device, temperature=temperatures,
                   grid=format == "png")  # fmt: skip
    write_output(out, encode_samples(samples, format, nrow))
    if out != "-":
        say(f"wrote {n} samples to {out}")


def parse_temperature(text: str) -> float | list[float]:
    """``--temperature``: one number, or comma-separated numbers (one per latent group)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--temperature wants a number or comma-separated numbers, got '{text}'") from None
    return values[0] if len(values) == 1 else values


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
    check_output(out, force)
    picture = draw(model, paths or (), data_choice(data, data_dir, data_opt), n, mode, seed, device)
    write_picture(picture, out)


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

    check_output(out, force)
    choice = data_choice(data, data_dir, data_opt)
    write_picture(draw(model, a, b, steps, slerp, choice, mode, seed, device), out)


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
    check_output(out, force)
    choice = data_choice(data, data_dir, data_opt)
    write_picture(draw(model, chosen, range_, steps, count, choice, mode, seed, device, group), out)


def prior(
    model: ModelArg,
    n: Annotated[int, typer.Option("--n", help="How many components (the heaviest first).")] = 32,
    mode: ModeOpt = "mean",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "prior.png",
    force: ForceOpt = False,
) -> None:
    """A learned prior's components: a VampPrior's pseudo-inputs beside their decoded codes, a
    mixture's decoded means."""
    from vaecli.pictures import prior_components

    check_output(out, force)
    write_picture(prior_components(model, n, mode, seed, device), out)


def plot(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="A run folder (or its metrics.jsonl); several runs, or folders of runs, to compare."
        ),
    ],
    out: Annotated[str, typer.Option(help="Output PNG; - writes to stdout.")] = "curves.png",
    force: ForceOpt = False,
) -> None:
    """Draw a run's training curves (-ELBO, reconstruction, KL per epoch) from metrics.jsonl, or
    several runs' held-out curves in one picture."""
    from vaecli.run_summaries import curves_picture

    check_output(out, force)
    png, what = curves_picture(runs)
    write_output(out, png)
    if out != "-":
        say(f"wrote {out}: {what}")


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

    check_output(out, force)
    write_picture(draw(model, data_choice(data, data_dir, data_opt), n, seed, device), out)
