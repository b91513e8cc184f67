"""How an epoch's batches reach the training step.

- :class:`DeviceFeed`: the whole training set on the device, batches gathered there from a
  uniform shuffle (the usual case: MNIST is 47 MB).
- :class:`StreamedFeed`: the set stays on the host (a dataset cache file is read in blocks, not
  memory-mapped, so the process's memory stays flat however large the file), the epoch visits it
  in a block shuffle (blocks of consecutive images in random order, the images of each window of
  blocks shuffled together: what makes the reads sequential), and a background thread reads
  blocks, gathers batches and moves them to the device while the step runs.

``--stream auto`` streams when the training images would take more than half of the memory the
device has free (for a CPU: the memory available to this process, its cgroup's limit included).
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vaecli.config import STREAMS
from vaecli.console import note
from vaecli.datasets.base import ImageData
from vaecli.errors import VaeError

BLOCK_BYTES = 8 << 20  #: one sequential read
WINDOW_BLOCKS = 16  #: blocks whose images are shuffled together (128 MiB at most)
AHEAD = 4  #: batches gathered ahead of the step
READER_NAME = "vaecli-feed"
_CGROUPS = {  # the controller's mount, and its files of the limit and the usage
    "v1": ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    "v2": ("/sys/fs/cgroup", "memory.max", "memory.current"),
}


def host_memory_free() -> int:
    """Bytes this process may still use: the machine's available memory, or less under a cgroup
    limit on its group or any above it (a container, ``systemd-run -p MemoryMax``)."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    for folder, limit_file, usage_file in _cgroup_folders():
        try:
            limit = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            free = min(free, max(0, int(limit) - usage))
    return free


def _cgroup_folders() -> Iterator[tuple[Path, str, str]]:
    """This process's memory cgroup folders (from /proc/self/cgroup) and those above them."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        version = "v2" if controllers == "" else "v1" if "memory" in controllers.split(",") else None
        if version is None:
            continue
        mount, limit_file, usage_file = _CGROUPS[version]
        folder = Path(mount, path.lstrip("/"))
        while True:
            yield folder, limit_file, usage_file
            if folder == Path(mount):
                break
            folder = folder.parent


def device_memory_free(device: torch.device) -> int:
    """Bytes free on ``device`` for the training set."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return host_memory_free()


def should_stream(setting: str, data: ImageData, device: torch.device) -> bool:
    """Whether to stream the training set (``--stream``: auto, on, off). On a CPU a set already
    decoded into memory gains nothing from streaming; only a memory-mapped cache file is read."""
    if setting not in STREAMS:
        raise VaeError(f"unknown --stream '{setting}' (use {', '.join(STREAMS)})")
    if setting != "auto":
        return setting == "on"
    if device.type == "cpu" and data.mapped is None:
        return False
    size = data.images.numel() * data.images.element_size()
    return size > device_memory_free(device) // 2


def stream_note(data: ImageData, device: torch.device) -> str:
    """What ``--stream auto`` tells the user when it streams."""
    size, free = data.images.numel() * data.images.element_size(), device_memory_free(device)
    return (
        f"the training images ({size / 2**30:.2f} GiB) are more than half of the {device.type} memory free "
        f"({free / 2**30:.2f} GiB): streaming them from the host in a block shuffle "
        "(--stream off copies them to the device)"
    )


def make_feed(setting: str, data: ImageData, device: torch.device, tell: bool) -> DeviceFeed | StreamedFeed:
    """The feed ``--stream`` (``setting``) asks for; ``tell``: say so when auto chose to stream."""
    if not should_stream(setting, data, device):
        return DeviceFeed(data.images, device)
    if setting == "auto" and tell:
        note(stream_note(data, device))
    return StreamedFeed(data, device)


@dataclass(frozen=True)
class Batch:
    """A step's images: ``source.index_select(0, indices)``, or ``source`` itself when
    ``indices`` is None. The gather is the step's, so that a step compiled on CUDA holds it in
    its graph (with the binarisation and the noise)."""

    source: torch.Tensor  # uint8, on the device
    indices: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.source.shape[0] if self.indices is None else self.indices.shape[0]

    def images(self) -> torch.Tensor:
        # (index_select: on CPUs ten times the speed of source[indices].)
        return self.source if self.indices is None else self.source.index_select(0, self.indices)


