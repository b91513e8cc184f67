"""Choosing the device once: auto picks cuda, then mps, then cpu."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from vaecli.errors import UsageError, VaeError

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


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
