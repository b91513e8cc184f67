"""Read-only memory maps of file regions, whose pages a reader that has finished with a part can
hand back (:func:`drop_pages`), so one pass over a mapped dataset larger than memory leaves the
process's resident memory where it was (the pages stay in the page cache, reclaimable)."""

from __future__ import annotations

import mmap
import os
import weakref

import numpy as np
import torch

#: The maps made here: start address -> (length, the map), held weakly (a map lives as long as
#: the arrays made from it).
_MAPS: dict[int, tuple[int, weakref.ref[mmap.mmap]]] = {}


def map_region(path: str | os.PathLike[str], start: int, length: int) -> np.ndarray:
    """The ``length`` bytes of ``path`` from byte ``start``, mapped read-only, as a uint8 array."""
    if length == 0:
        return np.empty(0, dtype=np.uint8)
    aligned = start - start % mmap.ALLOCATIONGRANULARITY  # (a map's offset must be aligned)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), length + start - aligned, access=mmap.ACCESS_READ, offset=aligned)
    array = np.frombuffer(mapping, dtype=np.uint8, count=length, offset=start - aligned)
    address = array.ctypes.data - (start - aligned)
    _MAPS[address] = (len(mapping), weakref.ref(mapping, lambda _: _MAPS.pop(address, None)))
    return array


def drop_pages(tensor: torch.Tensor) -> None:
    """Give back the resident pages under ``tensor``'s bytes when they are a region mapped by
    :func:`map_region` (a no-op for any other tensor); a later read faults them in again."""
    if not hasattr(mmap, "MADV_DONTNEED") or tensor.numel() == 0:
        return
    first = tensor.data_ptr()
    last = first + tensor.numel() * tensor.element_size()
    for address, (length, ref) in list(_MAPS.items()):
        mapping = ref()
        if mapping is None or not address <= first < address + length:
            continue
        offset = (first - address) - (first - address) % mmap.PAGESIZE
        mapping.madvise(mmap.MADV_DONTNEED, offset, min(last - address, length) - offset)
        return
