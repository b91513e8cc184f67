"""``binarized-mnist``: Larochelle's fixed binarisation of MNIST (the ``.amat`` text files of
Larochelle & Murray 2011) and its 50,000 / 10,000 / 10,000 split, the protocol of the published
"statically binarised MNIST" log-likelihoods.

Pixels are 0 or 255, so the Bernoulli likelihood's binarisation, bernoulli(pixel / 255), keeps
every image exactly as it is: the protocol is the files', and the model file says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaecli.datasets.base import ImageData, check_split, fetch, fixed_shape
from vaecli.errors import VaeError
from vaecli.options import as_bool

FOLDER = "BinarizedMNIST"
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
FILES = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}
SIZES = {"train": 50000, "valid": 10000, "test": 10000}
PIXELS = 784
PROTOCOL = "static binarisation (Larochelle & Murray 2011, binarized_mnist_*.amat)"
_ZERO, _ONE, _SPACE, _NEWLINE, _RETURN = (ord(c) for c in "01 \n\r")


def read_amat(path: Path) -> torch.Tensor:
    """An ``.amat`` file, one image per line as 784 numbers 0 or 1 separated by spaces, as uint8
    images (N, 1, 28, 28) of 0 and 255. Anything else (another character, a line of another
    length: a truncated file) is one error naming the file and the line."""
    try:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise VaeError(f"cannot read {path}: {exc.strerror or exc}") from None
    fix = "delete it to download it again"
    known = (raw == _ZERO) | (raw == _ONE) | (raw == _SPACE) | (raw == _NEWLINE) | (raw == _RETURN)
    if not known.all():
        at = int(np.flatnonzero(~known)[0])
        line = int((raw[:at] == _NEWLINE).sum()) + 1
        raise VaeError(
            f"{path} is not a binarised-MNIST .amat file (line {line} holds a byte {raw[at]:#04x}); {fix}"
        )
    digits = (raw == _ZERO) | (raw == _ONE)
    ends = np.flatnonzero(raw == _NEWLINE)
    if len(raw) and raw[-1] != _NEWLINE:
        ends = np.append(ends, len(raw) - 1)  # a last line without its newline
    per_line = np.diff(np.concatenate([[0], np.cumsum(digits)[ends]]))
    blank = per_line == 0
    if (per_line[~blank] != PIXELS).any():
        line = int(np.flatnonzero((per_line != PIXELS) & ~blank)[0]) + 1
        count = int(per_line[line - 1])
        raise VaeError(f"{path} is damaged: line {line} holds {count} pixels, not {PIXELS}; {fix}")
    bits = raw[digits] == _ONE
    images = torch.from_numpy(bits.astype(np.uint8) * 255).view(-1, 1, 28, 28)
    if images.shape[0] == 0:
        raise VaeError(f"{path} holds no images; {fix}")
    return images


def binarized_mnist(root: Path, split: str, download: bool | str = True) -> ImageData:
    """Larochelle's binarised MNIST from ``root/BinarizedMNIST`` (downloaded there when missing):
    ``train`` is its 50,000 training images, ``val`` its 10,000 validation images, ``test`` its
    10,000 test images. No labels (the files have none)."""
    check_split("binarized-mnist", split, ("train", "val", "test"))
    fetch_it = as_bool(download, "download")
    name = FILES["valid" if split == "val" else split]
    where = Path(root) / FOLDER
    path = where / name
    if not path.is_file():
        fetch("binarized-mnist", where, [name], fetch_it, lambda: _download(where, name))
    return ImageData(images=read_amat(path), labels=None, name="binarized-mnist", protocol=PROTOCOL)


def _download(where: Path, name: str) -> None:
    from torchvision.datasets.utils import download_url

    download_url(URL + name, str(where), name)


def _sources(root: Path, split: str, **_: object) -> list[Path]:
    return [Path(root) / FOLDER / FILES["valid" if split == "val" else split if split in FILES else "test"]]


binarized_mnist.shape_of = fixed_shape(1, 28, 28)  # type: ignore[attr-defined]
binarized_mnist.sources = _sources  # type: ignore[attr-defined]
binarized_mnist.splits = ("train", "val", "test")  # type: ignore[attr-defined]
