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


@pytest.fixture(scope="session")
def stopped_run(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``--keep best --patience 3`` run that stopped early, its best epoch not its last."""
    from selection_runs import noisy_config

    from vaecli.train import train

    out = tmp_path_factory.mktemp("selection") / "noisy"
    train(noisy_config(mnist_root, out))
    return out


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_root: Path) -> Path:
    """A test's own folder as the working directory, with $VAECLI_DATA_DIR at the MNIST copy."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_root))
    return tmp_path


@pytest.fixture
def no_network_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make MNIST downloads fail fast and the same way on every machine (a closed local port)."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def marginals_neg_elbo(mnist_root: Path, limit_train: int, limit_test: int) -> float:
    """The mean test -ELBO (nats) of the best binarised-MNIST model that ignores z: independent
    pixels with the first ``limit_train`` training images' rates of ones, scored by
    torch.distributions on the first ``limit_test`` test images as training binarises them. A
    model learns from its codes only when it goes below this bar (training starts at it)."""
    from torch.distributions import Bernoulli as TorchBernoulli

    from vaecli.datasets import mnist
    from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed
    from vaecli.likelihoods import Bernoulli

    rates = mnist(mnist_root, "train").images[:limit_train].double().div(255).mean(0).clamp(1e-4, 1 - 1e-4)
    test_x = prepare_fixed(Bernoulli(), mnist(mnist_root, "test").images[:limit_test], TEST_PREPARE_SEED)
    return -TorchBernoulli(probs=rates).log_prob(test_x.double()).flatten(1).sum(1).mean().item()


@pytest.fixture(autouse=True)
def no_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain progress lines (stderr is no terminal under pytest) only in the tests that ask for
    them: a slow machine must not add a line to the stderr other tests read."""
    from vaecli.console import PROGRESS_ENV

    monkeypatch.setenv(PROGRESS_ENV, "3600")


@pytest.fixture(autouse=True)
def data_cache_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The dataset cache in a folder of the test session's: never in the shared data folder."""
    from vaecli.datasets.cache import CACHE_ENV

    if not os.environ.get(CACHE_ENV):
        monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.getbasetemp() / "data-cache"))
