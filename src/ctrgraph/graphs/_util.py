"""Small vectorised helpers shared by the graph builders (ragged sequences, CSR assembly); the
pair-key kernels are in ``_pairs.py``."""
from __future__ import annotations

from typing import Union

import numpy as np
import scipy.sparse as sp

try:  # the C++ counting sort behind ``coo_matrix.tocsr`` without its index checks (private in scipy)
    from scipy.sparse._sparsetools import coo_tocsr as _coo_tocsr
except ImportError:  # pragma: no cover - other scipy layouts: the public (slower) route
    _coo_tocsr = None

#: A set of sequences: a post-padded ``[N, L]`` id array (0 = padding) or a ragged
#: ``(values, offsets)`` pair (``values[offsets[i]:offsets[i+1]]`` is sequence i).
Sequences = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]


def as_ragged(seqs: Sequences, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Sequences -> ``(values, offsets int64)``; padding ids (0) are dropped wherever they sit.

    ``values`` has ``dtype`` (int64 by default; None keeps the input's integer type, no copy).
    Ragged offsets must start at 0, end at ``len(values)`` and never decrease.
    """
    if isinstance(seqs, tuple):
        values, offsets = seqs
        values = np.asarray(values)
        if values.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got {values.dtype}")
        values = values.astype(dtype or values.dtype, copy=False)
        offsets = np.asarray(offsets, dtype=np.int64)
        if values.ndim != 1 or offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 \
                or offsets[-1] != values.size or (offsets.size > 1 and np.diff(offsets).min() < 0):
            raise ValueError("ragged sequences need 1-d values and non-decreasing offsets from 0 to len(values)")
        if (values == 0).any():  # drop padding, keep sequence boundaries
            keep = values != 0
            cum = np.concatenate([[0], np.cumsum(keep)])
            offsets = cum[offsets]
            values = values[keep]
        return values, offsets
    a = np.asarray(seqs)
    if a.ndim != 2:
        raise ValueError(f"sequences must be [N, L] or (values, offsets), got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers, got {a.dtype}")
    mask = a != 0
    values = a[mask].astype(dtype or a.dtype, copy=False)
    offsets = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return values, offsets


def remaining_in_sequence(offsets: np.ndarray, n: int) -> np.ndarray:
    """For each flat position, how many positions of the same sequence follow it (int32 when it fits)."""
    lengths = np.diff(offsets)
    ends = np.repeat(offsets[1:], lengths)
    dt = np.int32 if n < 2**31 else np.int64
    return (ends - np.arange(n, dtype=np.int64) - 1).astype(dt, copy=False)


def offset_pairs(values: np.ndarray, remaining: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) = (values[i], values[i + d]) for every i whose sequence holds position i + d."""
    n = values.shape[0]
    if n <= d:
        e = np.empty(0, dtype=values.dtype)
        return e, e
    ok = remaining[: n - d] >= d
    return values[: n - d][ok], values[d:][ok]


def count_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``keys`` in place and return ``(unique keys, counts)``."""
    if keys.size == 0:
        return keys, np.empty(0, dtype=np.int64)
    keys.sort()
    new = np.empty(keys.size, dtype=bool)
    new[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    first = np.flatnonzero(new)
    counts = np.diff(np.append(first, keys.size))
    return keys[first], counts


def csr_from_sorted(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR from entries already sorted by (row, col) with no duplicates (no re-sorting)."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    if rows.size:
        np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    idx_dt = np.int32 if max(shape) < 2**31 and rows.size < 2**31 else np.int64
    m = sp.csr_matrix((data, cols.astype(idx_dt, copy=False), indptr.astype(idx_dt, copy=False)), shape=shape)
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], weighted: bool,
                   dtype=np.float32) -> sp.csr_matrix:
    """Adjacency from (possibly repeated) pairs: counts when ``weighted`` else 1 per distinct pair."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    keys, cnt = count_keys(rows * shape[1] + cols)
    r, c = np.divmod(keys, shape[1])
    data = cnt.astype(dtype) if weighted else np.ones(keys.size, dtype=dtype)
    return csr_from_sorted(r, c, data, shape)


def symmetric_from_upper(lo: np.ndarray, hi: np.ndarray, data: np.ndarray, n: int) -> sp.csr_matrix:
    """Mirror entries (lo, hi) with lo < hi, sorted by (lo, hi), into a symmetric CSR ``U + U^T``.

    Linear time: the CSR transpose is a counting sort and the sum of two canonical CSR matrices a
    row-wise merge (no global sort).
    """
    u = csr_from_sorted(lo, hi, data, (n, n))
    out = (u + u.T.tocsr()).tocsr()
    out.sort_indices()
    return out


def top_k_rows(m: sp.csr_matrix, k: int | None) -> sp.csr_matrix:
    """Keep the ``k`` largest values of each row; ties broken by smaller column id (deterministic).

    Rows with at most ``k`` entries are kept whole. For the others one sort orders the entries by
    (row, value descending, column): packed into one int64 key when values are small non-negative
    integers (counts) and the ids fit, else a lexsort.
    """
    m = m.tocsr()
    m.sort_indices()
    if k is None:
        return m
    deg = np.diff(m.indptr)
    if deg.size == 0 or deg.max() <= k:
        return m
    heavy_row = deg > k
    rows_all = np.repeat(np.arange(m.shape[0], dtype=np.int64), deg)
    heavy = heavy_row[rows_all]
    r = rows_all[heavy]
    c = m.indices[heavy].astype(np.int64)
    v = m.data[heavy]
    bc = max(1, int(m.shape[1] - 1).bit_length())
    br = max(1, int(m.shape[0] - 1).bit_length())
    vmax = v.max()
    is_int = v.size and np.all(v >= 0) and np.all(v == np.floor(v)) and vmax < 2**62
    bv = max(1, int(vmax).bit_length()) if is_int else 64
    if br + bv + bc <= 63:
        vi = v.astype(np.int64)
        key = (r << (bv + bc)) | ((int(vmax) - vi) << bc) | c
        key.sort()
        r = key >> (bv + bc)
        c = key & ((1 << bc) - 1)
        v = (int(vmax) - ((key >> bc) & ((1 << bv) - 1))).astype(m.data.dtype)
    else:
        order = np.lexsort((c, -v, r))
        r, c, v = r[order], c[order], v[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if r.size else np.empty(0, np.int64)
    first = np.repeat(starts, np.diff(np.append(starts, r.size)))
    keep = (np.arange(r.size) - first) < k
    # mark the kept entries in the original (row, col)-sorted order: no second sort
    orig = rows_all * m.shape[1] + m.indices
    mask = ~heavy
    mask[np.searchsorted(orig, r[keep] * m.shape[1] + c[keep])] = True
    return csr_from_sorted(rows_all[mask], m.indices[mask].astype(np.int64), m.data[mask], m.shape)
