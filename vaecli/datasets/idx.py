"""The datasets in MNIST's IDX format: ``mnist``, ``fashion-mnist``, ``kmnist`` and ``emnist``.

Each is read straight from ``DATA_DIR/FOLDER/raw`` (torchvision's layout) when its files are
there, and fetched by torchvision (which checks the checksums it publishes) when they are not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaecli.datasets.base import ImageData, check_split, fetch, fixed_shape
from vaecli.errors import UsageError, VaeError
from vaecli.options import as_bool

IDX_MAGIC = {3: 0x0803, 1: 0x0801}  # unsigned bytes, 3 or 1 dimensions

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: The SHA-256 of each uncompressed MNIST file (as published with the dataset's mirrors' files).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: EMNIST's splits (torchvision's names) and how many training and test images each has.
EMNIST_SPLITS = {
    "byclass": (697932, 116323),
    "bymerge": (697932, 116323),
    "balanced": (112800, 18800),
    "letters": (124800, 20800),
    "digits": (240000, 40000),
    "mnist": (60000, 10000),
}


def read_idx(path: Path, dims: int, sha256: str | None = None) -> torch.Tensor | None:
    """An uncompressed IDX file of unsigned bytes (MNIST's format) as a uint8 tensor; None when
    it is missing (torchvision then fetches it). A file that is there but is not such a file, or
    whose checksum is not ``sha256``, is an error naming it: it is never read as images."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaeError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = 4 + 4 * dims
    fix = "delete it to download it again"
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if len(data) < header or magic != IDX_MAGIC[dims]:
        got = "too short for a header" if len(data) < header else f"magic number {magic:#010x}"
        want = f"{IDX_MAGIC[dims]:#010x}"
        raise VaeError(f"{path} is not an IDX file of {dims}-d bytes ({got}, expected {want}); {fix}")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    if len(data) != header + math.prod(shape):
        raise VaeError(
            f"{path} is damaged: its header says {'x'.join(map(str, shape))} values, so "
            f"{header + math.prod(shape)} bytes, but it has {len(data)}; {fix}"
        )
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise VaeError(f"{path} is damaged: its checksum is not the published one ({sha256[:12]}); {fix}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*shape)


def _idx_pair(raw: Path, images_file: str, labels_file: str, checksums: dict[str, str]) -> ImageData | None:
    """Images and labels from two IDX files in ``raw``, checked to agree; None if one is missing."""
    images = read_idx(raw / images_file, 3, checksums.get(images_file))
    labels = read_idx(raw / labels_file, 1, checksums.get(labels_file))
    if images is None or labels is None:
        return None
    if images.shape[0] != labels.shape[0]:
        raise VaeError(
            f"{raw / labels_file} holds {labels.shape[0]} labels for the {images.shape[0]} images of "
            f"{raw / images_file}: one of them is from another set; delete both to download them again"
        )
    return ImageData(images=images.unsqueeze(1), labels=labels.long(), name="")


def _idx_dataset(
    name: str, raw: Path, files: tuple[str, str], download: bool | str, make: Callable[[], Any],
    checksums: dict[str, str] | None = None,
) -> ImageData:  # fmt: skip
    """An IDX dataset's split: read from ``raw`` when its two files are there, else fetched
    (``make`` builds the torchvision dataset that downloads them) and read again."""
    fetch_it = as_bool(download, "download")
    data = _idx_pair(raw, *files, checksums or {})
    if data is None:
        fetch(name, raw, list(files), fetch_it, make)
        data = _idx_pair(raw, *files, checksums or {})
        if data is None:
            raise VaeError(f"{name}: torchvision did not leave {', '.join(files)} in {raw}")
    return ImageData(data.images, data.labels, name)


def _torchvision(cls_name: str, root: Path, **options: Any) -> Callable[[], Any]:
    def make() -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, cls_name)(str(root), download=True, **options)

    return make


def _mnist_like(name: str, folder: str, cls_name: str, checksums: dict[str, str] | None = None) -> Callable:
    """The factory of an MNIST-layout dataset kept in ``DATA_DIR/FOLDER/raw``."""

    def factory(root: Path, split: str, download: bool | str = True) -> ImageData:
        check_split(name, split)
        prefix = "train" if split == "train" else "t10k"
        files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        make = _torchvision(cls_name, Path(root), train=split == "train")
        return _idx_dataset(name, Path(root) / folder / "raw", files, download, make, checksums)

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = (
        f"{name}: 28x28 grey images with labels, from ``root/{folder}/raw`` (torchvision's "
        f"{cls_name} downloads it there when missing)."
    )
    factory.shape_of = _shape_28  # type: ignore[attr-defined]
    return factory


_shape_28 = fixed_shape(1, 28, 28)


def mnist(root: Path, split: str, download: bool | str = True) -> ImageData:
    """MNIST from ``root/MNIST/raw``, downloaded there by torchvision when missing; the files are
    checked against their published SHA-256."""
    check_split("mnist", split)
    prefix = "train" if split == "train" else "t10k"
    files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    make = _torchvision("MNIST", Path(root), train=split == "train")
    return _idx_dataset("MNIST", Path(root) / "MNIST" / "raw", files, download, make, MNIST_SHA256)


mnist.shape_of = _shape_28  # type: ignore[attr-defined]
fashion_mnist = _mnist_like("fashion-mnist", "FashionMNIST", "FashionMNIST")
kmnist = _mnist_like("kmnist", "KMNIST", "KMNIST")


def emnist(root: Path, split: str, download: bool | str = True, subset: str = "balanced") -> ImageData:
    """EMNIST's ``subset`` (byclass, bymerge, balanced, letters, digits, mnist) from
    ``root/EMNIST/raw``, downloaded by torchvision when missing. EMNIST's files hold each image
    transposed; here they are upright, as MNIST's are. (``subset``, not ``split``: ``split`` is
    train or test, as for every dataset.)"""
    check_split("emnist", split)
    if subset not in EMNIST_SPLITS:
        raise UsageError(f"option subset: unknown '{subset}' (use {', '.join(EMNIST_SPLITS)})")
    prefix = f"emnist-{subset}-{'train' if split == 'train' else 'test'}"
    files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    make = _torchvision("EMNIST", Path(root), split=subset, train=split == "train")
    data = _idx_dataset("EMNIST", Path(root) / "EMNIST" / "raw", files, download, make)
    return ImageData(data.images.transpose(-1, -2).contiguous(), data.labels, "emnist")


def _emnist_shape(download: bool | str = True, subset: str = "balanced") -> tuple[int, int, int]:
    if subset not in EMNIST_SPLITS:
        raise UsageError(f"option subset: unknown '{subset}' (use {', '.join(EMNIST_SPLITS)})")
    return _shape_28(download)


emnist.shape_of = _emnist_shape  # type: ignore[attr-defined]
