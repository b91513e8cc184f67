"""``vae export``: a model for use outside vaecli."""

from __future__ import annotations

from typing import Annotated

import typer

from vaecli.cli.common import (
    ForceOpt,
    ModelArg,
    say,
)


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
        say(f"wrote the {item.part} to {item.path} ({describe_difference(item.difference, format)})")
