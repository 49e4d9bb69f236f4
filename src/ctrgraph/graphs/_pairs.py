"""Unordered item-pair keys: generation, sorting, run-length counting and top-K selection, the
kernels behind the co-occurrence and transition builders (docs/graphs.md, "How the builders work")."""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ._util import _coo_tocsr, csr_from_sorted

# ----- unordered pair keys (co-occurrence, transitions) ---------------------------------------
# A pair {a, b} of item ids is the int64 key ``max << 32 | min``: written as two int32 halves (no
# shift or or pass), sorted like (max, min), split again as strided int32 views. Pairs to drop
# (equal items, pairs across a sequence end) get a zero upper half, so they all sort before 2**32.
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)
_BLOCK = 1 << 18  # keys per block in the passes over all pairs (flags and gathers stay in cache)
_PACK_BITS = 63  # bits of a packed (row, count, column) sort key; tests lower it to reach the lexsort path
_VALID = np.int64(1) << 32  # every kept pair has a non-zero upper half (its max id is >= 2)


def key_halves(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max, min)`` of each pair key, as int32 views into ``keys`` (no copy)."""
    h = keys.view(np.int32).reshape(-1, 2)
    return h[:, _HI], h[:, _LO]


def window_pair_keys(values: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    """Pair keys of every two positions at distance 1..``window`` of one sequence (unsorted).

    ``values`` are int32 ids >= 1 (padding removed), ``offsets`` the ragged boundaries. A pair of
    equal items and a pair that crosses a sequence end get a key below 2**32 (dropped by
    :func:`unique_pairs`). Keys are laid out distance by distance: ``len(values) - d`` for each d.
    """
    v = np.ascontiguousarray(values, dtype=np.int32)
    m = v.size
    sizes = [m - d for d in range(1, window + 1) if m - d > 0]
    keys = np.empty(sum(sizes), dtype=np.int64)
    major, minor = key_halves(keys)
    ends = np.asarray(offsets[1:-1], dtype=np.int64)  # inner sequence ends (exclusive)
    pos = 0
    for d, size in enumerate(sizes, start=1):
        for s in range(0, size, _BLOCK):  # blocks keep the equality mask in cache
            e = min(size, s + _BLOCK)
            a, b = v[s: e], v[s + d: e + d]
            hi = major[pos + s: pos + e]
            np.minimum(a, b, out=minor[pos + s: pos + e])
            np.maximum(a, b, out=hi)
            np.copyto(hi, 0, where=a == b)
        # position i pairs with i + d: it crosses an end e iff e - d <= i < e
        cross = (ends[:, None] - np.arange(1, d + 1)).ravel()
        keys[pos + cross[(cross >= 0) & (cross < size)]] = 0
        pos += size
    return keys


class _Scratch:
    """Hands out arrays carved from a buffer whose pages are already touched (the free tail of the
    key array once the distinct keys are compacted into its front): large temporaries then cost no
    fresh page faults (on a virtual machine these can cost as much as the work itself). Falls back
    to ``np.empty`` when the buffer is used up."""

    def __init__(self, buf: np.ndarray | None):
        self.buf = np.empty(0, dtype=np.uint8) if buf is None else buf.view(np.uint8)
        self.pos = 0

    def empty(self, n: int, dtype=np.int64) -> np.ndarray:
        dt = np.dtype(dtype)
        start = -(-self.pos // 8) * 8
        if start + n * dt.itemsize > self.buf.size:
            return np.empty(n, dtype=dt)
        self.pos = start + n * dt.itemsize
        return self.buf[start: self.pos].view(dt)


class PairCounts(NamedTuple):
    """Distinct pair keys (ascending) and how often each occurred; most pairs occur once, so only
    the others carry a count (``expand_counts`` makes the full array)."""

    keys: np.ndarray          # int64 pair keys, ascending
    multi: np.ndarray         # bool per key: occurred more than once
    multi_index: np.ndarray   # flatnonzero(multi)
    multi_counts: np.ndarray  # int64 counts of keys[multi_index]
    head: np.ndarray | None = None  # with head_k: indices of the first head_k keys of each max segment
    head_k: int | None = None
    scratch: np.ndarray | None = None  # free, already touched tail of the key buffer (see _Scratch)

    def expand_counts(self, dtype=np.int64) -> np.ndarray:
        cnt = np.ones(self.keys.size, dtype=dtype)
        cnt[self.multi_index] = self.multi_counts
        return cnt


def unique_pairs(keys: np.ndarray, counts: bool = True, head_k: int | None = None):
    """Sort ``keys`` in place and count them: see :func:`unique_sorted_pairs`."""
    keys.sort()
    return unique_sorted_pairs(keys, counts, head_k)


def unique_sorted_pairs(keys: np.ndarray, counts: bool = True, head_k: int | None = None):
    """The distinct kept pair keys of sorted ``keys`` (an array), or with ``counts`` a :class:`PairCounts`.

    ``head_k`` (with ``counts``) also lists the first ``head_k`` distinct keys of each segment of
    equal max id (for :func:`top_k_symmetric`), in the same pass.

    Runs block by block (``_BLOCK`` keys plus one of look-ahead, so a run of equal keys may cross
    blocks): each block's flags and gathers stay in cache, which matters more than the few dozen
    Python-level calls per block. ``keys`` is overwritten: the distinct keys are compacted into its
    front (no new array, so no fresh pages to fault in), and the result is a view of it.
    """
    k = keys[np.searchsorted(keys, _VALID):]
    n_keys = k.size
    uk = k  # distinct key g goes to k[g]: g <= the position being read, and numpy buffers overlaps
    multi = np.empty(n_keys, dtype=bool) if counts else None
    idx, cnt, heads = [], [], []
    major = key_halves(uk)[0]
    nu = 0
    prev = None  # the key before the block (k[s - 1] may be overwritten by then)
    for s in range(0, n_keys, _BLOCK):
        own = min(_BLOCK, n_keys - s)
        blk = k[s: s + own + 1]  # + the next key, if any
        new = np.empty(own + 1, dtype=bool)  # new[i]: key i starts a run (new[own]: the next key does)
        new[0] = prev is None or blk[0] != prev
        prev = blk[own - 1].copy()
        np.not_equal(blk[1:], blk[:-1], out=new[1: blk.size])
        if blk.size == own:
            new[own] = True  # the end of the keys ends every run
        first = np.flatnonzero(new[:own])
        if counts and s and not new[0]:  # the leading keys continue the previous block's last run
            cnt[-1][-1] += first[0] if first.size else own
        if first.size == 0:
            continue
        np.take(blk, first, out=uk[nu: nu + first.size], mode="clip")
        if counts:
            m = np.greater(new[:own], new[1:])[first]  # the run goes on past its first key
            multi[nu: nu + first.size] = m
            j = np.flatnonzero(m)
            idx.append(j + nu)
            nxt = np.take(first, j + 1, mode="clip")  # next run's first key; the block end after the last
            if j.size and j[-1] == first.size - 1:
                nxt[-1] = own
            cnt.append(nxt - first[j])  # in this block; a run crossing on gets the rest above
        if head_k is not None:  # key g heads its segment iff g < head_k or major[g] != major[g - head_k]
            t = min(max(nu, head_k), nu + first.size)
            h = np.ones(nu + first.size - t, dtype=bool)
            np.not_equal(major[t: nu + first.size], major[t - head_k: nu + first.size - head_k], out=h)
            heads.append(np.arange(nu, t))
            heads.append(np.flatnonzero(h) + t)
        nu += first.size
    uk = uk[:nu]
    if not counts:
        return uk
    e = np.empty(0, dtype=np.int64)
    return PairCounts(uk, multi[:nu], np.concatenate(idx or [e]), np.concatenate(cnt or [e]),
                      np.concatenate(heads or [e]) if head_k is not None else None, head_k, k[nu:])


def symmetric_from_pairs(uk: np.ndarray, n: int, data: np.ndarray | None = None,
                         dtype=np.float32) -> sp.csr_matrix:
    """Symmetric CSR with both ``(max, min)`` and ``(min, max)`` of each distinct pair key.

    ``data`` per pair (None: 1). One counting sort by row over both directions, fed first all
    ``(max, min)`` entries then all ``(min, max)`` entries in key order: row i then receives its
    columns below i in ascending order, then those above i in ascending order, so the CSR comes out
    with sorted indices and no second pass.
    """
    nnz = uk.size
    idx_dt = np.int32 if 2 * nnz < 2**31 else np.int64
    major, minor = key_halves(uk)
    buf = np.empty(3 * nnz, dtype=idx_dt)  # rows = buf[:2nnz] = (max, min), cols = buf[nnz:] = (min, max)
    buf[:nnz] = major
    buf[nnz: 2 * nnz] = minor
    buf[2 * nnz:] = buf[:nnz]
    rows, cols = buf[: 2 * nnz], buf[nnz:]
    if data is None:
        vals = np.ones(2 * nnz, dtype=dtype)
        out_vals = vals  # all ones: the scatter may write into its own input
    else:
        vals = np.concatenate([data, data]).astype(dtype, copy=False)
        out_vals = np.empty(2 * nnz, dtype=dtype)
    if _coo_tocsr is None:  # pragma: no cover
        m = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
        m.sort_indices()
        return m
    indptr = np.empty(n + 1, dtype=idx_dt)
    indices = np.empty(2 * nnz, dtype=idx_dt)
    _coo_tocsr(n, n, 2 * nnz, rows, cols, vals, indptr, indices, out_vals)
    m = sp.csr_matrix((out_vals, indices, indptr), shape=(n, n))
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def top_k_symmetric(pc: PairCounts, n: int, k: int, dtype=np.float32) -> sp.csr_matrix:
    """The ``k`` largest counts of each row of the symmetric count matrix of ``pc`` (:func:`unique_pairs`).

    Ties go to the smaller column. Never materialises the symmetric matrix: only a candidate set that
    provably holds every row's top-k is sorted once by (row, count desc, column):
      * pairs counted twice or more, both directions (few: most pairs are counted once), less
        those :func:`_multi_survivors` proves cannot make their row's top-k;
      * a pair counted once enters row ``max`` (column ``min``) only if it is among the first k
        keys of its ``max`` segment: before it in that row come all the row's multi-count entries
        and the once-counted keys earlier in the segment, so at position p its rank is >= p;
      * it enters row ``min`` (column ``max``, above every column of row ``min``'s own segment) only
        if that row's multi-count entries plus once-counted segment keys number fewer than k, which
        the first k keys of each segment decide exactly (a segment of >= k keys has >= k - m once
        keys among its first k, m <= the row's multi-count entries).
    """
    uk, multi, multi_counts = pc.keys, pc.multi, pc.multi_counts
    scratch = _Scratch(pc.scratch)
    major, minor = key_halves(uk)
    k2 = np.take(uk, pc.multi_index, out=scratch.empty(pc.multi_index.size), mode="clip")
    ma2, mi2 = key_halves(k2)
    n_multi = np.bincount(ma2, minlength=n) + np.bincount(mi2, minlength=n)  # per row
    head = pc.head
    if head is None or pc.head_k != k:  # the first k keys of each max segment (keys sorted by max)
        h = np.ones(uk.size, dtype=bool)
        np.not_equal(major[k:], major[:-k], out=h[k:])
        head = np.flatnonzero(h)
    mah, mih = key_halves(np.take(uk, head, out=scratch.empty(head.size), mode="clip"))
    once = ~multi[head]
    seg_head = np.bincount(mah, minlength=n)  # < k: the whole segment is in the head
    seg_once = np.bincount(mah[once], minlength=n)
    needs_upper = (seg_head < k) & (n_multi + seg_once < k)
    low = np.flatnonzero(once & (n_multi[mah] < k))
    ku = [uk[:0]]  # keys whose min needs its upper columns, counted once; blocks: the int32 -> intp
    for s in range(0, uk.size, _BLOCK):  # widening of the gather indices stays small
        up = needs_upper[minor[s: s + _BLOCK]] > multi[s: s + _BLOCK]
        ku.append(uk[s: s + _BLOCK][np.flatnonzero(up)])
    mau, miu = key_halves(np.concatenate(ku))
    fwd, bwd = _multi_survivors(ma2, mi2, multi_counts, n, k, scratch=scratch)
    parts = [(ma2[fwd], mi2[fwd], multi_counts[fwd]), (mi2[bwd], ma2[bwd], multi_counts[bwd]),
             (mah[low], mih[low], 1), (miu, mau, 1)]
    return _rank_keep(parts, n, k, dtype, scratch)


def _multi_survivors(major: np.ndarray, minor: np.ndarray, cnt: np.ndarray, n: int, k: int,
                     levels: int = 8, scratch: _Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pairs that may make the top-k of row ``major`` (fwd) and of row ``minor`` (bwd).

    Counts are bucketed by ``floor(log2)`` (the last bucket open-ended; any non-decreasing bucketing
    would do); a row with k entries in buckets >= b keeps no entry below bucket b: each of those is
    beaten by k larger counts.
    """
    scratch = scratch or _Scratch(None)
    cap = 1 << (levels - 1)
    lut = np.zeros(cap + 1, dtype=np.int64)
    lut[1:] = np.frexp(np.arange(1, cap + 1))[1] - 1  # floor(log2 c), exact
    base = np.minimum(cnt, cap, out=scratch.empty(cnt.size))
    np.take(lut, base, out=base, mode="clip")  # the bucket (clip mode: no buffered copy)
    base *= n  # level-major histogram index: the cumulative sum below runs over whole rows of n
    idx = np.add(base, major, out=scratch.empty(cnt.size))
    hist = np.bincount(idx, minlength=n * levels)
    idx_b = np.add(base, minor, out=base)
    hist += np.bincount(idx_b, minlength=n * levels)
    at_least = hist.reshape(levels, n)[::-1].cumsum(axis=0)  # [j]: entries in buckets >= levels-1-j
    thr = np.maximum(np.count_nonzero(at_least >= k, axis=0) - 1, 0)  # highest b with k entries >= b
    survives = (np.arange(levels)[:, None] >= thr[None, :]).ravel()  # by histogram index
    flag = scratch.empty(cnt.size, dtype=bool)
    fwd = np.flatnonzero(np.take(survives, idx, out=flag, mode="clip"))
    return fwd, np.flatnonzero(np.take(survives, idx_b, out=flag, mode="clip"))


def _rank_keep(parts: list, n: int, k: int, dtype, scratch: _Scratch | None = None) -> sp.csr_matrix:
    """Keep the k first (value desc, column asc) entries of each row; CSR of the kept entries.

    ``parts``: ``(rows, cols, values)`` arrays (``values`` may be one int for the whole part) of
    distinct (row, col) entries with integer values >= 1. One sort of packed int64 keys
    ``row | max - value | col`` (a lexsort where they do not fit), then one of the kept entries.
    """
    sizes = [len(r) for r, _, _ in parts]
    total = sum(sizes)
    vmax = max([1] + [int(np.max(v)) if np.ndim(v) else int(v) for (_, _, v), m in zip(parts, sizes) if m])
    bc = max(1, int(n - 1).bit_length())
    bv = max(1, int(vmax - 1).bit_length())
    if 2 * bc + bv > _PACK_BITS:  # ids and counts do not pack into one int64 key
        rows = np.concatenate([np.asarray(r, dtype=np.int64) for r, _, _ in parts])
        cols = np.concatenate([np.asarray(c, dtype=np.int64) for _, c, _ in parts])
        vals = np.concatenate([np.broadcast_to(np.asarray(v, dtype=np.int64), (m,))
                               for (_, _, v), m in zip(parts, sizes)])
        order = np.lexsort((cols, -vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        keep = np.ones(rows.size, dtype=bool)
        np.not_equal(rows[k:], rows[:-k], out=keep[k:])
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        order = np.lexsort((cols, rows))
        return csr_from_sorted(rows[order], cols[order], vals[order].astype(dtype), (n, n))
    scratch = scratch or _Scratch(None)
    key = scratch.empty(total)
    pos = 0
    for (r, c, v), m in zip(parts, sizes):  # a handful of parts, each packed in place
        seg = key[pos: pos + m]
        np.left_shift(r, bv + bc, out=seg, dtype=np.int64)
        if np.ndim(v):
            seg |= (vmax - v) << bc
        else:
            seg |= (vmax - int(v)) << bc
        np.bitwise_or(seg, c, out=seg, dtype=np.int64)
        pos += m
    key.sort()
    r = np.right_shift(key, bv + bc, out=scratch.empty(total))
    keep = np.ones(key.size, dtype=bool)  # sorted by row: rank < k  <=>  the row differs k places back
    np.not_equal(r[k:], r[:-k], out=keep[k:])
    key = np.compress(keep, key, out=scratch.empty(int(np.count_nonzero(keep))))
    # re-pack as (row, col, value) in place and sort into CSR order
    r = np.right_shift(key, bv + bc, out=r[: key.size])
    v = np.right_shift(key, bc, out=scratch.empty(key.size))
    v &= (1 << bv) - 1
    key &= (1 << bc) - 1
    r <<= bc
    key |= r
    key <<= bv
    key |= v
    key.sort()
    np.bitwise_and(key, (1 << bv) - 1, out=v)
    values = (vmax - v).astype(dtype)
    key >>= bv
    np.right_shift(key, bc, out=r)
    key &= (1 << bc) - 1
    return csr_from_sorted(r, key, values, (n, n))
