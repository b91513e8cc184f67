"""The model file: one .safetensors file holding weights and, as JSON metadata, everything
needed to rebuild and use the model. Loading never unpickles anything."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as serialise

import vaecli
from vaecli import registry
from vaecli.devices import place
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import strict_json, write_bytes_atomic
from vaecli.models import LatentVariableModel, ModelSpec, build_model
from vaecli.runs import MODEL_FILE

FORMAT = "vaecli-model"
# 2: architecture options are recorded with their defaults; 3: the output offset; 4: the prior
# (older files have none: N(0, I), without tensors); 5: the model (older files: vae)
FORMAT_VERSION = 5
OFFSET_FORMAT = 3  # files before this format hold no output_offset, the same as a zero one
MAX_SIZE = 1 << 20  # no image side, channel count or latent size is larger in a real model


def model_path(model_or_run: str | os.PathLike[str]) -> Path:
    """The model file for a path that is a model file or a run folder."""
    path = Path(model_or_run)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise VaeError(f"no model at {model_or_run} (give a model.safetensors file or a run folder)")
    return path


def save_model(path: str | os.PathLike[str], model: LatentVariableModel, info: dict[str, Any]) -> None:
    """Write the model atomically; ``info`` adds data, training and metrics sections."""
    if model.spec is None:
        raise ValueError("only a model made by build_model() can be saved")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaecli_version": vaecli.__version__,
        "model": asdict(model.spec),
        **info,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory and written by vaecli: safetensors' own save_file writes a temporary
    # file of its own (mode 0600, left behind by a kill) and reports a full disk unhelpfully.
    write_bytes_atomic(path, serialise(tensors, metadata={"format": "pt", FORMAT: strict_json(header)}))


def format_version(header: Any, default: int | None = None) -> int:
    """The ``format_version`` of a model or checkpoint header (``default`` when absent); anything but
    a whole number from 1 (a float, infinity, a string, true, -1) is a ValueError."""
    if default is not None and "format_version" not in header:
        return default
    version = header["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"format_version must be a whole number from 1, not {json.dumps(version)}")
    return version


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a model file, checked to be a vaecli model this version reads."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise VaeError(f"{path} is not a safetensors model file ({exc})") from exc
    if FORMAT not in metadata:
        raise VaeError(f"{path} is a safetensors file but not a vaecli model")
    try:
        header = json.loads(metadata[FORMAT])
        version = format_version(header)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VaeError(f"{path} has a damaged vaecli header ({exc})") from exc
    except RecursionError:
        raise VaeError(f"{path} has a damaged vaecli header (nested too deeply)") from None
    if version > FORMAT_VERSION:
        raise VaeError(
            f"{path} is model format {version}; this vaecli {vaecli.__version__} reads "
            f"up to {FORMAT_VERSION}: upgrade vaecli"
        )
    return header


def load_model(
    model_or_run: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[LatentVariableModel, dict[str, Any]]:
    """Rebuild a VAE and its header from a model file or run folder, in eval mode."""
    path = model_path(model_or_run)
    header = read_header(path)
    check_parts_agree(header, path)
    spec = _spec_of(header, path)
    _check_data_shape(header, spec, path)
    installed = _with_installed_parts(spec, header, path)
    version = format_version(header)
    try:
        _check_tensors_fit(installed, path, version)  # on the meta device: nothing is allocated yet
        model = build_model(installed)
    except UsageError as exc:  # an option value no part accepts: the file is at fault, not the user
        raise VaeError(f"{path} has a damaged model description ({exc})") from None
    model.spec = spec  # as trained, so a re-saved model reads the same
    try:
        load_weights(model, load_file(str(path)), version)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise VaeError(f"{path}: its tensors do not fit its own model description ({first})") from exc
    return place(model, device).eval(), header


def _spec_of(header: dict[str, Any], path: Path) -> ModelSpec:
    try:
        fields = dict(header["model"])
        fields["architecture_options"] = upgrade_architecture_options(
            fields["architecture"], _architecture_distribution(header), fields["architecture_options"],
            format_version(header),
        )  # fmt: skip
        spec = ModelSpec(**{**fields, "input_shape": tuple(fields["input_shape"])})
        sizes = (*spec.input_shape, spec.latent_dim)
        names_ok = all(isinstance(getattr(spec, part), str) for part in MODEL_PARTS)
        options_ok = all(isinstance(getattr(spec, f"{part}_options"), dict) for part in MODEL_PARTS)
    except (KeyError, TypeError, ValueError) as exc:
        raise VaeError(f"{path} has an incomplete model description ({exc})") from exc
    if len(spec.input_shape) != 3 or not all(type(v) is int and 0 < v <= MAX_SIZE for v in sizes):
        raise VaeError(
            f"{path} has an impossible model description (shape {spec.input_shape}, latent {spec.latent_dim})"
        )
    if not (names_ok and options_ok):
        raise VaeError(f"{path} has a damaged model description (names or options of the wrong type)")
    return spec


def _check_data_shape(header: dict[str, Any], spec: ModelSpec, path: Path) -> None:
    """The recorded shape of the training images must be the model's input shape."""
    data = header.get("data")
    recorded = data.get("shape") if isinstance(data, dict) else None
    if recorded is not None and (not isinstance(recorded, list) or tuple(recorded) != spec.input_shape):
        raise VaeError(
            f"{path} has a damaged header: its data section says images of shape {recorded}, "
            f"but its model takes {spec.input_shape}"
        )


