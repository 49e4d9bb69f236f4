"""Vectorised negative sampling: items a user has not interacted with."""
from __future__ import annotations

import numpy as np


def sample_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int, per_row: int,
                     positive_users: np.ndarray, positive_items: np.ndarray, probs: np.ndarray | None = None,
                     max_rounds: int = 20) -> np.ndarray:
    """For each row, ``per_row`` item codes in ``[0, n_items)`` that the row's user never
    interacted with (according to the (positive_users, positive_items) pairs).

    Sampling is uniform (or by ``probs``); collisions with the user's items are redrawn for up to
    ``max_rounds`` rounds (users who interacted with nearly everything may keep a collision).
    """
    users = np.asarray(users, dtype=np.int64)
    keys = np.unique(np.asarray(positive_users, dtype=np.int64) * n_items + np.asarray(positive_items, dtype=np.int64))

    def draw(k: int) -> np.ndarray:
        if probs is None:
            return rng.integers(0, n_items, size=k)
        return rng.choice(n_items, size=k, p=probs)

    out = draw(users.size * per_row).reshape(users.size, per_row)
    urep = np.repeat(users, per_row).reshape(users.size, per_row)
    for _ in range(max_rounds):
        k = urep * n_items + out
        pos = np.searchsorted(keys, k)
        hit = (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == k)
        if not hit.any():
            break
        out[hit] = draw(int(hit.sum()))
    return out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_negatives(seed: int, user_keys: np.ndarray, ordinals: np.ndarray, users: np.ndarray, n_items: int,
                    per_row: int, positive_users: np.ndarray, positive_items: np.ndarray,
                    probs: np.ndarray | None = None, max_rounds: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Negatives drawn from a counter-based hash instead of one random stream, so that a row's draws do
    not depend on which other rows are sampled in the same call (chunked / streamed encodings).

    Draw ``j`` of a row in redraw round ``r`` is a function of (``seed``, ``user_keys`` (the row's raw
    user id), ``ordinals`` (the row's index among its user's rows), ``j``, ``r``): a splitmix64 hash
    turned into a uniform double in [0, 1), then an item code (uniform, or by ``probs`` through the
    cumulative distribution). Collisions with the user's items (``users`` [rows] are codes into the
    ``positive_users`` space) are redrawn for up to ``max_rounds`` rounds, as
    :func:`sample_negatives`; returns (codes [rows, per_row], mask of the valid draws).
    """
    users = np.asarray(users, dtype=np.int64)
    n = users.size
    col = np.arange(per_row, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        s = _mix64(np.array([int(seed) % 2**64], dtype=np.uint64) ^ _GOLDEN)
        hu = _mix64(s ^ np.asarray(user_keys, dtype=np.int64).astype(np.uint64))
        base = _mix64(hu[:, None] + (np.asarray(ordinals, dtype=np.int64).astype(np.uint64)[:, None]
                                     * np.uint64(per_row) + col + np.uint64(1)) * _GOLDEN)
    cum = None
    if probs is not None:
        cum = np.cumsum(np.asarray(probs, dtype=np.float64))
        last = int(np.flatnonzero(np.asarray(probs) > 0)[-1])

    def draw(b: np.ndarray, r: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = _mix64(b + np.uint64(r) * np.uint64(0xD6E8FEB86659FD93))
        u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
        if cum is None:
            return np.minimum((u * n_items).astype(np.int64), n_items - 1)
        return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), last).astype(np.int64)

    out = draw(base, 0).reshape(n, per_row)
    keys = np.unique(np.asarray(positive_users, dtype=np.int64) * n_items + np.asarray(positive_items, dtype=np.int64))
    if keys.size == 0:
        return out, np.ones(out.shape, dtype=bool)
    urep = np.repeat(users, per_row).reshape(n, per_row)

    def hits() -> np.ndarray:
        k = urep * n_items + out
        p = np.minimum(np.searchsorted(keys, k), keys.size - 1)
        return keys[p] == k

    hit = hits()
    for r in range(1, max_rounds + 1):
        if not hit.any():
            break
        out[hit] = draw(base[hit], r)
        hit = hits()
    return out, ~hit
