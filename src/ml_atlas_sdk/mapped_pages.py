"""Keep a pass over a mapped tensor file at one batch of resident memory.

Tensor files are mapped, not read (`ptfile.load`), so a pass over every row leaves every page it
touched resident in the process: at 1M validation rows the model stages held the whole input file
on top of their own memory. After each batch the pass hands the pages up to that batch's end back
to the kernel (`MADV_DONTNEED`): they stay in the page cache, a later read maps them again, and for
a copy-on-write mapping a page the model wrote to reads as the file again. Arrays that are not mapped
from a tensor file (the SDK's in-memory tensors) are never touched.
"""
from __future__ import annotations

import mmap
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# start address -> the storage mapping; an entry goes when its arrays do
_MAPPINGS: weakref.WeakValueDictionary[int, np.memmap] = weakref.WeakValueDictionary()


def register(mapped: np.memmap) -> np.memmap:
    """Note a tensor file's storage mapping, so `release` may hand its pages back."""
    if getattr(mapped, "_mmap", None) is not None:
        _MAPPINGS[_base(mapped)] = mapped
    return mapped


def release(views: Iterable[Any]) -> None:
    """Hand back every page of each view's mapping (a view: a numpy array or a torch tensor) from
    the mapping's start up to the view's end: the pages behind a sequential pass, or all of an
    array read at random. Everything up to there, not just the view: a fault maps the pages around
    it too, including ones handed back before."""
    if not hasattr(mmap, "MADV_DONTNEED"):  # Windows: no madvise, the pages stay
        return
    for view in views:
        start, end = _span(view)
        found = _mapping(start) if end > start else None
        if found is not None:
            base, region = found
            through = min(end - base, len(region)) // mmap.PAGESIZE * mmap.PAGESIZE
            if through:
                region.madvise(mmap.MADV_DONTNEED, 0, through)


def take(array: Any, rows: Sequence[int], block: int = 8) -> Any:
    """array[rows] (a copy), a few rows at a time with their pages handed back after each block:
    the kernel maps whole folios around every row read (up to ~2 MB each), so a few scattered rows
    of a large file would otherwise leave most of it resident."""
    rows = rows.tolist() if hasattr(rows, "tolist") else [int(r) for r in rows]
    if not rows or _mapping(_span(array)[0]) is None:
        return array[rows]
    parts = []
    for at in range(0, len(rows), block):
        part = rows[at : at + block]
        parts.append(array[part])
        release([array])
    if hasattr(array, "data_ptr"):  # a torch tensor: torch is imported already
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def _mapping(address: int) -> tuple[int, mmap.mmap] | None:
    """(start address, mmap) of the registered mapping holding `address`, if any."""
    for base, mapped in list(_MAPPINGS.items()):
        if base <= address < base + len(mapped._mmap):
            return base, mapped._mmap
    return None


def _base(mapped: np.memmap) -> int:
    """The address np.memmap mapped from: the offset rounded down to the allocation granularity."""
    return mapped.ctypes.data - mapped.offset % mmap.ALLOCATIONGRANULARITY


def _span(view: Any) -> tuple[int, int]:
    """The byte addresses [start, end) a strided view reaches; empty for negative strides."""
    if hasattr(view, "data_ptr"):  # a torch tensor, without importing torch on the data side
        item = view.element_size()
        start, shape, strides = view.data_ptr(), tuple(view.shape), tuple(s * item for s in view.stride())
    else:
        view = np.asarray(view)
        item, start, shape, strides = view.itemsize, view.ctypes.data, view.shape, view.strides
    if 0 in shape or any(s < 0 for s in strides):
        return start, start
    return start, start + sum((n - 1) * s for n, s in zip(shape, strides)) + item
