"""Shared fixtures: the real MNIST copy (found through VAECLI_DATA_DIR) and a small trained run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaecli.datasets import DATA_DIR_ENV


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw, from $VAECLI_DATA_DIR (the README's test command sets it)."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value or not (Path(value) / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.fail(f"set {DATA_DIR_ENV} to a folder holding MNIST/raw (the README's test command does)")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def small_run(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder from a short real training (shared by tests that only read it)."""
    from vaecli.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "small"
    config = TrainConfig(
        data_dir=str(mnist_root),
        epochs=2,
        limit_train=6000,
        limit_test=1000,
        latent_dim=8,
        arch_options={"hidden": "128"},
        device="cpu",
        out=str(out),
    )
    return train(config).run_dir


@pytest.fixture
def no_network_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make MNIST downloads fail fast and the same way on every machine (a closed local port)."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
