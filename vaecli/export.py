"""``export()``: a model's encoder and decoder as programs that run without vaecli.

The encoder maps images (B, C, H, W) to (mu, logvar), each (B, latent_dim): uint8 pixels prepared
as ``vae encode`` prepares them, or images already prepared as the likelihood models them. The
decoder maps z (B, latent_dim) to the likelihood's mean image (B, C, H, W) in [0, 1]. The batch
size is free in both. Written as ONNX (for onnxruntime and every runtime that reads ONNX) or as
a ``torch.export`` program (``torch.export.load(path).module()``), and checked against the model
before anything is written.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import vaecli
from vaecli import registry
from vaecli.architectures import ELU
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import write_bytes_atomic
from vaecli.modelfile import load_model
from vaecli.models import LatentVariableModel

PARTS = ("encoder", "decoder", "both")
INPUTS = ("uint8", "prepared")
CHECK_IMAGES = 16  # inputs each exported program is run on and compared with the model
#: The largest difference from the model a check accepts, absolute plus relative: float32 programs
#: that reorder sums (ONNX's Gemm, torch's own ELU) differ from it by a few 1e-7 per unit of size.
CHECK_TOLERANCE = 1e-4

#: vaecli's modules with hand-written gradients, and torch's own of the same function: tracers
#: (torch.export, ONNX, TorchScript) cannot see into a custom autograd function.
PLAIN_MODULES: dict[type[nn.Module], Callable[[], nn.Module]] = {ELU: nn.ELU}


class EncoderProgram(nn.Module):
    """Images (B, C, H, W) to (mu, logvar), each (B, latent_dim): uint8 pixels are prepared by the
    likelihood's ``encoder_input`` (what ``vae encode`` feeds the encoder), prepared images pass
    as they are."""

    def __init__(self, model: LatentVariableModel, input: str = "uint8") -> None:
        super().__init__()
        check_input(input)
        self.model, self.likelihood, self.uint8 = model, model.likelihood, input == "uint8"

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.likelihood.encoder_input(images) if self.uint8 else images
        return self.model.encode(x)


class DecoderProgram(nn.Module):
    """Codes z (B, latent_dim) to images (B, C, H, W) in [0, 1]: the likelihood's mean of
    p(x|z), the picture ``vae sample --mode mean`` and ``vae decode`` draw."""

    def __init__(self, model: LatentVariableModel) -> None:
        super().__init__()
        self.model, self.likelihood = model, model.likelihood

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.model.decode(z))


def check_input(input: str) -> None:
    """One line unless ``input`` is one of :data:`INPUTS`."""
    if input not in INPUTS:
        raise UsageError(f"unknown --input '{input}' (use {' or '.join(INPUTS)})")


def standalone(model: LatentVariableModel) -> LatentVariableModel:
    """A copy of ``model`` on the CPU, in eval mode, with no gradients, and with vaecli's
    custom-gradient modules replaced by torch's own (:data:`PLAIN_MODULES`)."""
    plain = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in PLAIN_MODULES:
                setattr(parent, name, PLAIN_MODULES[type(child)]())
    return plain


def load_programs(
    model_or_run: str | os.PathLike[str], input: str = "uint8"
) -> tuple[EncoderProgram, DecoderProgram]:
    """The encoder and decoder programs of a model file or run folder, as torch modules on the
    CPU: what ``vae export`` writes, for use in Python."""
    model, _ = load_model(model_or_run)
    plain = standalone(model)
    return EncoderProgram(plain, input).eval(), DecoderProgram(plain).eval()


@dataclass
class Exported:
    """One written program: its part, file, and the check's largest difference from the model
    (None when it could not be run: onnxruntime not installed)."""

    part: str
    path: Path
    difference: float | None


@dataclass
class _Format:
    suffix: str
    to_bytes: Callable[[nn.Module, torch.Tensor, list[str], list[str], dict[str, str]], bytes]
    run: Callable[[bytes, torch.Tensor], list[torch.Tensor]] | None  # None: no runtime installed
    needs: tuple[str, ...] = ()


def _onnx_bytes(
    program: nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str], about: dict[str, str]
) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    # (the exporter reports its progress on stdout, which is the user's: kept out of it)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, (example,), dynamo=True, input_names=inputs, output_names=outputs,
            dynamic_shapes=({0: batch},), verbose=False, optimize=True,
        )  # fmt: skip
    onnx_program.model.metadata_props.update(about)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "program.onnx"
        onnx_program.save(str(path), external_data=False)
        return path.read_bytes()


def _onnx_run(data: bytes, x: torch.Tensor) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(out) for out in session.run(None, {name: x.numpy()})]


