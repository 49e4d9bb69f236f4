"""Vectorised behaviour-history construction.

Given events sorted by (user, time, tie-breaker), :func:`history_index` returns, for every event,
the positions of the last ``max_len`` *flagged* events (e.g. positive ratings) of the same user
strictly before it. Parallel sequences (item ids, categories, timestamps) are then gathered with
the same index, so they always align. No per-row Python.
"""
from __future__ import annotations

import numpy as np

CHUNK = 1 << 20


def sort_events(*keys: np.ndarray) -> np.ndarray:
    """Stable lexicographic order: first key is the primary one (``sort_events(user, ts, item)``)."""
    return np.lexsort(tuple(reversed([np.asarray(k) for k in keys])))


def group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    """For each row of a group-sorted array, the index of the first row of its group."""
    g = np.asarray(sorted_groups)
    new = np.ones(g.shape[0], dtype=bool)
    new[1:] = g[1:] != g[:-1]
    first = np.flatnonzero(new)
    return np.repeat(first, np.diff(np.append(first, g.shape[0])))


def rank_in_group(sorted_groups: np.ndarray) -> np.ndarray:
    """0-based position of each row inside its (contiguous) group."""
    return np.arange(len(sorted_groups)) - group_starts(sorted_groups)


def history_index(sorted_users: np.ndarray, flags: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Histories of flagged events strictly before each event, most recent last.

    Args:
        sorted_users: [N] user codes, events sorted by (user, time, tie-breaker).
        flags: [N] bool, which events enter histories (e.g. rating >= 4).
        max_len: keep at most this many (the most recent).

    Returns:
        (idx, lengths): ``idx`` [N, max_len] int64 positions into the sorted event arrays (only
        the first ``lengths[i]`` entries of row i are meaningful; the rest are 0), ``lengths`` [N].
    """
    flags = np.asarray(flags, dtype=bool)
    n = flags.shape[0]
    flagged_pos = np.flatnonzero(flags)
    before = np.cumsum(flags) - flags  # flagged events before i, all users
    starts = group_starts(sorted_users)
    count = before - before[starts]  # flagged events before i, same user
    lengths = np.minimum(count, max_len)
    first = before - lengths  # index into flagged_pos of the first kept event
    idx = np.zeros((n, max_len), dtype=np.int64)
    ar = np.arange(max_len)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        pos = first[s:e, None] + ar[None, :]
        valid = ar[None, :] < lengths[s:e, None]
        pos = np.where(valid, pos, 0)
        if flagged_pos.size:
            idx[s:e] = np.where(valid, flagged_pos[np.minimum(pos, flagged_pos.size - 1)], 0)
    return idx, lengths.astype(np.int64)


def gather(values: np.ndarray, idx: np.ndarray, lengths: np.ndarray, fill=0) -> np.ndarray:
    """``values[idx]`` with positions past ``lengths`` set to ``fill`` ([N, L])."""
    out = np.asarray(values)[idx]
    out[np.arange(idx.shape[1])[None, :] >= lengths[:, None]] = fill
    return out


def pad_ragged(values: np.ndarray, offsets: np.ndarray, max_len: int, keep: str = "first", fill=0):
    """Ragged (values, offsets) -> ([N, max_len], lengths). ``keep='last'`` keeps the tail."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lens_full = np.diff(offsets)
    lengths = np.minimum(lens_full, max_len)
    start = offsets[:-1] + (lens_full - lengths if keep == "last" else 0)
    n = lens_full.shape[0]
    ar = np.arange(max_len)
    valid = ar[None, :] < lengths[:, None]
    pos = np.where(valid, start[:, None] + ar[None, :], 0)
    values = np.asarray(values)
    if values.size == 0:
        out = np.full((n, max_len), fill, dtype=values.dtype if values.dtype.kind != "U" else object)
        return out, lengths
    out = values[np.minimum(pos, values.size - 1)]
    if out.dtype.kind in "US":
        out = out.astype(object)
    out[~valid] = fill
    return out, lengths
