"""The built-in datasets, each loaded from a few images written here in its real on-disk format,
through the real code path; damaged files give one line naming them; names are taken as users
type them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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


# --- binarized-mnist: Larochelle's .amat text files ---------------------------------------------


def write_amat(path: Path, bits: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(int(b)) for b in row) + "\n" for row in bits.flatten(1)))


def test_binarized_mnist_loads_its_splits_as_0_and_255(tmp_path):
    generator = torch.Generator().manual_seed(1)
    written = {}
    for split, file in (("train", "train"), ("val", "valid"), ("test", "test")):
        bits = torch.randint(0, 2, (7, 28, 28), generator=generator)
        write_amat(tmp_path / "BinarizedMNIST" / f"binarized_mnist_{file}.amat", bits)
        written[split] = bits
    for split, bits in written.items():
        data = load_dataset("binarized-mnist", split, {"download": "false"}, tmp_path)
        assert data.images.shape == (7, 1, 28, 28) and data.labels is None
        assert torch.equal(data.images[:, 0], (bits * 255).to(torch.uint8))
        assert "static binarisation" in data.protocol
    # The Bernoulli likelihood's binarisation keeps such images exactly as they are.
    from vaecli.likelihoods import Bernoulli

    data = load_dataset("binarized-mnist", "test", {"download": "false"}, tmp_path)
    assert torch.equal(Bernoulli().prepare(data.images), data.images.float() / 255)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "line 1 holds 392 pixels, not 784"),
        (
            lambda text: text.replace("1", "7", 1),
            "is not a binarised-MNIST .amat file (line 1 holds a byte 0x37)",
        ),
    ],
    ids=["truncated", "foreign character"],
)
def test_damaged_amat_files_are_named(tmp_path, damage, message):
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_test.amat"
    write_amat(path, torch.ones(1, 28, 28, dtype=torch.long))
    path.write_text(damage(path.read_text()))
    with pytest.raises(VaeError, match=f"^{path}.*{message.replace('(', '.').replace(')', '.')}"):
        load_dataset("binarized-mnist", "test", {"download": "false"}, tmp_path)


# --- cifar10: the python batches, read by an unpickler that builds nothing but arrays -------------


def write_cifar(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar10_loads_its_batches(tmp_path):
    written = write_cifar(tmp_path)
    train = load_dataset("cifar10", "train", {"download": "false"}, tmp_path)
    test = load_dataset("cifar10", "test", {"download": "false"}, tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    first = written["data_batch_1"][0][0]  # 1024 red, then 1024 green, then 1024 blue values
    assert torch.equal(train.images[0, 1], torch.from_numpy(first[1024:2048].reshape(32, 32)))


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_cifar_batch_that_asks_to_run_code_is_refused_not_run(tmp_path, monkeypatch):
    import pickle

    write_cifar(tmp_path)
    monkeypatch.chdir(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}, protocol=2))
    with pytest.raises(
        VaeError, match="is not a CIFAR python batch .UnpicklingError: it asks for posix.system"
    ):
        load_dataset("cifar10", "test", {"download": "false"}, tmp_path)
    assert not (tmp_path / "pwned").exists()
    batch.write_bytes(batch.read_bytes()[:20])
    with pytest.raises(VaeError, match=f"{batch} is not a CIFAR python batch"):
        load_dataset("cifar10", "test", {"download": "false"}, tmp_path)


# --- svhn and omniglot: MATLAB .mat files ------------------------------------------------------


def test_svhn_loads_its_mat_files_with_0_for_the_files_10(tmp_path):
    import scipy.io

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [9], [10]], dtype=np.uint8)
    (tmp_path / "SVHN").mkdir()
    scipy.io.savemat(tmp_path / "SVHN" / "test_32x32.mat", {"X": x, "y": y})
    data = load_dataset("svhn", "test", {"download": "false"}, tmp_path)
    assert data.images.shape == (6, 3, 32, 32) and data.labels.tolist() == [0, 1, 2, 3, 9, 0]
    assert torch.equal(data.images[4], torch.from_numpy(x[:, :, :, 4]).permute(2, 0, 1))
    (tmp_path / "SVHN" / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(VaeError, match="test_32x32.mat is not a readable .mat file"):
        load_dataset("svhn", "test", {"download": "false"}, tmp_path)


def write_omniglot(root: Path, train: np.ndarray, test: np.ndarray) -> None:
    """Images (N, 28, 28) in [0, 1] as Burda's chardata.mat: 784 x N, each image column by column."""
    import scipy.io

    def columns(images: np.ndarray) -> np.ndarray:
        return np.stack([image.T.reshape(-1) for image in images], axis=1)

    def one_hot(n: int) -> np.ndarray:
        return np.eye(50)[:, np.arange(n) % 50]

    (root / "OMNIGLOT").mkdir(parents=True)
    scipy.io.savemat(root / "OMNIGLOT" / "chardata.mat", {
        "data": columns(train), "target": one_hot(len(train)),
        "testdata": columns(test), "testtarget": one_hot(len(test)),
    })  # fmt: skip


