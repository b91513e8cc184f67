"""Choosing the device once: auto picks cuda, then mps, then cpu."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from vaecli.errors import UsageError, VaeError

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"
#: Where vaecli's convolutions run on channels-last (NHWC) tensors: on a CPU oneDNN's kernels for
#: them are faster (training the conv hierarchy 1.20x, --arch conv 1.09x; bench/conv_layout.py).
#: CUDA keeps the default layout until a GPU run of that benchmark has measured it.
CHANNELS_LAST_DEVICES = frozenset({"cpu"})
#: The packages whose modules are written for channels-last activations (a plugin's code may
#: .view() its activations, which refuses them): a model of other modules keeps the default layout.
LAYOUT_AWARE = frozenset({"vaecli", "torch"})


@dataclass(frozen=True)
class Hardware:
    """What the machine offers; read from torch unless given (tests pass their own)."""

    cuda_count: int
    mps: bool

    @classmethod
    def detect(cls) -> Hardware:
        mps = getattr(torch.backends, "mps", None)
        return cls(
            cuda_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            mps=bool(mps is not None and mps.is_available()),
        )


def choose_device(request: str = "auto", hardware: Hardware | None = None) -> torch.device:
    """The torch device for ``--device`` (auto | cpu | cuda | cuda:N | mps)."""
    request = request.strip().lower()
    match = re.fullmatch(r"(auto|cpu|mps|cuda)(?::(\d+))?", request)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"unknown device '{request}' (use {DEVICE_FORMS})")
    hw = hardware or Hardware.detect()
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if hw.cuda_count:
            return torch.device("cuda", 0)
        return torch.device("mps") if hw.mps else torch.device("cpu")
    if kind == "cuda":
        if not hw.cuda_count:
            raise VaeError("device 'cuda' was asked for but this machine has no usable CUDA GPU")
        n = int(index or 0)
        if n >= hw.cuda_count:
            raise VaeError(f"device 'cuda:{n}' does not exist (this machine has {hw.cuda_count})")
        return torch.device("cuda", n)
    if kind == "mps" and not hw.mps:
        raise VaeError("device 'mps' was asked for but Apple's MPS is not available here")
    return torch.device(kind)


def place(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` moved to ``device``, its 2-D convolutions' weights made channels-last where that
    is faster (their outputs, and the activations after them, follow), when every module in it
    is vaecli's or torch's own."""
    device = torch.device(device)
    model = model.to(device)
    modules = list(model.modules())
    convolutions = [m for m in modules if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    ours = all(type(m).__module__.partition(".")[0] in LAYOUT_AWARE for m in modules)
    if device.type in CHANNELS_LAST_DEVICES and ours:
        for convolution in convolutions:
            convolution.to(memory_format=torch.channels_last)
    return model
