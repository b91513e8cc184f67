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
from safetensors.torch import load_file, save_file

import vaecli
from vaecli import registry
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import atomic_path
from vaecli.model import VAE, ModelSpec, build_model

FORMAT = "vaecli-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"


def model_path(model_or_run: str | os.PathLike[str]) -> Path:
    """The model file for a path that is a model file or a run folder."""
    path = Path(model_or_run)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise VaeError(f"no model at {model_or_run} (give a model.safetensors file or a run folder)")
    return path


def save_model(path: str | os.PathLike[str], model: VAE, info: dict[str, Any]) -> None:
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", FORMAT: json.dumps(header)})


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
        version = int(header["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VaeError(f"{path} has a damaged vaecli header ({exc})") from exc
    if version > FORMAT_VERSION:
        raise VaeError(
            f"{path} is model format {version}; this vaecli {vaecli.__version__} reads "
            f"up to {FORMAT_VERSION}: upgrade vaecli"
        )
    return header


def load_model(
    model_or_run: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[VAE, dict[str, Any]]:
    """Rebuild a VAE and its header from a model file or run folder, in eval mode."""
    path = model_path(model_or_run)
    header = read_header(path)
    try:
        spec = header["model"]
        spec = ModelSpec(**{**spec, "input_shape": tuple(spec["input_shape"])})
    except (KeyError, TypeError) as exc:
        raise VaeError(f"{path} has an incomplete model description ({exc})") from exc
    model = build_model(_with_installed_parts(spec, header, path))
    model.spec = spec  # as trained, so a re-saved model reads the same
    try:
        state = load_file(str(path))
        expected = model.state_dict()
        for name, tensor in state.items():
            if name in expected and tensor.dtype != expected[name].dtype:
                raise RuntimeError(f"tensor {name} is {tensor.dtype}, the model needs {expected[name].dtype}")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise VaeError(f"{path}: its tensors do not fit its own model description ({first})") from exc
    return model.to(device).eval(), header


def _with_installed_parts(spec: ModelSpec, header: dict[str, Any], path: Path) -> ModelSpec:
    """``spec`` naming the architecture and likelihood as DIST:NAME when the distribution that
    trained the model provides them; a missing plugin is an error that says what to install."""
    parts = header.get("parts", {})
    names = {}
    for kind, name in (("architecture", spec.architecture), ("likelihood", spec.likelihood)):
        recorded = parts.get(kind, {})
        dist = recorded.get("distribution")
        try:
            bare = recorded.get("name", name)
            entry = registry.BY_KIND[kind].entry(f"{dist}:{bare}" if dist else name)
        except UsageError:
            try:
                entry = registry.BY_KIND[kind].entry(name)
            except UsageError:
                where = f" from the package {dist} {recorded.get('version', '')}".rstrip() if dist else ""
                hint = f": pip install {dist}" if dist else ""
                raise VaeError(
                    f"{path} needs the {kind} '{name}'{where}, which is not installed{hint}"
                ) from None
        names[kind] = entry.qualified_name if dist and entry.distribution == dist else name
    return ModelSpec(
        **{**asdict(spec), "architecture": names["architecture"], "likelihood": names["likelihood"]}
    )