def _torch_export_bytes(
    program: nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str], about: dict[str, str]
) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(program, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(exported, buffer, extra_files={"vaecli.json": json.dumps(about)})
    return buffer.getvalue()


def _torch_export_run(data: bytes, x: torch.Tensor) -> list[torch.Tensor]:
    out = torch.export.load(io.BytesIO(data)).module()(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


#: Export formats by the name ``--format`` takes.
FORMATS: dict[str, Callable[[], _Format]] = {
    "onnx": lambda: _Format(
        ".onnx", _onnx_bytes, _onnx_run if _installed("onnxruntime") else None, ("onnx", "onnxscript")
    ),  # fmt: skip
    "torch-export": lambda: _Format(".pt2", _torch_export_bytes, _torch_export_run),
}


def output_files(out: str | os.PathLike[str], format: str, part: str) -> dict[str, Path]:
    """Where each part goes: ``out`` itself for one part (or ``out/PART.SUFFIX`` when ``out`` is a
    folder), ``out/encoder.SUFFIX`` and ``out/decoder.SUFFIX`` for both."""
    chosen = _format(format)
    if part not in PARTS:
        raise UsageError(f"unknown --part '{part}' (use {', '.join(PARTS)})")
    path = Path(out)
    if part == "both":
        if path.exists() and not path.is_dir():
            raise UsageError(f"{out} is a file; --part both writes two files into a folder")
        return {p: path / f"{p}{chosen.suffix}" for p in ("encoder", "decoder")}
    return {part: path / f"{part}{chosen.suffix}" if path.is_dir() else path}


def _format(format: str) -> _Format:
    if format not in FORMATS:
        raise UsageError(f"unknown --format '{format}' (use {' or '.join(FORMATS)})")
    chosen = FORMATS[format]()
    if not _installed(*chosen.needs):
        raise VaeError(
            f"--format {format} needs the packages {' and '.join(chosen.needs)}: pip install 'vaecli[export]'"
        )
    return chosen


def export(
    model_or_run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    format: str = "onnx",
    part: str = "both",
    input: str = "uint8",
    force: bool = False,
) -> list[Exported]:
    """Write the model's ``part`` (encoder, decoder or both) as ``format`` to ``out``
    (:func:`output_files`). Every program is exported and checked against the model on
    :data:`CHECK_IMAGES` inputs before the first file is written; an existing file is replaced
    only with ``force``."""
    check_input(input)
    files = output_files(out, format, part)
    for path in files.values():
        if path.exists() and not force:
            raise VaeError(f"{path} already exists; pass --force to replace it")
    chosen = _format(format)
    model, header = load_model(model_or_run)
    if "decoder" in files and model.likelihood.sequential:
        raise UsageError(
            f"likelihood '{model.likelihood.name}' draws an image pixel by pixel, so its decoder "
            "is no single program: export --part encoder"
        )
    payloads = {name: _export_part(model, name, input, chosen, format) for name in files}
    written = []
    for name, path in files.items():
        data, difference = payloads[name]
        write_bytes_atomic(path, data)
        written.append(Exported(name, path, difference))
    return written


def _export_part(
    model: LatentVariableModel, part: str, input: str, chosen: _Format, format: str
) -> tuple[bytes, float | None]:
    plain = standalone(model)
    program, example, reference, names = _program(model, plain, part, input)
    about = _about(model, part, input)
    try:
        data = chosen.to_bytes(program, example[:2], *names, about)
    except Exception as exc:
        raise VaeError(f"{_architecture(model)} cannot be exported as {format}: "
                       f"{type(exc).__name__}: {_first_line(exc)}") from exc  # fmt: skip
    if chosen.run is None:
        return data, None
    got = chosen.run(data, example)
    difference = max((g - r).abs().max().item() for g, r in zip(got, reference, strict=True))
    size = max(r.abs().max().item() for r in reference)
    if not difference <= CHECK_TOLERANCE * (1 + size):  # (a NaN fails too)
        raise VaeError(
            f"the exported {part} differs from the model by {difference:.3g} on {CHECK_IMAGES} "
            f"inputs (at most {CHECK_TOLERANCE * (1 + size):.3g} expected); nothing was written"
        )
    return data, difference


def _program(
    model: LatentVariableModel, plain: LatentVariableModel, part: str, input: str
) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor], tuple[list[str], list[str]]]:
    """The program for ``part``, check inputs for it, the model's own outputs for those, and the
    names of its inputs and outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if part == "decoder":
            z = torch.randn(CHECK_IMAGES, model.latent_dim, generator=generator)
            reference = [model.likelihood.mean(model.decode(z.to(_device(model)))).cpu()]
            return DecoderProgram(plain).eval(), z, reference, (["z"], ["images"])
        pixels = torch.randint(0, 256, (CHECK_IMAGES, *model.input_shape), generator=generator)
        images = pixels.to(torch.uint8)
        prepared = model.likelihood.encoder_input(images.to(_device(model)))
        reference = [t.cpu() for t in model.encode(prepared)]
    example = images if input == "uint8" else prepared.cpu()
    return EncoderProgram(plain, input).eval(), example, reference, (["images"], ["mu", "logvar"])


def _device(model: LatentVariableModel) -> torch.device:
    return model.output_offset.device


def _about(model: LatentVariableModel, part: str, input: str) -> dict[str, str]:
    """What a program is, stored in its file (ONNX metadata, torch.export's extra files)."""
    spec = model.spec
    about = {
        "producer": f"vaecli {vaecli.__version__}",
        "part": part,
        "input_shape": json.dumps(list(model.input_shape)),
        "latent_dim": str(model.latent_dim),
        "likelihood": spec.likelihood if spec else "",
        "architecture": spec.architecture if spec else "",
        "model": spec.model if spec else "",
    }
    if part == "encoder":
        about["input"] = "uint8 pixels 0-255" if input == "uint8" else "prepared images"
        about["outputs"] = "mu, logvar of q(z|x)"
    else:
        about["outputs"] = "the mean of p(x|z), in [0, 1]"
    return about


def _architecture(model: LatentVariableModel) -> str:
    """The part whose layers a failed export is about: the architecture of a ``vae``, else the model."""
    if model.spec is None:
        return "the architecture"
    if model.spec.model != "vae":
        return registry.models.describe(model.spec.model)
    return registry.architectures.describe(model.spec.architecture)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def describe_difference(difference: float | None, format: str) -> str:
    """How an exported program's check went, for the line ``vae export`` prints."""
    if difference is None:
        return "not run: onnxruntime is not installed (pip install onnxruntime)"
    size = "0" if difference == 0 else f"{difference:.1e}"
    runtime = "onnxruntime" if format == "onnx" else "torch"
    return f"matches the model in {runtime} within {size} on {CHECK_IMAGES} inputs"
