"""``checkpoint.safetensors``: everything needed to resume a run exactly.

Tensors hold the weights, the optimiser's state, the random-number states of every generator
the training loop draws from and, mid-epoch, the epoch's shuffling order; the JSON metadata
holds the optimiser's and schedule's settings and the position (epoch, step). Written through
a temporary file and renamed, so a crash leaves the previous checkpoint intact; read without
unpickling anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as serialise

from vaecli.errors import VaeError
from vaecli.fileio import strict_json, write_bytes_atomic
from vaecli.modelfile import format_version, load_weights

CHECKPOINT_FILE = "checkpoint.safetensors"
OWN_TENSORS = ("ema.",)  # the prefixes of tensors training's own parts keep in a checkpoint
FORMAT = "vaecli-checkpoint"
FORMAT_VERSION = 3  # 2: the run's config.yaml records architecture options with their defaults;
# 3: the model's output offset is stored (OFFSET_FORMAT)


@dataclass
class Position:
    """Where training stands: ``step`` steps of ``epoch`` are done (0 = the epoch has not
    started); ``total`` is the epoch's running sum of -ELBO over ``seen`` images (and
    ``reconstruction`` and ``kl`` those of its two terms, ``loss`` that of the objective's loss),
    ``skipped`` the non-finite steps skipped so far, ``seconds`` the time spent in the epoch."""

    epoch: int = 1
    step: int = 0
    total: float = 0.0
    reconstruction: float = 0.0
    kl: float = 0.0
    seen: int = 0
    skipped: int = 0
    seconds: float = 0.0
    loss: float = 0.0
    outliers: int = 0  # steps not applied because the gradient's norm passed --grad-skip


@dataclass
class TrainingState:
    """What a checkpoint restores."""

    position: Position
    rng: dict[str, torch.Tensor]
    order: torch.Tensor | None = None  # the epoch's shuffling order, mid-epoch only
    extra: dict[str, Any] = field(default_factory=dict)
    #: Tensors of the training's own parts (``ema.NAME``: the weights' moving average).
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The states of the generators training draws from: the CPU's and the device's."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states[f"cuda{device.index or 0}"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        states["mps"] = torch.mps.get_rng_state()
    return states


def set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and f"cuda{device.index or 0}" in states:
        torch.cuda.set_rng_state(states[f"cuda{device.index or 0}"], device)
    elif device.type == "mps" and "mps" in states:
        torch.mps.set_rng_state(states["mps"])


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainingState,
) -> None:
    """Write a checkpoint atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    optim_scalars: dict[str, dict[str, Any]] = {}
    for index, values in optim["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                optim_scalars.setdefault(str(index), {})[key] = value
    for name, value in state.rng.items():
        tensors[f"rng.{name}"] = value.cpu().contiguous()
    if state.order is not None:
        tensors["order"] = state.order.cpu().contiguous()
    tensors.update({k: v.cpu().contiguous() for k, v in state.tensors.items() if k.startswith(OWN_TENSORS)})
    header = {
        "format_version": FORMAT_VERSION,
        "position": asdict(state.position),
        "optimizer_param_groups": optim["param_groups"],
        "optimizer_scalars": optim_scalars,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": state.extra,
    }
    # Serialised in memory and written by vaecli: safetensors' own save_file writes a temporary
    # file of its own (mode 0600, left behind by a kill) and reports a full disk unhelpfully.
    write_bytes_atomic(path, serialise(tensors, metadata={"format": "pt", FORMAT: strict_json(header)}))


def checkpoint_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's JSON metadata (position, settings, ``extra``), checked to be a mapping with
    a readable format version."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[FORMAT])
        format_version(header, default=0)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise VaeError(f"{path} is not a readable vaecli checkpoint ({exc or 'nested too deeply'})") from exc
    if not isinstance(header, dict):
        raise VaeError(f"{path} is not a readable vaecli checkpoint (its header is not a mapping)")
    return header


def checkpoint_format_version(path: str | os.PathLike[str]) -> int:
    """The format version a checkpoint was written in."""
    return format_version(checkpoint_header(path), default=0)


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each state tensor of a parameter's shape (Adam's moments) the parameter's memory
    layout: a checkpoint holds them contiguous, and the fused step reads a parameter and its
    moments as flat arrays, so a channels-last weight beside a contiguous moment would be updated
    with another entry's moment."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    if value.stride() != param.stride():
                        state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
) -> TrainingState:
    """Restore model, optimiser and schedule from ``path``; return the rest of the state."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[FORMAT])
            version = format_version(header, default=0)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, ValueError, AttributeError, RecursionError) as exc:
        raise VaeError(f"{path} is not a readable vaecli checkpoint ({exc or 'nested too deeply'})") from exc
    if version > FORMAT_VERSION:
        raise VaeError(f"{path} is a newer checkpoint format than this vaecli reads: upgrade vaecli")
    try:
        weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        load_weights(model, weights, version)
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optim_state.setdefault(int(index), {})[name] = value
        for index, values in header["optimizer_scalars"].items():
            optim_state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": optim_state, "param_groups": header["optimizer_param_groups"]})
        match_layouts(optimizer)
        if scheduler is not None and header["scheduler"] is not None:
            scheduler.load_state_dict(header["scheduler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VaeError(f"{path} does not fit this run's model and optimiser ({first})") from exc
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    position = Position(**header["position"])
    order = tensors.get("order")
    own = {k: v for k, v in tensors.items() if k.startswith(OWN_TENSORS)}
    order = None if order is None else order.to(device)
    return TrainingState(position, rng, order, header.get("extra", {}), own)
