"""Image datasets, registered by name, and where their files live.

A dataset factory is called as ``factory(root, split, **options)`` with ``split`` "train" or
"test" and returns an :class:`ImageData`: all images as one uint8 tensor (N, C, H, W), so a
training loop can keep them on the device and index batches out of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaecli import registry
from vaecli.errors import UsageError, VaeError
from vaecli.options import as_bool, as_float, as_int, call_with_options
from vaecli.suggestions import Suggestion, suggest_folder

DATA_DIR_ENV = "VAECLI_DATA_DIR"
SPLITS = ("train", "test")


@dataclass
class ImageData:
    """A split of a dataset: uint8 images (N, C, H, W) and optional integer labels (N,).

    Float images with values in [0, 1] are accepted and quantised to 8 bits (round(255 x)):
    every likelihood models 8-bit pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            got = tuple(self.images.shape) if isinstance(self.images, torch.Tensor) else type(self.images)
            raise VaeError(f"dataset '{self.name}' must give images of shape (N, C, H, W), got {got}")
        if self.images.is_floating_point():
            low, high = self.images.min().item(), self.images.max().item()
            if not (0.0 <= low and high <= 1.0):
                raise VaeError(
                    f"dataset '{self.name}' gave float images with values in [{low:g}, {high:g}]; "
                    "float images must lie in [0, 1] (or give uint8 0..255)"
                )
            self.images = self.images.mul(255.0).round_().to(torch.uint8)
        elif self.images.dtype != torch.uint8:
            raise VaeError(f"dataset '{self.name}' must give uint8 or float images, got {self.images.dtype}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise VaeError(
                f"dataset '{self.name}' gave {len(self.labels)} labels for {len(self.images)} images"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_data_dir() -> Path:
    """The per-user cache folder for datasets."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "vaecli" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``--data-dir`` if given, else ``$VAECLI_DATA_DIR``, else the per-user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return default_data_dir()


def absolute_data_dir(data_dir: str | os.PathLike[str] | None) -> str:
    """The data folder :func:`resolve_data_dir` picks, as an absolute path: what a model records,
    so that it finds its data again from any folder and without the environment variable."""
    return os.path.abspath(resolve_data_dir(data_dir))


def model_data_dir(header: dict[str, Any], data_dir: str | None) -> str | None:
    """The data folder for a command that uses a model's dataset: ``--data-dir``, else
    ``$VAECLI_DATA_DIR``, else the folder the model was trained from (if it still exists; files
    from before it was recorded in ``data.dir`` hold it as ``training.data_dir``, if given), else
    None (the default cache)."""
    if data_dir or os.environ.get(DATA_DIR_ENV):
        return data_dir
    for section, key in (("data", "dir"), ("training", "data_dir")):
        part = header.get(section)
        recorded = part.get(key) if isinstance(part, dict) else None
        if isinstance(recorded, str) and recorded and Path(recorded).is_dir():
            return recorded
    return None


def suggest(name: str, options: dict[str, Any]) -> Suggestion:
    """What the dataset ``name`` with ``options`` suggests (its factory's ``suggest(**options)``;
    none for one without)."""
    hook = getattr(registry.datasets.load(name), "suggest", None)
    if hook is None:
        return Suggestion()
    suggestion = call_with_options(hook, registry.datasets.describe(name), (), options)
    if not isinstance(suggestion, Suggestion):
        raise VaeError(f"{registry.datasets.describe(name)}: suggest() did not give a vaecli Suggestion")
    return suggestion


def load_dataset(
    name: str,
    split: str,
    options: dict[str, object] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> ImageData:
    """The ``split`` of the registered dataset ``name`` made with ``options``, cut to its first
    ``limit`` images; ``data_dir`` as for :func:`resolve_data_dir`. ``shape``: the image shape a
    model takes; a dataset whose factory has a ``shape_of(**options)`` is checked against it
    before any image is read (a model file cannot make vaecli read images of another size)."""
    if shape is not None:
        check_shape(name, dict(options or {}), tuple(shape))
    data, what = registry.datasets.call(name, (resolve_data_dir(data_dir), split), dict(options or {}))
    if not isinstance(data, ImageData):
        raise VaeError(f"{what} did not give vaecli ImageData (got {type(data).__name__})")
    if limit is not None:
        data = ImageData(data.images[:limit], None if data.labels is None else data.labels[:limit], data.name)
    return data


def check_shape(name: str, options: dict[str, object], shape: tuple[int, ...]) -> None:
    """Fail when dataset ``name``, made with ``options``, says its images are not ``shape``."""
    shape_of = getattr(registry.datasets.load(name), "shape_of", None)
    if shape_of is None:
        return
    what = registry.datasets.describe(name)
    given = call_with_options(shape_of, what, (), options)
    if tuple(given) != shape:
        raise VaeError(
            f"dataset '{name}' has images of shape {tuple(given)} (channels, height, width) with these "
            f"options, but the model takes {shape} (nothing was read)"
        )


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


IDX_MAGIC = {3: 0x0803, 1: 0x0801}  # unsigned bytes, 3 or 1 dimensions


#: The SHA-256 of each uncompressed MNIST file (as published with the dataset's mirrors' files).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
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


def mnist(root: Path, split: str, download: bool | str = True) -> ImageData:
    """MNIST from ``root/MNIST/raw``, downloaded there by torchvision when missing."""
    if split not in SPLITS:
        raise UsageError(f"dataset 'mnist' has no split '{split}' (it has: train, test)")
    fetch = as_bool(download, "download")
    raw = Path(root) / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    # Read directly when the files are there: importing torchvision alone takes seconds.
    names = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = read_idx(raw / names[0], 3, MNIST_SHA256[names[0]])
    labels = read_idx(raw / names[1], 1, MNIST_SHA256[names[1]])
    if images is not None and labels is not None:
        return ImageData(images=images.unsqueeze(1), labels=labels.long(), name="mnist")
    from torchvision.datasets import MNIST

    created = [p for p in (Path(root), raw.parent, raw) if not p.exists()]
    try:
        # torchvision reports download progress on stdout; stdout is for results.
        with contextlib.redirect_stdout(sys.stderr):
            data = MNIST(str(root), train=split == "train", download=fetch)
    except Exception as exc:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only folders we made and that stayed empty
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__  # the last mirror's own error
        raise VaeError(
            f"MNIST is not in {raw} and could not be downloaded ({reason}); put the files "
            f"{', '.join(MNIST_FILES)} there, or point --data-dir or ${DATA_DIR_ENV} at a "
            f"folder that holds MNIST/raw/"
        ) from exc
    return ImageData(images=data.data.unsqueeze(1).contiguous(), labels=data.targets, name="mnist")


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

    if split not in SPLITS:
        raise UsageError(f"dataset 'folder' has no split '{split}' (it has: train, test)")
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


def _mnist_shape(download: bool | str = True) -> tuple[int, int, int]:
    as_bool(download, "download")
    return (1, 28, 28)


def _folder_shape(path: str = "", size: str | int = 28, channels: str | int = 1, fit: str = "stretch",
                  test_fraction: str | float = 0.1) -> tuple[int, int, int]:  # fmt: skip
    return (as_int(channels, "channels"), *_image_size(size))


# A dataset factory's shape_of(**options) tells the image shape without reading any image.
mnist.shape_of = _mnist_shape  # type: ignore[attr-defined]
folder.shape_of = _folder_shape  # type: ignore[attr-defined]
# A dataset factory's suggest(**options) infers options left out and the likelihood that suits it.
folder.suggest = suggest_folder  # type: ignore[attr-defined]