def upgrade_architecture_options(
    architecture: str, distribution: str | None, options: dict[str, Any], version: int
) -> dict[str, Any]:
    """The options of a model (or run) written in format ``version``, as this vaecli builds it.
    Format 1 recorded only the options given, and the built-in MLP and conv then always used ReLU
    (later files record the activation; the conv's default has been ELU since)."""
    names = ("mlp", "vaecli:mlp", "conv", "vaecli:conv")
    builtin = architecture in names and distribution in (None, "vaecli")
    if version < 2 and builtin and isinstance(options, dict):
        return {"activation": "relu", **options}
    return options


def tensors_absent_in(version: int) -> set[str]:
    """The state-dict entries a model written in format ``version`` may lack."""
    return {"output_offset"} if version < OFFSET_FORMAT else set()


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int) -> None:
    """Load a state dict written in format ``version``: every tensor must fit, and only those an
    older format lacks may be missing (the model's own zero output offset then stays)."""
    result = model.load_state_dict(tensors, strict=False)
    missing = set(result.missing_keys) - tensors_absent_in(version)
    if missing or result.unexpected_keys:
        names = ", ".join(sorted(missing | set(result.unexpected_keys)))
        raise RuntimeError(f"missing or unexpected tensors: {names}")


def _architecture_distribution(header: dict[str, Any]) -> str | None:
    parts = header.get("parts")
    part = parts.get("architecture") if isinstance(parts, dict) else None
    return part.get("distribution") if isinstance(part, dict) else None


def _check_tensors_fit(spec: ModelSpec, path: Path, version: int) -> None:
    """Build the model on the meta device (no memory) and compare every parameter's name, shape
    and dtype with the file's, so a hostile description can never make us allocate more than
    the file itself holds."""
    try:
        with torch.device("meta"):
            # No forward pass: on the meta device it would import torch's compiler (seconds), and
            # the real model built next checks its shapes anyway.
            skeleton = build_model(spec, check_shapes=False)
    except VaeError:
        raise
    except Exception as exc:  # the description asks for something no architecture can build
        first = (str(exc).strip().splitlines() or [""])[0]
        raise VaeError(f"{path} has an impossible model description ({type(exc).__name__}: {first})") from exc
    expected = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        found = {
            k: (tuple(f.get_slice(k).get_shape()), _DTYPES.get(f.get_slice(k).get_dtype())) for k in f.keys()
        }
    for name in tensors_absent_in(version) - found.keys():
        del expected[name]
    for name in sorted(expected.keys() | found.keys()):
        if expected.get(name) != found.get(name):
            want = "absent" if name not in expected else f"{expected[name][0]} {expected[name][1]}"
            got = "missing" if name not in found else f"{found[name][0]} {found[name][1]}"
            raise VaeError(
                f"{path}: its tensors do not fit its own model description (tensor {name}: file has {got}, "
                f"the model needs {want})"
            )


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def _with_installed_parts(spec: ModelSpec, header: dict[str, Any], path: Path) -> ModelSpec:
    """``spec`` naming the architecture, likelihood and prior as DIST:NAME when the distribution
    that trained the model provides them; a missing plugin is an error that says what to install."""
    names = {kind: recorded_part(header, kind, getattr(spec, kind), str(path)) for kind in MODEL_PARTS}
    return ModelSpec(**{**asdict(spec), **names})


#: The parts a model file's model section names (the ModelSpec fields of the same names).
MODEL_PARTS = ("architecture", "likelihood", "prior", "model")


def recorded_part(header: dict[str, Any], kind: str, name: str, where: str) -> str:
    """``name`` (a part of ``kind`` a model or run was made with) as DIST:NAME when its header's
    ``parts`` section records the distribution that provided it, so that a second package that
    registers the same name is never used instead; a missing package is one line saying which
    to install."""
    parts = header.get("parts") if isinstance(header.get("parts"), dict) else {}
    recorded = parts.get(kind) if isinstance(parts.get(kind), dict) else {}
    entry = registry.BY_KIND[kind].require(name, recorded, where)
    dist = recorded.get("distribution")
    # (vaecli's own parts take precedence over any plugin's: their bare names are safe)
    return entry.qualified_name if dist and entry.distribution == dist != "vaecli" else name


PART_NAMES = {
    "architecture": ("model", "architecture"),
    "likelihood": ("model", "likelihood"),
    "prior": ("model", "prior"),
    "model": ("model", "model"),
    "dataset": ("data", "name"),
    "objective": ("training", "objective"),
}


def check_parts_agree(header: dict[str, Any], path: Path) -> None:
    """A header that names a part in two places must name the same one in both (``parts``
    records where each came from; a file where they differ was edited or damaged)."""
    parts = header.get("parts")
    if parts is None:
        return  # (older files have no parts section)
    if not isinstance(parts, dict):
        raise VaeError(f"{path} has a damaged header: its parts section is not a mapping")
    for kind, (section, key) in PART_NAMES.items():
        recorded, named = parts.get(kind), header.get(section)
        if recorded is None or not isinstance(named, dict) or key not in named:
            continue
        name = named[key]
        recorded_name = recorded.get("name") if isinstance(recorded, dict) else None
        if not (isinstance(recorded_name, str) and isinstance(name, str)):
            raise VaeError(f"{path} has a damaged header: the {kind}'s name is not text")
        dist, _, bare = name.rpartition(":")
        if bare != recorded["name"] or (dist and dist != recorded.get("distribution")):
            raise VaeError(
                f"{path} has a damaged header: its {section} section names the {kind} '{name}' but "
                f"its parts section '{recorded.get('distribution')}:{recorded['name']}'"
            )