def test_omniglot_loads_burdas_file_upright(tmp_path):
    rng = np.random.default_rng(3)
    train, test = rng.random((5, 28, 28)), rng.random((3, 28, 28))
    train[0] = 0.0
    train[0, :3, :] = 1.0  # the first image: a bar along its top
    write_omniglot(tmp_path, train, test)
    data = load_dataset("omniglot", "train", {"download": "false"}, tmp_path)
    assert data.images.shape == (5, 1, 28, 28) and data.labels.tolist() == [0, 1, 2, 3, 4]
    assert data.images[0, 0, :3].eq(255).all() and data.images[0, 0, 3:].eq(0).all()
    expected = torch.from_numpy(np.round(test * 255).astype(np.uint8))
    assert torch.equal(
        load_dataset("omniglot", "test", {"download": "false"}, tmp_path).images[:, 0], expected
    )


@pytest.mark.parametrize("name", ["svhn", "omniglot"])
def test_without_scipy_a_mat_dataset_says_so_before_it_downloads(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    data = tmp_path / "data"
    data.mkdir()
    likelihood = {"svhn": "gaussian", "omniglot": "bernoulli"}[name]  # (so no note comes before the error)
    argv = ["train", "--data", name, "--likelihood", likelihood, "--data-dir", str(data),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vae: error: dataset '{name}' reads .mat files with scipy, which is not installed: "
        "pip install 'vaecli[datasets]'"
    ]
    assert list(data.iterdir()) == [] and not (tmp_path / "run").exists()


# --- celeba: the aligned JPEGs and the partition file --------------------------------------------


def write_celeba(root: Path, splits: dict[str, int]) -> None:
    from PIL import Image

    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines, number = [], 0
    rng = np.random.default_rng(4)
    for code, count in zip("012", splits.values(), strict=True):
        for _ in range(count):
            number += 1
            name = f"{number:06d}.jpg"
            pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name, quality=90)
            lines.append(f"{name} {code}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_crops_the_faces_and_keeps_the_official_split(tmp_path):
    write_celeba(tmp_path, {"train": 4, "val": 2, "test": 3})
    test = load_dataset("celeba", "test", {"download": "false", "size": "16"}, tmp_path)
    assert test.images.shape == (3, 3, 16, 16) and test.labels is None
    assert load_dataset("celeba", "train", {"download": "false"}, tmp_path).images.shape == (4, 3, 64, 64)
    assert load_dataset("celeba", "val", {"download": "false", "size": "8"}, tmp_path).images.shape[0] == 2
    with pytest.raises(UsageError, match="option size must be from 1 to 148"):
        load_dataset("celeba", "test", {"size": "200"}, tmp_path)
    partition = tmp_path / "celeba" / "list_eval_partition.txt"
    partition.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(VaeError, match="line 2 is '000002.jpg train', expected 'NAME.jpg 0|1|2'"):
        load_dataset("celeba", "test", {"download": "false"}, tmp_path)


# --- every new dataset through `vae train`, on the generated files -------------------------------


def _write(name: str, root: Path) -> list[str]:
    """Files for ``name`` in ``root``; the dataset options a quick run needs."""
    if name == "binarized-mnist":
        for file in ("train", "valid", "test"):
            write_amat(
                root / "BinarizedMNIST" / f"binarized_mnist_{file}.amat", torch.randint(0, 2, (80, 28, 28))
            )
    elif name == "cifar10":
        write_cifar(root, per_batch=16)
    elif name == "svhn":
        import scipy.io

        (root / "SVHN").mkdir(parents=True)
        for split in ("train", "test"):
            x = np.random.default_rng(5).integers(0, 256, (32, 32, 3, 40), dtype=np.uint8)
            scipy.io.savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": x, "y": np.ones((40, 1), np.uint8)})
    elif name == "omniglot":
        rng = np.random.default_rng(6)
        write_omniglot(root, rng.random((80, 28, 28)), rng.random((20, 28, 28)))
    elif name == "celeba":
        write_celeba(root, {"train": 24, "val": 2, "test": 8})
        return ["size=16"]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binarized-mnist", "cifar10", "svhn", "omniglot", "celeba"])
def test_vae_train_runs_on_each_new_dataset(tmp_path, name, capsys):
    options = _write(name, tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--data", name, "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--batch-size",
            "16", "--hidden", "32", "--latent-dim", "4", "--device", "cpu", "--quiet", "--out", str(out),
            *(f"--data-opt={o}" for o in options)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    from vaecli.modelfile import read_header

    header = read_header(out / "model.safetensors")
    assert header["data"]["name"] == name and header["parts"]["dataset"]["distribution"] == "vaecli"
    colour = name in ("cifar10", "svhn", "celeba")
    assert header["model"]["likelihood"] == ("gaussian" if colour else "bernoulli")
    if name == "binarized-mnist":
        assert "static binarisation" in header["data"]["protocol"]
