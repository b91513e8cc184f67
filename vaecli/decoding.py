"""``decode_codes()``: latent codes (as ``vae encode`` writes them) back to images, and a folder
of PNGs named after the images the codes came from."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from vaecli.codefiles import CODE_FIELDS, CodeBatch, Failure
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import write_bytes_atomic
from vaecli.images import check_grid, grid_png, png_bytes
from vaecli.models import LatentVariableModel


@dataclass
class DecodedBatch:
    """Images (n, C, H, W) in [0, 1] on the CPU, the paths their codes came from (None when
    unknown), and the records that could not be read."""

    paths: list[str | None]
    images: torch.Tensor
    failures: list[Failure] = field(default_factory=list)


@torch.no_grad()
def decode_codes(
    model: LatentVariableModel,
    batches: Iterable[CodeBatch],
    latent: str | None = None,
    mode: str = "mean",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[DecodedBatch]:
    """The decoder's picture (``mode``: mean, sample, ...) of each record's ``latent`` code:
    ``mu`` by default (``z`` when the records have no mu)."""
    if latent is not None and latent not in CODE_FIELDS:
        raise UsageError(f"unknown --latent '{latent}' (use {', '.join(CODE_FIELDS)})")
    model.likelihood.check_mode(mode)
    generator = torch.Generator(device=device).manual_seed(seed)
    for batch in batches:
        if not len(batch):
            shape = (0, *model.spec.input_shape) if model.spec is not None else (0,)
            yield DecodedBatch([], torch.empty(shape), batch.failures)
            continue
        name = latent or ("mu" if "mu" in batch.codes else "z" if "z" in batch.codes else "logvar")
        if name not in batch.codes or name == "logvar":
            hint = " (vae encode --sample writes z)" if name == "z" else ""
            raise VaeError(f"the codes have no '{latent or 'mu'}'{hint}; they have {', '.join(batch.codes)}")
        z = batch.codes[name].to(device)
        images = model.likelihood.image(model.decode(z), mode, generator)
        yield DecodedBatch(batch.paths, images.float().cpu(), batch.failures)


class ImageFolderWriter:
    """One PNG per image in ``folder``, named after the stem of the path its code came from;
    a stem met again gets ``-2``, ``-3``, ... and an unknown path the record's position
    (``000123.png``). Each file is written under a temporary name and renamed."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder, self.given = Path(folder), os.fspath(folder)
        self.used: set[str] = set()
        self.count = 0

    @staticmethod
    def check(folder: str | os.PathLike[str], force: bool) -> None:
        """Stop before any work if ``folder`` is a file, or holds files and ``force`` is off."""
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise VaeError(f"{folder} is a file; --out wants a folder")
        if path.is_dir() and not force and any(path.iterdir()):
            raise VaeError(f"{folder} is not empty; pass --force to write into it (same names are replaced)")

    def name_for(self, path: str | None) -> str:
        stem = PurePosixPath(path).stem if path else ""
        stem = stem if stem not in ("", ".", "..") else f"{self.count:06d}"
        name, n = f"{stem}.png", 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}.png"
        self.used.add(name)
        return name

    def write(self, path: str | None, image: torch.Tensor) -> Path:
        target = self.folder / self.name_for(path)
        write_bytes_atomic(target, png_bytes(image), sync=False)  # many small files: rename, no fsync
        self.count += 1
        return target

    def write_batch(self, batch: DecodedBatch) -> None:
        for path, image in zip(batch.paths, batch.images, strict=True):
            self.write(path, image)

    def finish(self) -> str:
        """What was written, in words."""
        return f"wrote {self.count} images to {self.given}"


class GridWriter:
    """All decoded images as one grid PNG at ``file``, written by :meth:`finish`; refused (one
    line naming ``--grid``) as soon as the images would not fit one picture."""

    def __init__(self, file: str, nrow: int | None, shape: tuple[int, ...]) -> None:
        self.file, self.nrow, self.shape = file, nrow, shape
        self.batches: list[torch.Tensor] = []
        self.count = 0

    def write_batch(self, batch: DecodedBatch) -> None:
        self.count += len(batch.images)
        check_grid(self.count, self.shape, f"--grid {self.file}", self.nrow)
        self.batches.append(batch.images)

    def finish(self) -> str:
        write_bytes_atomic(self.file, grid_png(torch.cat(self.batches), self.nrow))
        return f"wrote a grid of {self.count} images to {self.file}"
