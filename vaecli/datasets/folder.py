"""``folder``: a folder of image files of one's own, split by subfolders or by a hash of each path."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from vaecli.datasets.base import ImageData, check_split
from vaecli.errors import UsageError, VaeError
from vaecli.options import as_float, as_int
from vaecli.suggestions import suggest_folder


def _image_size(size: str | int) -> tuple[int, int]:
    text = str(size).lower().replace(" ", "")
    parts = text.split("x") if "x" in text else [text, text]
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"option size wants N or HxW (e.g. 28 or 32x48), got '{size}'") from None
    if height < 1 or width < 1:
        raise UsageError(f"option size must be positive, got '{size}'")
    return height, width


def _is_test_file(relative: Path, test_fraction: float) -> bool:
    """A stable split: a file's place depends on its own path only, so adding files moves no other."""
    digest = hashlib.sha1(relative.as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction


def folder(
    root: Path,
    split: str,
    path: str,
    size: str | int = 28,
    channels: str | int = 1,
    fit: str = "stretch",
    test_fraction: str | float = 0.1,
) -> ImageData:
    """Every image file under ``path`` (recursively), as ``channels`` (1 grey, 3 RGB) x ``size``.

    Splits: the ``train/`` and ``test/`` subfolders when both exist, else a stable
    ``test_fraction`` of the files (chosen by a hash of each path). Files in class subfolders
    get labels (the subfolders' sorted order). Unreadable files are reported and skipped.
    """
    from vaecli.imagefiles import UnreadableImage, find_images, read_image

    check_split("folder", split)
    base = Path(path).expanduser()
    if not base.is_dir():
        raise VaeError(f"dataset 'folder': {path} is not a folder")
    height, width = _image_size(size)
    depth = as_int(channels, "channels")
    fraction = as_float(test_fraction, "test_fraction")
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"option test_fraction must be in [0, 1), got {test_fraction}")
    if (base / "train").is_dir() and (base / "test").is_dir():
        split_root = base / split
        files = list(find_images([split_root]))
    else:
        split_root = base
        wanted = split == "test"
        files = [f for f in find_images([base]) if _is_test_file(f.relative_to(base), fraction) == wanted]
    images, kept = [], []
    for file in files:
        try:
            images.append(read_image(file, (depth, height, width), fit))
            kept.append(file)
        except UnreadableImage as exc:
            warnings.warn(f"skipping {file}: {exc}", stacklevel=2)
    if not images:
        hint = " (raise test_fraction, or make train/ and test/ subfolders)" if split == "test" else ""
        raise VaeError(f"dataset 'folder': no readable images for the {split} split in {split_root}{hint}")
    classes = [
        f.relative_to(split_root).parts[0] if len(f.relative_to(split_root).parts) > 1 else None for f in kept
    ]
    labels = None
    if all(c is not None for c in classes):
        index = {name: i for i, name in enumerate(sorted(set(classes)))}
        labels = torch.tensor([index[c] for c in classes])
    return ImageData(images=torch.stack(images), labels=labels, name="folder")


def _folder_shape(path: str = "", size: str | int = 28, channels: str | int = 1, fit: str = "stretch",
                  test_fraction: str | float = 0.1) -> tuple[int, int, int]:  # fmt: skip
    return (as_int(channels, "channels"), *_image_size(size))


def _folder_sources(root: Path, split: str, path: str = "", **_: object) -> list[str]:
    from vaecli.imagefiles import image_files_under

    folder = Path(path).expanduser()
    return list(image_files_under(folder)) if folder.is_dir() else [str(folder)]


# A dataset factory's shape_of(**options) tells the image shape without reading any image.
folder.shape_of = _folder_shape  # type: ignore[attr-defined]
# A dataset factory's sources(root, split, **options) lists the files it reads: it is then cached.
folder.sources = _folder_sources  # type: ignore[attr-defined]
# A dataset factory's suggest(**options) infers options left out and the likelihood that suits it.
folder.suggest = suggest_folder  # type: ignore[attr-defined]
