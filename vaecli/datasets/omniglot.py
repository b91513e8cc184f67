"""``omniglot``: Burda et al.'s 28x28 Omniglot (``chardata.mat`` of the IWAE paper's code), the
split VAE papers report log-likelihoods on: 24,345 training and 8,070 test images, grey in [0, 1],
binarised afresh like MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaecli.datasets.base import ImageData, check_split, fetch, fixed_shape
from vaecli.datasets.matfiles import read_mat, require_scipy
from vaecli.errors import VaeError
from vaecli.options import as_bool

FOLDER = "OMNIGLOT"
FILE = "chardata.mat"
URL = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
KEYS = {"train": ("data", "target"), "test": ("testdata", "testtarget")}


def omniglot(root: Path, split: str, download: bool | str = True) -> ImageData:
    """Burda's Omniglot from ``root/OMNIGLOT/chardata.mat`` (downloaded there when missing). Each
    column of the file is one image of 784 values stored column by column; here they are 28x28
    uint8 images, upright, with the alphabet as the label."""
    check_split("omniglot", split)
    require_scipy("omniglot")
    fetch_it = as_bool(download, "download")
    where = Path(root) / FOLDER
    if not (where / FILE).is_file():
        fetch("Omniglot (Burda's 28x28)", where, [FILE], fetch_it, lambda: _download(where))
    images_key, labels_key = KEYS[split]
    content = read_mat(where / FILE, KEYS[split], "omniglot")
    data, target = np.asarray(content[images_key]), np.asarray(content[labels_key])
    if not (data.ndim == 2 and data.shape[0] == 784 and np.isfinite(data).all()
            and 0 <= data.min() and data.max() <= 1 and target.shape[-1] == data.shape[1]):  # fmt: skip
        raise VaeError(
            f"{where / FILE} is damaged: '{images_key}' has shape {data.shape}, expected 784 x N values in "
            f"[0, 1] with N labels; delete it to download it again"
        )
    # Column-major 28x28 images (the IWAE code reshapes with order='F'): transposed, they stand upright.
    pixels = torch.from_numpy(np.ascontiguousarray(data.T, dtype=np.float32)).view(-1, 28, 28).transpose(1, 2)
    images = pixels.mul(255).round_().to(torch.uint8).unsqueeze(1).contiguous()
    labels = torch.from_numpy(target.argmax(0).astype(np.int64)) if target.ndim == 2 else None
    return ImageData(images=images, labels=labels, name="omniglot")


def _download(where: Path) -> None:
    from torchvision.datasets.utils import download_url

    download_url(URL, str(where), FILE)


omniglot.shape_of = fixed_shape(1, 28, 28)  # type: ignore[attr-defined]
