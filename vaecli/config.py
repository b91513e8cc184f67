"""Training options as plain data: no torch here, so the CLI can read the defaults cheaply."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaecli import registry
from vaecli.errors import UsageError

LR_SCHEDULES = ("cosine", "constant")
FOLDER_PREFIX = "folder:"


def resolve_data(data: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``--data folder:PATH`` or ``--data PATH`` (a path: it has a slash or starts with . or ~)
    is the built-in ``folder`` dataset with an absolute ``path`` option; names pass through."""
    if data.startswith(FOLDER_PREFIX):
        path = data[len(FOLDER_PREFIX) :]
    elif "/" in data or os.sep in data or data.startswith((".", "~")):
        path = data
    else:
        return data, options
    return "folder", {**options, "path": str(Path(path).expanduser().resolve())}


@dataclass
class TrainConfig:
    """Every training option; ``vae train`` fills one from its flags."""

    data: str = "mnist"
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    arch: str = "mlp"
    arch_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 32
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    force: bool = False
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self) -> None:
        self.data, self.data_options = resolve_data(self.data, dict(self.data_options))

    def validate(self) -> None:
        """Reject impossible values before any work starts."""
        positive = {
            "--epochs": self.epochs,
            "--batch-size": self.batch_size,
            "--latent-dim": self.latent_dim,
        }
        for flag, value in positive.items():
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")
        for flag, value in {"--limit-train": self.limit_train, "--limit-test": self.limit_test}.items():
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"unknown --lr-schedule '{self.lr_schedule}' (use {', '.join(LR_SCHEDULES)})")
        for kind, name in (
            ("dataset", self.data),
            ("likelihood", self.likelihood),
            ("architecture", self.arch),
        ):
            registry.BY_KIND[kind].entry(name)
        from vaecli.model import build_likelihood  # torch is imported only when work starts

        build_likelihood(self.likelihood, self.likelihood_options)  # checks its options now
