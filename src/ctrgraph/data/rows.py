"""Row ranges of (memory-mapped) arrays read without mapping the file's pages into this process."""
from __future__ import annotations

import numpy as np


def read_rows(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of ``a`` as an in-memory array. A memory-mapped ``.npy`` column (or a row
    slice of one) is read with a plain file read, so its pages are never mapped into this process
    (resident memory stays the window read, not the part of the file visited so far)."""
    root = a
    while isinstance(root, np.memmap) and isinstance(root.base, np.memmap):
        root = root.base
    if not (isinstance(a, np.memmap) and isinstance(root, np.memmap) and root.filename and a.flags.c_contiguous):
        return np.array(a[start:stop])
    row = a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
    skip = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    out = np.empty((stop - start, *a.shape[1:]), dtype=a.dtype)
    with open(root.filename, "rb") as f:
        f.seek(root.offset + skip + start * row)
        f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    return out


def read_chunk(a: np.ndarray, rows: slice) -> np.ndarray:
    """``a[rows]`` (a contiguous slice) as an in-memory array, by :func:`read_rows` when ``a`` is a
    memory-mapped column: a pass over a mapped split in chunks keeps only one chunk resident."""
    start, stop, step = rows.indices(len(a))
    if step != 1:
        raise ValueError("read_chunk: contiguous row slices only")
    return read_rows(a, start, stop)


__all__ = ["read_rows", "read_chunk"]
