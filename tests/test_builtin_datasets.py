"""The built-in datasets, each loaded from a few images written here in its real on-disk format,
through the real code path; damaged files give one line naming them; names are taken as users
type them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaecli import registry
from vaecli.cli import main
from vaecli.datasets import load_dataset
from vaecli.errors import UsageError, VaeError


def write_idx(path: Path, values: torch.Tensor) -> None:
    """``values`` (uint8) as an IDX file: magic 0x08 (unsigned bytes) and the dimension count,
    each size as a big-endian 32-bit number, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(n.to_bytes(4, "big") for n in values.shape)
    path.write_bytes(header + values.contiguous().numpy().tobytes())


def write_mnist_layout(raw: Path, prefixes: dict[str, str], counts: dict[str, int], seed: int = 0) -> dict:
    """Random 28x28 images and labels for each split, as ``PREFIX-images-idx3-ubyte`` and
    ``PREFIX-labels-idx1-ubyte`` in ``raw``; returns what was written, by split."""
    generator = torch.Generator().manual_seed(seed)
    written = {}
    for split, prefix in prefixes.items():
        images = torch.randint(0, 256, (counts[split], 28, 28), generator=generator).to(torch.uint8)
        labels = torch.randint(0, 10, (counts[split],), generator=generator).to(torch.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


IDX_SETS = {
    "fashion-mnist": ("FashionMNIST", {"train": "train", "test": "t10k"}, {}),
    "kmnist": ("KMNIST", {"train": "train", "test": "t10k"}, {}),
    "emnist": (
        "EMNIST",
        {"train": "emnist-letters-train", "test": "emnist-letters-test"},
        {"subset": "letters"},
    ),
}


@pytest.mark.parametrize("name", sorted(IDX_SETS))
def test_idx_datasets_load_from_their_files(tmp_path, name):
    folder, prefixes, options = IDX_SETS[name]
    written = write_mnist_layout(tmp_path / folder / "raw", prefixes, {"train": 12, "test": 5})
    for split, (images, labels) in written.items():
        data = load_dataset(name, split, {**options, "download": "false"}, tmp_path)
        assert data.images.shape == (len(images), 1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.tolist() == labels.tolist()
        # EMNIST's files hold each image transposed; the dataset gives them upright.
        expected = images.transpose(1, 2) if name == "emnist" else images
        assert torch.equal(data.images[:, 0], expected)


@pytest.mark.parametrize("typed", ["FashionMNIST", "fashion_mnist", "Fashion-MNIST", "fashionmnist"])
def test_names_are_taken_as_users_type_them(typed):
    assert registry.datasets.canonical(typed) == "fashion-mnist"
    assert registry.datasets.canonical(f"vaecli:{typed}") == "vaecli:fashion-mnist"


def test_a_misspelt_name_gets_a_suggestion():
    with pytest.raises(UsageError, match=r"unknown dataset 'fashon-mnist' \(did you mean 'fashion-mnist'\?"):
        registry.datasets.entry("fashon-mnist")


def test_missing_files_without_download_say_which_files_go_where(tmp_path):
    with pytest.raises(VaeError) as info:
        load_dataset("kmnist", "test", {"download": "false"}, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "KMNIST" / "raw") in message and "t10k-images-idx3-ubyte" in message
    assert "\n" not in message and not (tmp_path / "KMNIST").exists()


def test_damaged_and_mismatched_idx_files_are_named(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_mnist_layout(raw, {"train": "train"}, {"train": 10})
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(VaeError, match=f"{images} is damaged: its header says 10x28x28 values"):
        load_dataset("fashion-mnist", "train", {"download": "false"}, tmp_path)
    write_mnist_layout(raw, {"train": "train"}, {"train": 10})
    write_idx(raw / "train-labels-idx1-ubyte", torch.zeros(9, dtype=torch.uint8))
    with pytest.raises(VaeError, match="holds 9 labels for the 10 images"):
        load_dataset("fashion-mnist", "train", {"download": "false"}, tmp_path)


def test_bad_emnist_subset_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"option subset: unknown 'greek' \(use byclass, bymerge, balanced"):
        load_dataset("emnist", "train", {"subset": "greek"}, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("typed", ["FashionMNIST", "kmnist", "emnist"])
def test_vae_train_runs_on_each(tmp_path, typed, capsys):
    name = registry.datasets.canonical(typed)
    folder, prefixes, options = IDX_SETS[name]
    write_mnist_layout(tmp_path / "data" / folder / "raw", prefixes, {"train": 300, "test": 60})
    out = tmp_path / "run"
    argv = ["train", "--data", typed, "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--limit-train",
            "256", "--batch-size", "64", "--hidden", "32", "--latent-dim", "4", "--device", "cpu", "--quiet",
            "--out", str(out)]  # fmt: skip
    for key, value in options.items():
        argv += ["--data-opt", f"{key}={value}"]
    assert main(argv) == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert f"data: {name}\n" in config  # recorded as registered, however it was typed
