"""Thin helpers: build the graphs from an :class:`EncodedDataset`'s train split, finding fields by role.

All graphs use the train split only (research notes 2.3, 5.2 #12). Node counts are vocabulary
sizes, so matrix rows are embedding-table rows.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.rows import read_chunk
from ..data.schema import Kind, Role
from . import builders


def user_sequences(users: np.ndarray, hist: np.ndarray, hist_ts: np.ndarray | None = None,
                   chunk_rows: int = builders.CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's behaviour sequence, reconstructed once from the samples' histories.

    Histories of one user's samples are overlapping windows of one behaviour stream. With
    timestamps the stream is the set of distinct ``(user, ts, item)`` behaviours seen in any
    history, ordered by (ts, item) (equal times ordered by item id: deterministic). Without
    timestamps the longest history of the user is taken (ties: the last such row).

    Returns ``(values, offsets, user_ids)``: user ``user_ids[i]``'s sequence is
    ``values[offsets[i]:offsets[i+1]]`` (users without history are absent). ``[N, L]`` inputs are
    read ``chunk_rows`` rows at a time (memory grows with the distinct behaviours, not with N x L).
    """
    users = np.asarray(users, dtype=np.int64)
    n = users.size
    if hist_ts is None:
        lens = np.concatenate([(read_chunk(hist, r) != 0).sum(axis=1) for r in builders._row_chunks(n, chunk_rows)]) \
            if n else np.zeros(0, dtype=np.int64)
        order = np.lexsort((np.arange(users.size), lens, users))  # last row per user = longest, latest
        last = np.ones(order.size, dtype=bool)
        last[:-1] = users[order][1:] != users[order][:-1]
        rows = order[last]
        rows = rows[lens[rows] > 0]
        sub = np.asarray(hist[np.sort(rows)])[np.argsort(np.argsort(rows))] if rows.size else np.asarray(hist[:0])
        m = sub != 0
        offsets = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(m.sum(axis=1), out=offsets[1:])
        return sub[m].astype(np.int64), offsets, users[rows]
    parts = [_distinct_behaviours(users[r], read_chunk(hist, r), read_chunk(hist_ts, r))
             for r in builders._row_chunks(n, chunk_rows)] or [_distinct_behaviours(users, np.asarray(hist),
                                                                                     np.asarray(hist_ts))]
    u, t, v = (np.concatenate([p[i] for p in parts]) for i in range(3))
    if len(parts) > 1:  # a user's behaviours may sit in two chunks: deduplicate across them
        u, t, v = _distinct_sorted(u, t, v)
    first = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if u.size else np.empty(0, np.int64)
    offsets = np.append(first, u.size).astype(np.int64)
    return v, offsets, u[first]


def _distinct_sorted(u: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (u, t, v) triples, sorted by (u, t, v)."""
    order = np.lexsort((v, t, u))
    u, t, v = u[order], t[order], v[order]
    new = np.ones(u.size, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1]) | (v[1:] != v[:-1])
    return u[new], t[new], v[new]


def _distinct_behaviours(users: np.ndarray, hist: np.ndarray, hist_ts: np.ndarray):
    """(user, ts, item) of every history position of these rows, distinct and sorted."""
    mask = hist != 0
    u = np.broadcast_to(users[:, None], hist.shape)[mask]
    return _distinct_sorted(u, hist_ts[mask].astype(np.int64), hist[mask].astype(np.int64))


def _roles(ds):
    s = ds.schema
    user, item = s.first(Role.USER), s.first(Role.ITEM)
    hist = next((f for f in s.by_role(Role.BEHAVIOR)
                 if f.kind == Kind.SEQUENCE and f.group is None and item is not None and f.target == item.name), None)
    ts = None
    if hist is not None:
        ts = next((f for f in s.fields if f.group == hist.name and not f.embed), None)
    return user, item, hist, ts


def behaviour_sequences(ds, count_over: str = "users"):
    """The train-split sequences a sequence graph is counted over: ``users`` (each user's
    sequence once, :func:`user_sequences`) or ``samples`` (every training sample's history)."""
    user, item, hist, ts = _roles(ds)
    if hist is None:
        raise ValueError("schema has no behaviour sequence targeting the item field")
    tr = ds.split("train")
    if count_over == "samples":
        return tr[hist.name]
    if count_over != "users":
        raise ValueError(f"count_over must be 'users' or 'samples', got {count_over!r}")
    v, off, _ = user_sequences(tr[user.name], tr[hist.name], tr[ts.name] if ts is not None else None)
    return v, off


def _n_items(ds) -> int:
    return len(ds.vocabs[ds.schema.first(Role.ITEM).table])


def cooccurrence_from_dataset(ds, window: int = 2, top_k: int | None = 8, count_over: str = "users") -> sp.csr_matrix:
    """:func:`~ctrgraph.graphs.cooccurrence_graph` over the train behaviour sequences."""
    return builders.cooccurrence_graph(behaviour_sequences(ds, count_over), _n_items(ds), window, top_k)


def transitions_from_dataset(ds, directed: bool = False, weighted: bool = False) -> sp.csr_matrix:
    """:func:`~ctrgraph.graphs.transition_graph` over each user's train sequence."""
    return builders.transition_graph(behaviour_sequences(ds, "users"), _n_items(ds), directed, weighted)


def attribute_incidences(ds, side: str = "user") -> dict[str, sp.csr_matrix]:
    """One owner x value incidence per ``user_attr`` (``side='user'``) or ``item_attr`` field."""
    role, attr = (Role.USER, Role.USER_ATTR) if side == "user" else (Role.ITEM, Role.ITEM_ATTR)
    owner = ds.schema.first(role)
    tr = ds.split("train")
    n_owner = len(ds.vocabs[owner.table])
    return {f.name: builders.attribute_incidence(tr[owner.name], tr[f.name], n_owner, len(ds.vocabs[f.table]))
            for f in ds.schema.by_role(attr) if f.encoded}


def user_item_from_dataset(ds, include_histories: bool = False) -> sp.csr_matrix:
    """Y from train positives (label > 0); optionally also every (user, history item) pair."""
    user, item, hist, _ = _roles(ds)
    tr = ds.split("train")
    nu, ni = len(ds.vocabs[user.table]), _n_items(ds)
    y = builders.user_item_graph(tr[user.name], tr[item.name], nu, ni, labels=tr[ds.schema.label])
    if include_histories and hist is not None:
        y = (y + builders.user_item_graph(tr[user.name], tr[hist.name], nu, ni)).tocsr()
        y.data[:] = 1
    return y


def user_knn_from_dataset(ds, k: int = 10, include_histories: bool = True, **kw) -> sp.csr_matrix:
    """DG-ENN Eq. 8 kNN graph with Y = train positives (+ histories) and A = all user-attribute fields."""
    y = user_item_from_dataset(ds, include_histories)
    inc = list(attribute_incidences(ds, "user").values())
    a = builders.mixed_incidence(inc)[0] if inc else None
    return builders.user_knn_graph(y, a, k=k, **kw)


__all__ = ["user_sequences", "behaviour_sequences", "cooccurrence_from_dataset", "transitions_from_dataset",
           "attribute_incidences", "user_item_from_dataset", "user_knn_from_dataset"]
