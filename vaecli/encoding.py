"""``encode_files()``: image files to latent codes, streaming and in input order.

Image files are decoded in worker processes (a torch DataLoader whose "indices" are the paths
themselves, fed lazily from the path list), each batch is encoded on the model's device, and
batches come back in input order as they finish. Nothing grows with the number of images: the
path list is a generator and every batch is handed on before the next is taken.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import torch
from torch.utils.data import DataLoader, Dataset

from vaecli.codefiles import CodeBatch, Failure, Widths, group_fields
from vaecli.devices import choose_device
from vaecli.errors import UsageError
from vaecli.imagefiles import FITS, UnreadableImage, find_images, read_image
from vaecli.modelfile import load_model
from vaecli.models import VAE, LatentVariableModel

PATH_CHUNK = 1 << 16  # bytes read at a time from a NUL-separated path list


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Image-decoding processes: one per core but the one that runs the model (1 to 8)."""
    return max(1, min(8, usable_cores() - 1))


class ImageEncoder:
    """A model and how its training images were prepared: channels and size from the model
    file, the fit of a folder dataset (``stretch``, ``crop``, ``pad``), and the likelihood's
    :meth:`~vaecli.likelihoods.Likelihood.encoder_input` for the value range."""

    def __init__(self, model: LatentVariableModel, header: dict, device: torch.device, fit: str | None = None,
                 group: str | None = None) -> None:  # fmt: skip
        if model.spec is None:
            raise ValueError("the model needs its spec (build it with build_model or load_model)")
        self.model, self.device = model.eval(), device
        self.group, self.columns = code_group(model, group)
        self.shape: tuple[int, int, int] = tuple(model.spec.input_shape)  # type: ignore[assignment]
        data = header.get("data") if isinstance(header.get("data"), dict) else {}
        options = data.get("options") if isinstance(data.get("options"), dict) else {}
        trained_fit = options.get("fit") if options.get("fit") in FITS else "stretch"
        self.fit = fit if fit is not None else trained_fit
        if self.fit not in FITS:
            raise UsageError(f"unknown --fit '{self.fit}' (use {', '.join(FITS)})")
        if self.shape[0] not in (1, 3):
            raise UsageError(
                f"this model takes {self.shape[0]}-channel images; image files are read as grey (1) "
                "or RGB (3) only"
            )

    @classmethod
    def load(
        cls, model_or_run: str | os.PathLike[str], device: str = "auto", fit: str | None = None,
        group: str | None = None,
    ) -> ImageEncoder:  # fmt: skip
        target = choose_device(device)
        model, header = load_model(model_or_run, target)
        return cls(model, header, target, fit, group)

    @property
    def latent_dim(self) -> int:
        """The size of the codes written: the chosen group's (or the whole code's)."""
        return self.columns.stop - self.columns.start

    @property
    def groups_written(self) -> dict[str, int] | None:
        """The latent groups the codes are written by (``mu_z1``, ``mu_z2``, ...), or None: one block
        named ``mu`` (a hierarchy's top group, what decode takes alone, or a one-group model's code)."""
        groups = self.model.kl_groups()
        if len(groups) == 1 or self.group == next(iter(groups)):
            return None
        return dict(groups) if self.group == ALL_GROUPS else {self.group: groups[self.group]}

    def output_fields(self, fields: tuple[str, ...]) -> tuple[tuple[str, ...], Widths]:
        """The fields a codes file of ``fields`` (path, mu, logvar, z) has, and their widths."""
        written = self.groups_written
        return (fields, self.latent_dim) if written is None else group_fields(fields, written)

    def metadata(self, model_path: str | os.PathLike[str]) -> dict[str, str]:
        """What a safetensors codes file records of where its codes came from."""
        groups = ",".join(f"{name}:{size}" for name, size in self.model.kl_groups().items())
        return {"model": os.path.realpath(model_path), "group": self.group, "groups": groups}

    def by_group(self, codes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``codes`` (each (n, latent_dim)) under the names :meth:`output_fields` gives."""
        written = self.groups_written
        if written is None:
            return codes
        named = {}
        for name, values in codes.items():
            start = 0
            for group, size in written.items():
                named[f"{name}_{group}"], start = values[:, start : start + size], start + size
        return named

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log-variance (float32, on the CPU) of uint8 images (N, C, H, W) of ``shape``,
        of the chosen latent group."""
        x = self.model.likelihood.encoder_input(images.to(self.device, non_blocking=True))
        mu, logvar = self.model.encode(x)
        return mu[:, self.columns].float().cpu(), logvar[:, self.columns].float().cpu()


#: ``--group all``: every latent group, the whole code.
ALL_GROUPS = "all"


def code_group(model: LatentVariableModel, group: str | None) -> tuple[str, slice]:
    """The latent group ``vae encode`` writes (by default the top one: for a single latent vector
    the whole code) and its columns in the model's code."""
    groups = model.kl_groups()
    chosen = group if group is not None else next(iter(groups))
    if chosen == ALL_GROUPS:
        return chosen, slice(0, model.latent_dim)
    if chosen not in groups:
        raise UsageError(f"--group: the model has no group '{chosen}' (it has {', '.join(groups)}, or all)")
    start = 0
    for name, size in groups.items():
        if name == chosen:
            return chosen, slice(start, start + size)
        start += size
    raise AssertionError("unreachable")


def read_path_list(stream: BinaryIO, null: bool = False) -> Iterator[str]:
    """Paths from a stream: one per line, or NUL-separated (``find -print0``); empty entries
    are skipped. Bytes that are not UTF-8 are kept as the file system gives them."""
    if not null:
        for line in stream:
            raw = line.rstrip(b"\n")
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            if raw:
                yield os.fsdecode(raw)
        return
    read = getattr(stream, "read1", stream.read)  # read1: whatever has arrived, so paths stream
    rest = b""
    while chunk := read(PATH_CHUNK):
        *names, rest = (rest + chunk).split(b"\0")
        yield from (os.fsdecode(name) for name in names if name)
    if rest:
        yield os.fsdecode(rest)


def expand_paths(
    given: Iterable[str],
    stdin: BinaryIO | None = None,
    null: bool = False,
    on_empty_folder: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Image files for ``given`` paths in order: a file as it is spelt, a folder's image files
    recursively (each folder's files in sorted order, then its subfolders in sorted order), ``-``
    the paths listed on ``stdin``. Paths on stdin are files: the folders among them are skipped
    (with one warning), so ``find DIR -print0`` lists each image once, not once per folder."""
    for path in given:
        if path == "-":
            if stdin is None:
                raise UsageError("'-' reads paths from stdin, which is not available here")
            yield from _listed_files(read_path_list(stdin, null))
        elif os.path.isdir(path):
            found = False
            for file in find_images([path]):
                found = True
                yield os.fspath(file)
            if not found and on_empty_folder is not None:
                on_empty_folder(path)
        else:
            yield path


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group: the workers ignore it (they were
    started with it held, see :func:`_interrupts_held`), and the main process stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the DataLoader forks its workers: a signal that comes
    meanwhile is acted on once they are all started (never half-way through a fork, where the
    child would run the parent's handler, or through the loader's set-up), and each worker
    ignores it from its start. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in INTERRUPTS}
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held and callable(previous[held[0]]):
            previous[held[0]](held[0], None)  # (raises, for vae's own handlers)


def _listed_files(paths: Iterable[str]) -> Iterator[str]:
    """The paths of a list that are not folders; one warning counts the folders skipped."""
    folders = 0
    for path in paths:
        if os.path.isdir(path):
            folders += 1
        else:
            yield path
    if folders:
        warnings.warn(
            f"skipped {folders} folder{'s' * (folders > 1)} listed on stdin (paths on stdin are taken as "
            "files; give a folder as an argument to search it)",
            stacklevel=2,
        )


class _ImageFiles(Dataset):
    """A "dataset" indexed by path: the image, or the reason it cannot be read."""

    def __init__(self, shape: tuple[int, int, int], fit: str) -> None:
        self.shape, self.fit = shape, fit

    def __getitem__(self, path: str) -> tuple[str, torch.Tensor | str]:
        try:
            return path, read_image(path, self.shape, self.fit)
        except UnreadableImage as exc:
            return path, str(exc)


def _collate(
    items: list[tuple[str, torch.Tensor | str]],
) -> tuple[list[str], torch.Tensor | None, list[Failure]]:
    paths, images, failures = [], [], []
    for path, image in items:
        if isinstance(image, str):
            failures.append(Failure(path, image, before=len(paths)))
        else:
            paths.append(path)
            images.append(image)
    return paths, (torch.stack(images) if images else None), failures


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_files(
    encoder: ImageEncoder,
    paths: Iterable[str | os.PathLike[str]],
    batch_size: int = 256,
    workers: int | None = None,
    sample: bool = False,
    seed: int = 0,
) -> Iterator[CodeBatch]:
    """Codes of the image files ``paths`` (a lazy iterable is read lazily), one
    :class:`CodeBatch` per ``batch_size`` paths, in input order. Files that cannot be read
    are the batches' ``failures``. ``sample`` adds z = mu + sigma * eps with eps drawn from
    a CPU generator seeded with ``seed`` (the same seed and batches give the same z)."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise UsageError(f"--workers must be 0 (decode in this process) or more, got {workers}")
    loader = DataLoader(
        _ImageFiles(encoder.shape, encoder.fit),
        batch_sampler=_chunks((os.fspath(p) for p in paths), batch_size),  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
        pin_memory=encoder.device.type == "cuda",
        worker_init_fn=_ignore_interrupts if workers else None,
    )
    generator = torch.Generator().manual_seed(seed)
    empty = torch.empty(0, encoder.latent_dim)
    threads = torch.get_num_threads()
    if workers and encoder.device.type == "cpu":
        # The workers have the other cores: more model threads than free cores make every
        # thread wait on the others (several times slower on a busy machine).
        torch.set_num_threads(max(1, min(threads, usable_cores() - workers)))
    try:
        with _interrupts_held():  # the workers start with Ctrl-C ignored, and the parent whole
            batches = iter(loader)
        for good, images, failures in batches:
            mu, logvar = encoder.encode(images) if images is not None else (empty, empty)
            codes = {"mu": mu, "logvar": logvar}
            if sample:
                codes["z"] = VAE.reparameterise(mu, logvar, generator)
            yield CodeBatch(list(good), encoder.by_group(codes), list(failures))
    finally:
        torch.set_num_threads(threads)


def encode_paths(
    model_or_run: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]],
    device: str = "auto",
    fit: str | None = None,
    **options: Any,
) -> Iterator[CodeBatch]:
    """:func:`encode_files` for files and folders (searched recursively), from a model file or run."""
    encoder = ImageEncoder.load(model_or_run, device, fit)
    yield from encode_files(encoder, expand_paths(os.fspath(p) for p in paths), **options)
