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
