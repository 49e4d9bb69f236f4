"""Split rules (labels 0 = train, 1 = valid, 2 = test), all vectorised.

- :func:`random_split`: random fractions, optionally stratified by label (GraphFM's 8:1:1).
- :func:`per_user_chronological`: the ml100k-ctr rule (last 10% test, 10% before valid).
- :func:`leave_last_out`: per user, last instance test, second-last valid (DG-ENN's T / T-1 / T-2).
- :func:`time_quantile_split`: global time split at a quantile (DemiNet's 80% rule).
"""
from __future__ import annotations

import numpy as np

from .raw import TEST, TRAIN, VALID
from .sequences import group_starts, sort_events


def random_split(n: int, valid: float = 0.1, test: float = 0.1, seed: int = 0,
                 stratify: np.ndarray | None = None) -> np.ndarray:
    """Random split; with ``stratify`` each label class is split in the same proportions."""
    rng = np.random.default_rng(seed)
    split = np.full(n, TRAIN, dtype=np.int8)
    classes = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    for rows in classes:
        rows = rng.permutation(rows)
        n_test = int(round(test * rows.size))
        n_val = int(round(valid * rows.size))
        split[rows[:n_test]] = TEST
        split[rows[n_test:n_test + n_val]] = VALID
    return split


def per_user_chronological(users: np.ndarray, *order_keys: np.ndarray, valid: float = 0.1,
                           test: float = 0.1, min_events: int = 3) -> np.ndarray:
    """Per user, in the order of ``order_keys`` (e.g. timestamp, item id): the last
    ``max(1, round(test * n))`` instances are test, the ``max(1, round(valid * n))`` before them
    validation, the rest train; users with fewer than ``min_events`` go wholly to train.
    ``round`` is half-to-even, as Python's built-in ``round``.
    """
    order = sort_events(users, *order_keys)
    su = np.asarray(users)[order]
    starts = group_starts(su)
    rank = np.arange(su.size) - starts
    _, inv, cnt = np.unique(su, return_inverse=True, return_counts=True)
    n = cnt[inv]
    n_test = np.maximum(1, np.round(test * n)).astype(np.int64)
    n_val = np.maximum(1, np.round(valid * n)).astype(np.int64)
    s = np.full(su.size, TRAIN, dtype=np.int8)
    s[rank >= n - n_test] = TEST
    s[(rank >= n - n_test - n_val) & (rank < n - n_test)] = VALID
    s[n < min_events] = TRAIN
    split = np.empty_like(s)
    split[order] = s
    return split


def leave_last_out(users: np.ndarray, *order_keys: np.ndarray) -> np.ndarray:
    """Per user: last instance test, second-last valid, the rest train (users with < 3 -> train)."""
    order = sort_events(users, *order_keys)
    su = np.asarray(users)[order]
    rank = np.arange(su.size) - group_starts(su)
    _, inv, cnt = np.unique(su, return_inverse=True, return_counts=True)
    n = cnt[inv]
    s = np.full(su.size, TRAIN, dtype=np.int8)
    s[(rank == n - 1) & (n >= 3)] = TEST
    s[(rank == n - 2) & (n >= 3)] = VALID
    split = np.empty_like(s)
    split[order] = s
    return split


def time_quantile_split(timestamps: np.ndarray, test_quantile: float = 0.8,
                        valid_quantile: float | None = 0.7) -> np.ndarray:
    """Global time split: test = events at or after the ``test_quantile`` timestamp; valid = events in
    [``valid_quantile``, ``test_quantile``) (None: no validation split)."""
    ts = np.asarray(timestamps)
    t_test = np.quantile(ts, test_quantile)
    split = np.full(ts.size, TRAIN, dtype=np.int8)
    split[ts >= t_test] = TEST
    if valid_quantile is not None:
        t_val = np.quantile(ts, valid_quantile)
        split[(ts >= t_val) & (ts < t_test)] = VALID
    return split
