"""``celeba``: CelebA's aligned faces (``img_align_celeba/``, 178x218 JPEGs) with its official
split (``list_eval_partition.txt``: 162,770 training, 19,867 validation, 19,962 test images),
centre-cropped to 148x148 and resized to ``size`` (64 by default): the crop VAE papers use."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from vaecli.datasets.base import ImageData, check_split, fetch
from vaecli.errors import UsageError, VaeError
from vaecli.options import as_bool, as_int
from vaecli.suggestions import suggest_colour

FOLDER = "celeba"
IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
CROP = 148
SPLIT_CODES = {"train": "0", "val": "1", "test": "2"}


def read_partition(path: Path) -> dict[str, list[str]]:
    """The file names of each split, from ``list_eval_partition.txt`` (``NAME CODE`` per line,
    0 train, 1 validation, 2 test); a line of any other shape is one error naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VaeError(f"cannot read {path}: {exc}") from None
    splits: dict[str, list[str]] = {code: [] for code in SPLIT_CODES.values()}
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in splits:
            raise VaeError(f"{path} is damaged: line {number} is '{line[:60]}', expected 'NAME.jpg 0|1|2'")
        splits[parts[1]].append(parts[0])
    return splits


def celeba(root: Path, split: str, download: bool | str = True, size: str | int = 64) -> ImageData:
    """CelebA from ``root/celeba`` (torchvision downloads it there when missing), as RGB images of
    ``size`` x ``size``: each centre-cropped to 148x148, then resized. No labels."""
    from PIL import Image

    check_split("celeba", split, tuple(SPLIT_CODES))
    side = _side(size)
    fetch_it = as_bool(download, "download")
    where = Path(root) / FOLDER
    if not ((where / PARTITION).is_file() and (where / IMAGES).is_dir()):
        fetch("CelebA", where, [f"{IMAGES}/", PARTITION], fetch_it, lambda: _download(Path(root)))
    names = read_partition(where / PARTITION)[SPLIT_CODES[split]]
    images = []
    for name in names:
        path = where / IMAGES / name
        try:
            with Image.open(path) as image:
                images.append(_crop(image.convert("RGB"), side))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
    if not images:
        raise VaeError(f"dataset 'celeba': no readable images for the {split} split in {where / IMAGES}")
    return ImageData(images=torch.stack(images), labels=None, name="celeba")


def _crop(image, side: int) -> torch.Tensor:
    from PIL import Image

    width, height = image.size
    left, top = (width - CROP) // 2, (height - CROP) // 2
    face = image.crop((left, top, left + CROP, top + CROP)).resize((side, side), Image.Resampling.BILINEAR)
    return torch.frombuffer(bytearray(face.tobytes()), dtype=torch.uint8).view(side, side, 3).permute(2, 0, 1)


def _side(size: str | int) -> int:
    side = as_int(size, "size")
    if not 1 <= side <= CROP:
        raise UsageError(f"option size must be from 1 to {CROP} (the crop's side), got {size}")
    return side


def _download(root: Path) -> None:
    from torchvision.datasets import CelebA

    CelebA(str(root), split="all", download=True)


def _shape(download: bool | str = True, size: str | int = 64) -> tuple[int, int, int]:
    as_bool(download, "download")
    return (3, _side(size), _side(size))


def _sources(root: Path, split: str, **_: object) -> list[Path]:
    where = Path(root) / FOLDER
    if split not in SPLIT_CODES or not (where / PARTITION).is_file():
        return [where / PARTITION]  # (missing: the dataset itself fetches it, or says where it goes)
    names = read_partition(where / PARTITION)[SPLIT_CODES[split]]
    return [where / PARTITION, *(where / IMAGES / name for name in names)]


celeba.shape_of = _shape  # type: ignore[attr-defined]
celeba.sources = _sources  # type: ignore[attr-defined]
celeba.splits = tuple(SPLIT_CODES)  # type: ignore[attr-defined]
celeba.suggest = suggest_colour  # type: ignore[attr-defined]
