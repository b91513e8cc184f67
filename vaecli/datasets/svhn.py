"""``svhn``: the Street View House Numbers' cropped digits (``train_32x32.mat``, ``test_32x32.mat``),
32x32 RGB, with labels 0-9 (the files' 10 is the digit 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaecli.datasets.base import ImageData, check_split, fetch, fixed_shape
from vaecli.datasets.matfiles import read_mat, require_scipy
from vaecli.errors import VaeError
from vaecli.options import as_bool
from vaecli.suggestions import suggest_colour

FOLDER = "SVHN"


def svhn(root: Path, split: str, download: bool | str = True) -> ImageData:
    """SVHN from ``root/SVHN`` (torchvision downloads it there when missing, and checks its
    checksum): 73,257 training and 26,032 test images."""
    check_split("svhn", split)
    require_scipy("svhn")
    fetch_it = as_bool(download, "download")
    where = Path(root) / FOLDER
    name = f"{split}_32x32.mat"
    if not (where / name).is_file():
        fetch("SVHN", where, [name], fetch_it, lambda: _download(where, split))
    content = read_mat(where / name, ("X", "y"), "svhn")
    x, y = content["X"], content["y"].reshape(-1)
    if not (x.ndim == 4 and x.shape[:3] == (32, 32, 3) and x.dtype == np.uint8 and len(y) == x.shape[3]):
        raise VaeError(
            f"{where / name} is damaged: X has shape {x.shape} ({x.dtype}) for {len(y)} labels, "
            "expected 32 x 32 x 3 x N bytes; delete it to download it again"
        )
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(y.astype(np.int64) % 10)
    return ImageData(images=images, labels=labels, name="svhn")


def _download(where: Path, split: str) -> None:
    from torchvision.datasets import SVHN

    SVHN(str(where), split=split, download=True)


svhn.shape_of = fixed_shape(3, 32, 32)  # type: ignore[attr-defined]
svhn.suggest = suggest_colour  # type: ignore[attr-defined]
