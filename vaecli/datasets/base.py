"""What every dataset shares: :class:`ImageData`, where datasets live, loading one by name,
and fetching files through torchvision with one clear line when that fails.

A dataset factory is called as ``factory(root, split, **options)`` with ``split`` "train" or
"test" and returns an :class:`ImageData`: all images as one uint8 tensor (N, C, H, W), so a
training loop can keep them on the device and index batches out of them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaecli import registry
from vaecli.errors import UsageError, VaeError
from vaecli.options import as_bool, as_int, call_with_options
from vaecli.suggestions import Suggestion

DATA_DIR_ENV = "VAECLI_DATA_DIR"
SPLITS = ("train", "test")
#: ``--data-opt val=N``: the last N training images are the validation split, the rest train.
VAL_OPTION = "val"


@dataclass
class ImageData:
    """A split of a dataset: uint8 images (N, C, H, W) and optional integer labels (N,).

    Float images with values in [0, 1] are accepted and quantised to 8 bits (round(255 x)):
    every likelihood models 8-bit pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    #: How the images were made, when that is part of how models on them compare (binarized-mnist's
    #: fixed binarisation); the model file records it.
    protocol: str | None = None
    #: Where the images lie in a file when they are a read-only mapping of it (the dataset cache):
    #: the file and the byte offset of the first image, so a streamed run reads it in blocks.
    mapped: tuple[str, int] | None = None

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

    def rows(self, part: slice) -> ImageData:
        """The images (and labels) of ``part``, a slice with step 1, the mapping kept."""
        start, _, step = part.indices(len(self))
        if step != 1:
            raise ValueError("rows() takes a slice with step 1")
        labels = None if self.labels is None else self.labels[part]
        mapped = self.mapped and (self.mapped[0], self.mapped[1] + start * self.images[0].numel())
        return ImageData(self.images[part], labels, self.name, self.protocol, mapped)

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


def suggest(name: str, options: dict[str, Any], data_dir: str | os.PathLike[str] | None = None) -> Suggestion:
    """What the dataset ``name`` with ``options`` suggests (its factory's ``suggest(**options)``;
    none for one without), kept in the dataset cache for a dataset with ``sources``."""
    from vaecli.datasets.cache import cached_suggestion

    hook = getattr(registry.datasets.load(name), "suggest", None)
    if hook is None:
        return Suggestion()
    options = {k: v for k, v in options.items() if k != VAL_OPTION}

    def compute() -> Suggestion:
        suggestion = call_with_options(hook, registry.datasets.describe(name), (), options)
        if not isinstance(suggestion, Suggestion):
            raise VaeError(f"{registry.datasets.describe(name)}: suggest() did not give a vaecli Suggestion")
        return suggestion

    return cached_suggestion(name, options, resolve_data_dir(data_dir), compute)


def load_dataset(
    name: str,
    split: str,
    options: dict[str, object] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> ImageData:
    """The ``split`` of the registered dataset ``name`` made with ``options``, cut to its first
    ``limit`` images; ``data_dir`` as for :func:`resolve_data_dir`. Datasets with ``sources``
    are decoded once and memory-mapped from then on (:mod:`vaecli.datasets.cache`). ``shape``:
    the image shape a model takes; a dataset whose factory has a ``shape_of(**options)`` is checked against it
    before any image is read (a model file cannot make vaecli read images of another size)."""
    given = dict(options or {})
    held_out = given.pop(VAL_OPTION, None)
    if shape is not None:
        check_shape(name, given, tuple(shape))
    root = resolve_data_dir(data_dir)
    if held_out is not None or split == "val":
        data = _validation_split(name, split, given, root, held_out)
    else:
        data = _load_split(name, split, given, root)
    return data if limit is None else data.rows(slice(None, limit))


def _load_split(name: str, split: str, options: dict[str, Any], root: Path) -> ImageData:
    """The dataset's own ``split``, through the cache."""
    from vaecli.datasets.cache import load_cached

    def load() -> ImageData:
        data, what = registry.datasets.call(name, (root, split), options)
        if not isinstance(data, ImageData):
            raise VaeError(f"{what} did not give vaecli ImageData (got {type(data).__name__})")
        return data

    return load_cached(name, split, options, root, load)


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` has of its own (its factory's ``splits``; train and test if none)."""
    return tuple(getattr(registry.datasets.load(name), "splits", SPLITS))


def has_validation(name: str, options: dict[str, Any]) -> bool:
    """Whether the dataset made with ``options`` has a validation split (its own, or val=N)."""
    return VAL_OPTION in options or "val" in dataset_splits(name)


def _validation_split(name: str, split: str, options: dict[str, Any], root: Path, held_out: Any) -> ImageData:
    """``split`` of a dataset with a validation split: its own, or with val=N the last N training
    images (and train the rest; test is untouched)."""
    own = "val" in dataset_splits(name)
    if held_out is None:
        if not own:
            hint = "--data-opt val=N holds out its last N training images"
            raise UsageError(f"dataset '{name}' has no validation split: {hint}")
        return _load_split(name, split, options, root)
    if own:
        raise UsageError(f"dataset '{name}' has a validation split of its own: leave out --data-opt val")
    count = as_int(held_out, VAL_OPTION, minimum=1)
    if split == "test":
        return _load_split(name, split, options, root)
    train = _load_split(name, "train", options, root)
    if count >= len(train):
        raise UsageError(f"--data-opt val={count}: dataset '{name}' has only {len(train)} training images")
    return train.rows(slice(len(train) - count, None) if split == "val" else slice(None, len(train) - count))


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


def check_split(name: str, split: str, splits: tuple[str, ...] = SPLITS) -> None:
    """One line unless ``split`` is one of the dataset's ``splits``."""
    if split not in splits:
        raise UsageError(f"dataset '{name}' has no split '{split}' (it has: {', '.join(splits)})")


def fetch(name: str, where: Path, files: list[str], download: bool, make: Callable[[], Any]) -> Any:
    """Call ``make`` (a torchvision dataset made with ``download``), which fetches the dataset's
    files into ``where`` and checks the checksums torchvision publishes. Its progress goes to
    stderr (stdout is for results). A failure, or no download allowed, is one line saying which
    files to put where; only folders made here, and left empty, are removed."""
    created = [p for p in (where, *where.parents) if not p.exists()]
    try:
        if not download:
            raise FileNotFoundError("download=false")
        with contextlib.redirect_stdout(sys.stderr):
            return make()
    except Exception as exc:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise VaeError(
            f"{name} is not in {where} and could not be downloaded ({reason}); put the files "
            f"{', '.join(files)} there, or point --data-dir or ${DATA_DIR_ENV} at a folder that holds them"
        ) from exc


def fixed_shape(channels: int, height: int, width: int) -> Callable[..., tuple[int, int, int]]:
    """A ``shape_of`` for a dataset whose images have one shape and whose one option is ``download``."""

    def shape_of(download: bool | str = True) -> tuple[int, int, int]:
        as_bool(download, "download")
        return (channels, height, width)

    return shape_of
