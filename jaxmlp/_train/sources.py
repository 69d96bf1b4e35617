"""Row sources: data that ``fit`` reads a chunk of rows at a time instead of holding on the device.

A source is anything with a length and a ``take(indices)`` that returns those rows (see
:class:`RowSource`): a NumPy memmap, a table on disk, a database cursor. :class:`ArraySource` wraps
arrays (memmaps included). A source that holds only one process's rows of a larger data set says
where they sit with ``offset`` and ``global_rows`` (see :class:`RowSource`).
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RowSource(Protocol):
    """What ``fit`` streams from: ``len(source)`` rows, and ``source.take(indices) -> (x, y)``.

    ``take`` receives a 1-D int64 array of row indices (in the order the epoch visits them;
    repeats allowed) and returns the inputs ``(len(indices), features)`` and the targets
    ``(len(indices), ...)`` of those rows, as NumPy arrays, in that order. ``fit`` checks what
    comes back (row counts, shapes, NaN/Inf, label ranges) chunk by chunk.

    Optional attributes, for sharded input in a multi-process run (``fit(..., mesh=...)``): a
    source holding rows ``[offset, offset + len(source))`` of a data set of ``global_rows`` rows
    sets both; ``take`` then receives indices relative to its own first row.
    """

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _mapping(a: Any) -> Any:
    """The ``mmap`` object behind a NumPy memmap (or a view of one), else ``None``."""
    while a is not None:
        m = getattr(a, "_mmap", None)
        if m is not None:
            return m
        a = getattr(a, "base", None)
    return None


class ArraySource:
    """A :class:`RowSource` over arrays that share a leading row axis: NumPy arrays, memmaps
    (``np.load(path, mmap_mode="r")``) or anything NumPy can index with an integer array.

    A memmap opened from a file (``np.load(path, mmap_mode="r")``) is read with positioned reads
    of its rows, in sorted order, so the file's pages never count towards the process's resident
    memory (the kernel's page cache keeps them); other memmaps (views of one) are read through
    the mapping, whose pages are released every 4096 rows (``madvise(MADV_DONTNEED)``). Either
    way the resident memory stays bounded by the chunk, not the file.

    Args:
        x: ``(n, features)`` inputs.
        y: ``(n, ...)`` targets.
        offset: for a shard of a larger data set, the global index of this shard's first row.
        global_rows: for a shard, the rows of the whole data set (every process's shards).

    Raises:
        ValueError: ``x`` and ``y`` hold different numbers of rows, or the shard does not fit.
    """

    def __init__(self, x: Any, y: Any, *, offset: int = 0, global_rows: int | None = None):
        if not (hasattr(x, "shape") and hasattr(y, "shape")):
            raise TypeError("x: ArraySource needs arrays (NumPy arrays or memmaps) for x and y")
        if len(x.shape) < 1 or len(y.shape) < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"y: {y.shape[0] if len(y.shape) else 0} rows, but x has "
                f"{x.shape[0] if len(x.shape) else 0} rows"
            )
        self.x, self.y = x, y
        n = int(x.shape[0])
        if global_rows is not None and not 0 <= offset <= offset + n <= global_rows:
            raise ValueError(
                f"offset: rows [{offset}, {offset + n}) do not lie in the {global_rows} global rows"
            )
        self.offset = int(offset)
        self.global_rows = None if global_rows is None else int(global_rows)
        self._files = [_file_rows(a) for a in (x, y)]
        self._maps = [
            m for a, f in zip((x, y), self._files, strict=True) if f is None
            for m in [_mapping(a)] if m is not None
        ]  # fmt: skip

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` of ``x`` and ``y``, in that order (memmaps are read in sorted order).
        The rows land in 64-byte aligned buffers, which a CPU device then uses without a copy."""
        if not self._maps:
            got = [
                _gather(a, indices) if f is None else _read_rows(*f, indices)
                for a, f in zip((self.x, self.y), self._files, strict=True)
            ]
            return got[0], got[1]
        order = np.argsort(indices, kind="stable")
        where = indices[order]
        out = [aligned_empty((indices.size, *a.shape[1:]), a.dtype) for a in (self.x, self.y)]
        # A page fault maps up to 16 pages around the one touched, so a block of scattered rows
        # maps up to 64 KiB each: release them block by block.
        for lo in range(0, where.size, _MAPPED_ROWS):
            part = slice(lo, lo + _MAPPED_ROWS)
            for a, put in zip((self.x, self.y), out, strict=True):
                put[order[part]] = a[where[part]]
            for m in self._maps:
                m.madvise(mmap.MADV_DONTNEED)
        return out[0], out[1]


# Rows of a memmap read between two releases of its pages (at most 256 MiB mapped at a time).
_MAPPED_ROWS = 4096


def _file_rows(a: Any) -> tuple[str, int, int, tuple[int, ...], np.dtype] | None:
    """``(file, offset, row bytes, row shape, dtype)`` of a memmap read straight from its file
    (a whole memmap with C-ordered rows, ``np.load(path, mmap_mode="r")``), else ``None``."""
    if not (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.filename):
        return None
    if not a.flags.c_contiguous or a.ndim < 1:
        return None
    return str(a.filename), int(a.offset), int(a.strides[0]), tuple(a.shape[1:]), a.dtype


def _read_rows(path: str, offset: int, row_bytes: int, tail: tuple[int, ...], dtype: Any,
               indices: np.ndarray) -> np.ndarray:  # fmt: skip
    """Rows ``indices`` of a file of fixed-size rows, by positioned reads (one per run of
    consecutive rows), never mapped into the process: its resident memory holds the rows read,
    not the file's pages around them."""
    uniq, inverse = np.unique(indices, return_inverse=True)
    rows = aligned_empty((uniq.size, *tail), dtype)
    view = memoryview(rows.reshape(-1).view(np.uint8).data)
    cut = np.flatnonzero(np.diff(uniq) != 1) + 1
    starts, ends = np.concatenate([[0], cut]), np.concatenate([cut, [uniq.size]])
    fd = os.open(path, os.O_RDONLY)
    try:
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            done, want, at = lo * row_bytes, hi * row_bytes, offset + int(uniq[lo]) * row_bytes
            while done < want:
                got = os.preadv(fd, [view[done:want]], at + done - lo * row_bytes)
                if got <= 0:
                    raise ValueError(f"x: {path} ended before row {int(uniq[hi - 1])}")
                done += got
    finally:
        os.close(fd)
    if uniq.size == indices.size and np.array_equal(uniq, indices):
        return rows
    out = aligned_empty((indices.size, *tail), dtype)
    np.take(rows, inverse.reshape(-1), axis=0, out=out)
    return out


def _gather(a: Any, indices: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    out = aligned_empty((indices.size, *a.shape[1:]), a.dtype)
    np.take(a, indices, axis=0, out=out)
    return out


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised host array whose data start on a 64-byte boundary (XLA's CPU client then
    uses the buffer itself as the device array instead of copying it)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)
