"""The dataset cache: a dataset's decoded uint8 images, written once to ``DATA_DIR/.cache/`` and
memory-mapped by later runs, so an image folder is decoded once, not on every start.

A dataset takes part when its factory has ``sources(root, split, **options)``, the files it reads
(``folder``, ``celeba``, ``binarized-mnist``: those whose decoding costs seconds; MNIST's own
files are read as fast as a cache would be). A cache file is found by a key made of the dataset
(its package and version), the split, the options and each source file's path, size and
modification time: a file added, removed or changed gives a new key, and so a fresh decode. The
file is a safetensors file (``images``, ``labels``) whose tensors are memory-mapped in place.
``VAECLI_DATA_CACHE=0`` turns the cache off, ``VAECLI_DATA_CACHE=DIR`` keeps it in DIR instead; a
folder that cannot be written to (a read-only copy of the data) is simply not cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from vaecli import registry
from vaecli.datasets.base import ImageData
from vaecli.errors import VaeError
from vaecli.fileio import write_bytes_atomic
from vaecli.mappedfiles import map_region
from vaecli.options import call_with_options
from vaecli.suggestions import Suggestion

CACHE_ENV = "VAECLI_DATA_CACHE"
CACHE_FOLDER = ".cache"
FORMAT = "vaecli-data-cache"
FORMAT_VERSION = 1
_DTYPES = {"U8": np.uint8, "I64": np.int64}


def cache_path(name: str, split: str, options: dict[str, Any], root: Path) -> Path | None:
    """Where the cache of this dataset split is, or None when the dataset takes no part (no
    ``sources``) or the cache is off."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("0", "false", "no", "off"):
        return None
    folder = Path(setting).expanduser() if setting else Path(root) / CACHE_FOLDER
    sources = getattr(registry.datasets.load(name), "sources", None)
    if sources is None:
        return None
    entry = registry.datasets.entry(name)
    files = call_with_options(sources, registry.datasets.describe(name), (root, split), options)
    digest = hashlib.sha256()
    head = [FORMAT, FORMAT_VERSION, entry.distribution, entry.name, entry.version, split, options]
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    lines = []
    for file in map(os.fspath, files):
        try:
            stat = os.stat(file)
        except OSError:
            return None  # (a file gone since it was listed: the dataset itself will say so)
        lines.append(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}")
    digest.update("\n".join(lines).encode("utf-8", "surrogateescape"))
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in entry.name)
    return folder / f"{stem}-{split}-{digest.hexdigest()[:24]}.safetensors"


def read_cache(path: Path, name: str) -> ImageData | None:
    """The cached split at ``path``, memory-mapped; None when there is none or it cannot be used
    (a damaged cache is warned about once and decoded afresh, never read as images)."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length)) if 0 < length < 1 << 20 else None
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring the dataset cache {path} ({exc}): decoding the files again", stacklevel=2)
        return None
    try:
        meta = header["__metadata__"]
        if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) != FORMAT_VERSION:
            raise ValueError("not a cache of this version")
        tensors = {
            key: _mapped(path, 8 + length, header[key], size) for key in ("images", "labels") if key in header
        }
        where = (os.fspath(path), 8 + length + int(header["images"]["data_offsets"][0]))
        return ImageData(tensors["images"], tensors.get("labels"), name, meta.get("protocol") or None, where)
    except (KeyError, TypeError, ValueError, VaeError) as exc:
        warnings.warn(f"ignoring the dataset cache {path} ({exc}): decoding the files again", stacklevel=2)
        return None


def _mapped(path: Path, base: int, info: dict[str, Any], size: int) -> torch.Tensor:
    dtype = _DTYPES[info["dtype"]]
    start, end = (base + int(v) for v in info["data_offsets"])
    shape = tuple(int(n) for n in info["shape"])
    if not (base <= start <= end <= size and end - start == int(np.prod(shape)) * np.dtype(dtype).itemsize):
        raise ValueError("its tensors do not fit the file")
    array = map_region(path, start, end - start).view(dtype).reshape(shape)
    with warnings.catch_warnings():  # (a read-only mapping: torch warns that it cannot be written)
        warnings.simplefilter("ignore")
        return torch.from_numpy(array)


def write_cache(path: Path, data: ImageData) -> None:
    """Write ``data`` to the cache file ``path``; a folder that cannot be written to is skipped."""
    tensors = {"images": data.images.contiguous()}
    if data.labels is not None:
        tensors["labels"] = data.labels.to(torch.int64).contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "protocol": data.protocol or ""}
    try:
        write_bytes_atomic(path, save(tensors, metadata=meta), sync=False)
    except VaeError:
        pass  # (a read-only data folder, or a full disk: the next run decodes again)


def load_cached(name: str, split: str, options: dict[str, Any], root: Path,
                load: Callable[[], ImageData]) -> ImageData:  # fmt: skip
    """The split from its cache when there is one, else ``load()`` it and write the cache."""
    path = cache_path(name, split, options, root)
    if path is None:
        return load()
    cached = read_cache(path, registry.datasets.entry(name).name)
    if cached is not None:
        return cached
    data = load()
    if isinstance(data, ImageData):
        write_cache(path, data)
    return data


def cached_suggestion(name: str, options: dict[str, Any], root: Path,
                      compute: Callable[[], Suggestion]) -> Suggestion:  # fmt: skip
    """What the dataset suggests (:func:`vaecli.datasets.suggest`), kept beside its cache under the
    same key: a folder's suggestion reads every file's header, seconds for thousands of files."""
    path = cache_path(name, "suggestion", options, root)
    if path is None:
        return compute()
    path = path.with_suffix(".json")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        return Suggestion(**fields)
    except (OSError, ValueError, TypeError):
        pass  # (none yet, or not one this version reads: computed again)
    suggestion = compute()
    with contextlib.suppress(VaeError, TypeError, ValueError):
        write_bytes_atomic(path, json.dumps(asdict(suggestion)).encode("utf-8"), sync=False)
    return suggestion
