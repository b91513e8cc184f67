"""``cifar10``: CIFAR-10's python batches (``cifar-10-batches-py``), read with an unpickler that
builds nothing but the batches' dicts, lists, bytes and numpy arrays.

The batches are pickles, the one format of theirs; a pickle can run any code when it is loaded, so
this one may only name numpy's array reconstructor, ``numpy.ndarray`` and ``numpy.dtype``: a file
that asks for anything else is refused, not run.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaecli.datasets.base import ImageData, check_split, fetch, fixed_shape
from vaecli.errors import VaeError
from vaecli.options import as_bool
from vaecli.suggestions import suggest_colour

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
PER_BATCH = 10000
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # (how Python 2's pickles hold the bytes of an array)
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One CIFAR python batch: images (N, 3, 32, 32) uint8 and their labels; a file that is not
    such a batch (damaged, truncated, or asking to build anything else) is one error naming it."""
    fix = "delete it to download it again"
    try:
        batch = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except OSError as exc:
        raise VaeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # (a truncated pickle raises EOFError, a damaged one anything)
        raise VaeError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc}); {fix}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise VaeError(f"{path} is not a CIFAR python batch (no b'data' array of N x 3072 bytes); {fix}")
    if not (isinstance(labels, list) and len(labels) == data.shape[0]):
        raise VaeError(f"{path} is damaged: its labels do not match its {data.shape[0]} images; {fix}")
    return data.reshape(-1, 3, 32, 32), [int(label) for label in labels]


def cifar10(root: Path, split: str, download: bool | str = True) -> ImageData:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (torchvision downloads it there when missing, and
    checks its checksum): 50,000 training and 10,000 test images, 32x32 RGB, with labels."""
    check_split("cifar10", split)
    fetch_it = as_bool(download, "download")
    where = Path(root) / FOLDER
    files = TRAIN_FILES if split == "train" else TEST_FILES
    if not all((where / name).is_file() for name in files):
        fetch("CIFAR-10", where, files, fetch_it, lambda: _download(Path(root)))
    parts = [read_batch(where / name) for name in files]
    images = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    labels = torch.tensor([label for _, batch in parts for label in batch])
    return ImageData(images=images, labels=labels, name="cifar10")


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


cifar10.shape_of = fixed_shape(3, 32, 32)  # type: ignore[attr-defined]
cifar10.suggest = suggest_colour  # type: ignore[attr-defined]
