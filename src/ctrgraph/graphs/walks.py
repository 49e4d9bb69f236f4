"""Random walks on item graphs: node2vec's biased second-order walks (Grover & Leskovec 2016),
the corpus of Res-embedding Table 3's "+node2vec" baseline (:mod:`ctrgraph.embeddings.pretrained`).
All walkers move together each step (vectorised); only steps and rejection rounds are loops."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError


def node2vec_walks(adj: sp.csr_matrix, starts: np.ndarray, length: int, p: float = 1.0, q: float = 1.0,
                   seed: int = 0, max_rounds: int = 100) -> np.ndarray:
    """Biased 2nd-order random walks [len(starts), length] (0 after a dead end; node 0 = none).

    Step t >= 2 from (prev, cur): propose a neighbour x of cur with probability ~ w(cur, x), accept
    with alpha / max(alpha), alpha = 1/p if x = prev, 1 if x ~ prev, 1/q otherwise (exact rejection
    sampling of node2vec's transition). All walkers move together each step; rejected walkers
    re-propose (at most ``max_rounds`` rounds, then the last proposal is kept).
    """
    if p <= 0 or q <= 0:
        raise ConfigError(f"node2vec: p and q must be positive, got p={p}, q={q}")
    adj = sp.csr_matrix(adj, dtype=np.float64)
    adj.sum_duplicates()
    adj.sort_indices()
    n = adj.shape[0]
    rng = np.random.default_rng(seed)
    indptr, indices = adj.indptr, adj.indices.astype(np.int64)
    cum = np.cumsum(adj.data)
    deg = np.diff(indptr)
    keys = np.repeat(np.arange(n, dtype=np.int64), deg) * n + indices  # sorted: CSR with sorted indices
    base = np.r_[0.0, cum][indptr[:-1]]
    tot = np.r_[0.0, cum][indptr[1:]] - base

    def propose(cur: np.ndarray) -> np.ndarray:
        u = base[cur] + rng.random(cur.size) * tot[cur]
        pos = np.searchsorted(cum, u, side="right")
        pos = np.clip(pos, indptr[cur], indptr[cur + 1] - 1)
        return indices[pos]

    def adjacent(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        k = a * n + b
        i = np.minimum(np.searchsorted(keys, k), max(keys.size - 1, 0))
        return keys[i] == k if keys.size else np.zeros(a.size, dtype=bool)

    starts = np.asarray(starts, dtype=np.int64)
    walks = np.zeros((starts.size, length), dtype=np.int64)
    walks[:, 0] = starts
    alive = deg[starts] > 0
    amax = max(1.0 / p, 1.0, 1.0 / q)
    for t in range(1, length):  # a loop over walk steps
        rows = np.flatnonzero(alive)
        if rows.size == 0:
            break
        cur = walks[rows, t - 1]
        nxt = propose(cur)
        if t >= 2:
            prev = walks[rows, t - 2]
            todo = np.arange(rows.size)
            for _ in range(max_rounds):  # rejection rounds
                x = nxt[todo]
                a = np.where(x == prev[todo], 1.0 / p, np.where(adjacent(prev[todo], x), 1.0, 1.0 / q))
                rej = rng.random(todo.size) * amax >= a
                todo = todo[rej]
                if todo.size == 0:
                    break
                nxt[todo] = propose(cur[todo])
        walks[rows, t] = nxt
        alive[rows] = deg[nxt] > 0
    return walks


def walks_to_ragged(walks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense walks (0 only after a walk's end) -> (values, offsets)."""
    m = walks != 0
    offsets = np.zeros(walks.shape[0] + 1, dtype=np.int64)
    np.cumsum(m.sum(1), out=offsets[1:])
    return walks[m], offsets
