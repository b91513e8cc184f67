"""``vae encode`` (image files to latent codes) and ``vae decode`` (codes to images)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from vaecli.cli.common import (
    MAX_PROCESSES,
    DeviceOpt,
    ForceOpt,
    ModelArg,
    SeedOpt,
    check_output,
    check_outputs,
    say,
)
from vaecli.console import ProgressCounter, printable
from vaecli.errors import UsageError, VaeError

EncodePathsArg = Annotated[
    list[str] | None,
    typer.Argument(help="Image files or folders (searched recursively); - or none: paths from stdin."),
]
EncodeNullOpt = Annotated[
    bool, typer.Option("--null", "-0", help="Paths on stdin are NUL-separated (find -print0).")
]
EncodeOutputOpt = Annotated[
    str | None, typer.Option("--output", "--out", "-o", help="Write to FILE (default: stdout).")
]
EncodeFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format", help="jsonl, csv, npy or safetensors (default: from --output's suffix, else jsonl)."
    ),
]
EncodeFieldsOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated, in order: path, mu, logvar, z (default: path,mu,logvar[,z])."),
]
EncodeSampleZOpt = Annotated[
    bool, typer.Option("--sample", help="Add z = mu + sigma * eps, drawn with --seed.")
]
EncodeFitOpt = Annotated[
    str | None,
    typer.Option(help="Other sizes: stretch, crop or pad (default: as the model's training data)."),
]
EncodeGroupOpt = Annotated[
    str | None,
    typer.Option(help="The latent group to write (a hierarchy's z1, z2, ...; default: the top one) or all."),
]
EncodeBatchSizeOpt = Annotated[int, typer.Option(help="Images per batch on the device.")]
EncodeWorkersOpt = Annotated[
    int | None, typer.Option(help="Image-decoding processes (default: cores - 1, at least 1; 0: none).")
]
EncodeStrictOpt = Annotated[
    bool, typer.Option("--strict", help="Stop at the first file that cannot be read.")
]


def encode(
    model: ModelArg,
    paths: EncodePathsArg = None,
    null: EncodeNullOpt = False,
    output: EncodeOutputOpt = None,
    format: EncodeFormatOpt = None,
    fields: EncodeFieldsOpt = None,
    sample_z: EncodeSampleZOpt = False,
    seed: SeedOpt = 0,
    fit: EncodeFitOpt = None,
    group: EncodeGroupOpt = None,
    batch_size: EncodeBatchSizeOpt = 256,
    workers: EncodeWorkersOpt = None,
    device: DeviceOpt = "auto",
    strict: EncodeStrictOpt = False,
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
        check_outputs(output_files(chosen_format, output, chosen_fields), force)
    encoder = ImageEncoder.load(
        model, device, fit, group
    )  # a missing or bad model stops here, before any work
    empty = lambda folder: say(f"vae: warning: no image files in {printable(folder)}")  # noqa: E731
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
        say(f"wrote {written} codes to {output}")
    if failed:
        say(f"vae: {failed} of {written + failed} files could not be encoded (exit code 1)")
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
        say(sink.finish())
    if failed:
        say(f"vae: {failed} records could not be decoded (exit code 1)")
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
        check_output(str(grid), force)


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