class DeviceFeed:
    """The training images on the device; each epoch a uniform shuffle of them."""

    def __init__(self, images: torch.Tensor, device: torch.device) -> None:
        self.images, self.device = images.to(device), device

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, count: int) -> torch.Tensor:
        """The first ``count`` images, on the device (for checks)."""
        return self.images[:count]

    def first_batch(self, count: int) -> Batch:
        """The first ``count`` images as a batch the training step meets (for compiling)."""
        return Batch(self.images, torch.arange(count, device=self.device))

    def order(self) -> torch.Tensor:
        return torch.randperm(len(self), device=self.device)

    def batches(self, order: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """The batches of ``order`` from batch ``start`` (0-based), from the images on the device."""
        for indices in order.split(batch_size)[start:]:
            yield Batch(self.images, indices.to(self.device))


class StreamedFeed:
    """The training images read from the host as the epoch needs them (see the module)."""

    def __init__(self, data: ImageData, device: torch.device) -> None:
        self.data, self.device = data, device
        image_bytes = data.images[0].numel()
        self.block = max(1, BLOCK_BYTES // image_bytes)  # images per block
        self.blocks = math.ceil(len(data) / self.block)
        self.cached = 2 * WINDOW_BLOCKS  # the window being trained on and the next

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, count: int) -> torch.Tensor:
        return self.data.images[:count].clone().to(self.device)

    def first_batch(self, count: int) -> Batch:
        return Batch(self.sample(count))

    def order(self) -> torch.Tensor:
        """A block shuffle: blocks in random order, each window of blocks' images shuffled."""
        parts = []
        for window in torch.randperm(self.blocks).split(WINDOW_BLOCKS):
            images = torch.cat([torch.arange(b * self.block, min(len(self), (b + 1) * self.block))
                                for b in window.tolist()])  # fmt: skip
            parts.append(images[torch.randperm(len(images))])
        return torch.cat(parts)

    def batches(self, order: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """The batches of ``order`` from batch ``start``, gathered ahead in a background thread."""
        ready: queue.Queue[torch.Tensor | BaseException | None] = queue.Queue(maxsize=AHEAD)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._gather,
            args=(order.cpu().split(batch_size)[start:], ready, stop),
            daemon=True,
            name=READER_NAME,
        )
        reader.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield Batch(item)
        finally:
            stop.set()
            while reader.is_alive():  # (let a reader blocked on a full queue see the stop)
                try:
                    ready.get(timeout=0.1)
                except queue.Empty:
                    pass
            reader.join()

    def _gather(self, batches: tuple[torch.Tensor, ...], ready: queue.Queue, stop: threading.Event) -> None:
        blocks: OrderedDict[int, torch.Tensor] = OrderedDict()
        pin = self.device.type == "cuda"
        try:
            with BlockReader(self.data) as read:
                for indices in batches:
                    if stop.is_set():
                        return
                    batch = self._batch(indices, blocks, read)
                    if pin:
                        batch = batch.pin_memory()
                    ready.put(batch.to(self.device, non_blocking=True))
            ready.put(None)
        except BaseException as exc:  # (handed to the training thread, which raises it)
            ready.put(exc if isinstance(exc, VaeError) else VaeError(f"reading the training images: {exc}"))

    def _batch(self, indices: torch.Tensor, blocks: OrderedDict[int, torch.Tensor], read: BlockReader
               ) -> torch.Tensor:  # fmt: skip
        """The images ``indices`` from their blocks (read when not held; the oldest dropped)."""
        which = torch.div(indices, self.block, rounding_mode="floor")
        batch = torch.empty((len(indices), *self.data.images.shape[1:]), dtype=torch.uint8)
        for number in torch.unique(which).tolist():
            if number not in blocks:
                blocks[number] = read(number * self.block, min(len(self), (number + 1) * self.block))
                while len(blocks) > self.cached:
                    blocks.popitem(last=False)
            blocks.move_to_end(number)
            rows = (which == number).nonzero().squeeze(1)
            batch[rows] = blocks[number].index_select(0, indices[rows] - number * self.block)
        return batch


class BlockReader:
    """Reads images ``[start, stop)`` of a split as one contiguous read: from the dataset cache
    file (its pages are not mapped into the process, so they do not add to its memory), else
    copied from the tensor in memory."""

    def __init__(self, data: ImageData) -> None:
        self.data, self.file = data, None

    def __enter__(self) -> BlockReader:
        if self.data.mapped is not None:
            self.file = open(self.data.mapped[0], "rb", buffering=0)  # noqa: SIM115 (closed in __exit__)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        images = self.data.images
        if self.file is None or self.data.mapped is None:
            return images[start:stop].clone()
        out = torch.empty((stop - start, *images.shape[1:]), dtype=torch.uint8)
        view = memoryview(out.numpy()).cast("B")
        self.file.seek(self.data.mapped[1] + start * images[0].numel())
        done = 0
        while done < len(view):
            got = self.file.readinto(view[done:])
            if not got:
                raise VaeError(f"{self.data.mapped[0]} ended early (the dataset cache is truncated)")
            done += got
        return out
