"""``--precision``: the arithmetic training runs in, chosen once per device.

``32`` is plain float32. ``bf16`` runs the forward pass under bfloat16 autocast (same exponent
range as float32, so no loss scaling). ``16-mixed`` runs it under float16 autocast with a
gradient scaler. ``auto`` is bf16 on a CUDA GPU that supports it and float32 everywhere else.
Losses, log-probabilities and the optimiser's state stay in float32 in every mode.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from vaecli.config import PRECISIONS
from vaecli.errors import UsageError


@dataclass(frozen=True)
class Precision:
    """What ``--precision`` resolved to on a device."""

    name: str  # "32", "bf16" or "16-mixed"
    autocast_dtype: torch.dtype | None
    scaled: bool  # float16 gradients need a GradScaler

    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """The forward pass's context: autocast to ``autocast_dtype``, or nothing for float32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


def choose_precision(request: str, device: torch.device, cuda_bf16: bool | None = None) -> Precision:
    """Resolve ``--precision`` for ``device``; ``cuda_bf16`` says whether the GPU has bfloat16
    (read from torch unless given, so tests can ask about hardware this machine lacks)."""
    if request not in PRECISIONS:
        raise UsageError(f"unknown precision '{request}' (use {', '.join(PRECISIONS)})")
    if request == "auto":
        if device.type == "cuda":
            has_bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
            request = "bf16" if has_bf16 else "32"
        else:
            # CPUs stay float32 unless asked: bfloat16 rounds each product's inputs to 8 significant
            # bits, and a CPU without bfloat16 instructions converts in software (slower, not faster).
            request = "32"
    return MODES[request]


MODES = {
    "32": Precision("32", None, False),
    "bf16": Precision("bf16", torch.bfloat16, False),
    "16-mixed": Precision("16-mixed", torch.float16, True),
}
