"""Graph builders: plain arrays in, scipy CSR out (vectorised, no per-row Python).

Node ids are vocabulary ids (0 = padding, never a node with edges; 1 = OOV is kept as an ordinary
node, although train-split data has none). Matrices are square over ``n_items`` / ``n_users`` ids
(including rows 0 and 1), so a row index is directly the embedding-table index.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from ..data.rows import read_chunk
from ._pairs import (
    symmetric_from_pairs,
    top_k_symmetric,
    unique_pairs,
    window_pair_keys,
)
from ._util import (
    Sequences,
    as_ragged,
    count_keys,
    csr_from_pairs,
    csr_from_sorted,
    offset_pairs,
    remaining_in_sequence,
    symmetric_from_upper,
    top_k_rows,
)

#: rows of an ``[N, L]`` input handled at a time (memory-mapped training splits are never read whole,
#: and a chunk is read with a file read, not through the mapping: :func:`ctrgraph.data.rows.read_chunk`)
CHUNK_ROWS = 1 << 18


def _row_chunks(n: int, chunk: int):
    for s in range(0, n, chunk):
        yield slice(s, min(n, s + chunk))


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr()
    m.data[:] = 1
    return m


def _n_nodes(values: np.ndarray, n: int | None) -> int:
    if n is not None:
        if values.size and int(values.max()) >= n:
            raise ValueError(f"id {int(values.max())} out of range for {n} nodes")
        return int(n)
    return int(values.max()) + 1 if values.size else 1


# ----- 1. item co-occurrence (Res-embedding, Algorithm 1) ------------------------------------
def cooccurrence_graph(sequences: Sequences, n_items: int | None = None, window: int = 2,
                       top_k: int | None = 8, dtype=np.float32, chunk_rows: int = CHUNK_ROWS) -> sp.csr_matrix:
    """Item co-occurrence matrix Z of Res-embedding Algorithm 1.

    For each sequence and each position c, every position w with ``|w - c| <= window`` whose item
    differs from the centre item adds 1 to ``Z[g_c, g_w]`` (lines 4-8; ``\\ g_c`` excludes the
    centre *item id*, so Z has no diagonal and repeats of the centre item add nothing). Line 9:
    only the ``top_k`` largest values of each row are kept (``None`` = all); ties are broken by the
    smaller item id, so Z is deterministic and, after pruning, generally asymmetric.

    Which sequences are counted is the caller's choice (research notes 5.2 #1): each user's
    train sequence once (:func:`user_sequences`, the default of :func:`cooccurrence_from_dataset`)
    or every training sample's history (the literal reading: pass the ``[N, L]`` history array).

    Implementation: the pair (a, b) and (b, a) of Algorithm 1 always come together, so each pair
    of positions at distance 1..window gives one unordered key (``window_pair_keys``), sorted once
    and counted; the top-k sorts only a candidate set that provably holds each row's top-k
    (``top_k_symmetric``), and without top-k both directions are laid out by one counting sort.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if not isinstance(sequences, tuple) and np.ndim(sequences) == 2 and len(sequences) > chunk_rows:
        # [N, L] histories (every training sample's, maybe memory-mapped): counts are additive over
        # row chunks; the row-wise top-k is taken once on the summed counts
        if n_items is None:
            raise ValueError("cooccurrence_graph: n_items is needed for chunked [N, L] input")
        total = sp.csr_matrix((n_items, n_items), dtype=dtype)
        for rows in _row_chunks(len(sequences), chunk_rows):
            total = total + cooccurrence_graph(read_chunk(sequences, rows), n_items, window, None, dtype,
                                               chunk_rows=chunk_rows)
        total = total.tocsr()
        total.sort_indices()
        return total if top_k is None else top_k_rows(total, top_k)
    values, offsets, n = _pair_input(sequences, n_items)
    pc = unique_pairs(window_pair_keys(values, offsets, window), head_k=top_k)
    if top_k is None:
        return symmetric_from_pairs(pc.keys, n, pc.expand_counts(dtype), dtype)
    return top_k_symmetric(pc, n, top_k, dtype)


def _pair_input(sequences: Sequences, n_items: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Ragged int32 ids (pair keys hold an id in 32 bits), their offsets and the node count."""
    values, offsets = as_ragged(sequences, dtype=None)
    n = _n_nodes(values, n_items)
    if n > 2**31:
        raise ValueError(f"pair keys hold ids below 2**31, got {n} nodes")
    if values.size and int(values.min()) < 0:
        raise ValueError("ids must be >= 0 (0 = padding)")
    return values.astype(np.int32, copy=False), offsets, n


# ----- 2. item transitions (DG-ENN 4.1.2, vv graph) ------------------------------------------
def transition_graph(sequences: Sequences, n_items: int | None = None, directed: bool = False,
                     weighted: bool = False, self_loops: bool = False, dtype=np.float32) -> sp.csr_matrix:
    """Item-item transition graph of DG-ENN 4.1.2: items interacted consecutively by the same user.

    Pairs ``(s_t, s_{t+1})`` of consecutive items of each (time-ordered) sequence. Default
    (research notes 2.2 #8): undirected and unweighted (``A[a, b] = A[b, a] = 1``). ``weighted``
    gives the number of transitions (undirected: ``C + C^T`` where ``C[a, b]`` counts a -> b),
    ``directed`` keeps ``C`` (row = from, column = to). Consecutive repeats of one item are
    self-transitions; they are dropped unless ``self_loops`` (then undirected weighted diagonals
    count each repeat once).
    """
    if directed or self_loops:
        values, offsets = as_ragged(sequences)
        n = _n_nodes(values, n_items)
        rem = remaining_in_sequence(offsets, values.size)
        a, b = offset_pairs(values, rem, 1)
        del rem
        if not self_loops:
            ne = a != b
            a, b = a[ne], b[ne]
        if directed:
            return csr_from_pairs(a, b, (n, n), weighted, dtype)
        keys = np.minimum(a, b) * n + np.maximum(a, b)
        del a, b
        uk, cnt = count_keys(keys)
        del keys
        lo, hi = np.divmod(uk, n)
        data = cnt.astype(dtype) if weighted else np.ones(uk.size, dtype=dtype)
        off = lo != hi
        m = symmetric_from_upper(lo[off], hi[off], data[off], n)
        if (~off).any():
            m = (m + sp.csr_matrix((data[~off], (lo[~off], lo[~off])), shape=(n, n))).tocsr()
            m.sort_indices()
        return m
    # default and weighted undirected: one key per consecutive pair of distinct items
    values, offsets, n = _pair_input(sequences, n_items)
    keys = window_pair_keys(values, offsets, 1)
    if not weighted:
        return symmetric_from_pairs(unique_pairs(keys, counts=False), n, None, dtype)
    pc = unique_pairs(keys)
    return symmetric_from_pairs(pc.keys, n, pc.expand_counts(dtype), dtype)


# ----- 3. user kNN similarity (DG-ENN Eq. 8) -------------------------------------------------
def binary_incidence(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], dtype=np.float32,
                     chunk_rows: int = CHUNK_ROWS) -> sp.csr_matrix:
    """0/1 CSR with a 1 at every distinct (row, col); entries with col 0 (padding) are dropped.

    ``cols`` may be ``[N]`` or ``[N, L]`` (multi-valued, post-padded) with ``rows`` ``[N]``; a long
    ``[N, L]`` input is read ``chunk_rows`` rows at a time.
    """
    if np.ndim(cols) == 2 and len(cols) > chunk_rows:
        total = sp.csr_matrix(shape, dtype=dtype)
        for r in _row_chunks(len(cols), chunk_rows):
            total = total + binary_incidence(read_chunk(rows, r), read_chunk(cols, r), shape, dtype, chunk_rows)
        return _binary(total)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if cols.ndim == 2:
        rows = np.broadcast_to(rows[:, None], cols.shape)
    rows, cols = rows.ravel(), cols.ravel()
    keep = cols != 0
    return csr_from_pairs(rows[keep], cols[keep], shape, weighted=False, dtype=dtype)


def _split_columns(m: sp.csr_matrix, dense_frac: float, max_dense: int):
    """0/1 matrix -> (dense torch float32 block of its popular columns, CSR of the others)."""
    import torch

    deg = np.bincount(m.indices, minlength=m.shape[1])
    order = np.argsort(-deg, kind="stable")
    head = order[: max_dense][deg[order[: max_dense]] > dense_frac * m.shape[0]]
    is_head = np.zeros(m.shape[1], dtype=bool)
    is_head[head] = True
    csc = m.tocsc()
    dense = torch.from_numpy(csc[:, head].toarray().astype(np.float32)) if head.size else None
    tail = csc[:, ~is_head].tocsr()
    return dense, tail, tail.T.tocsr()


def _inv_sqrt32(n: np.ndarray) -> np.ndarray:
    """``1/sqrt(n)`` rounded to float32, 0 where n = 0 (the cosine of an all-zero row is 0)."""
    out = np.zeros(n.shape, dtype=np.float64)
    out[n > 0] = 1.0 / np.sqrt(n[n > 0].astype(np.float64))
    return out.astype(np.float32)


def user_knn_graph(interactions: sp.spmatrix, attributes: sp.spmatrix | None, k: int = 10,
                   alpha: tuple[float, float] = (0.5, 0.5), weighted: bool = False,
                   chunk_size: int = 512, dense_frac: float = 0.05, max_dense: int = 2048,
                   margin: float = 1e-3, device: str | None = None, dtype=np.float32) -> sp.csr_matrix:
    """User-user kNN graph of DG-ENN Eq. 8, chunked (never a users x users dense matrix).

    ``sim(i, j) = a1 <Y_i, Y_j> / (|Y_i| |Y_j|) + a2 <A_i, A_j> / (|A_i| |A_j|)`` with Y the 0/1
    user x item interaction matrix and A the 0/1 multi-hot user x attribute-value matrix (all
    user-attribute fields side by side, research notes 2.2 #7). Choices the paper leaves open:
    a cosine with an all-zero row is 0; only users with ``sim > 0`` are candidates (a user with
    fewer positive-similarity users gets fewer neighbours); self is excluded; each user keeps its
    ``k`` most similar users, ties broken by the smaller user id; the result is symmetrised as
    ``max(A, A^T)`` (2.2 #6). Edge values are 1 (``weighted=False``, the paper's unweighted
    ``|N_h|`` normalisation) or the similarity.

    Exact arithmetic (so that ties are reproducible): dot products are exact integers and the
    similarity is the float32 value ``a1 * ((dot_y * ry_i) * ry_j) + a2 * ((dot_a * ra_i) * ra_j)``
    with ``r = float32(1 / sqrt(row nnz))``.

    Algorithm: ``chunk_size`` users at a time, an approximate similarity block ``chunk x n_users``
    is one float32 product of the row-scaled features ``[sqrt(a1) r_y Y, sqrt(a2) r_a A]`` (columns
    held by more than ``dense_frac`` of the users, at most ``max_dense``, as a dense matmul; the rest
    as a sparse product, whose cost grows with the squared column degrees). A similarity is exactly
    0 iff its approximation is. Every user with approximate similarity within ``margin`` of the
    row's approximate k-th value is a candidate (float32 error is far below 1e-3 for sims <= 1);
    candidates are re-scored exactly from integer dot products and the exact top-k taken.
    ``device`` (e.g. ``"cuda"``) runs the dense block work (matmul, top-k, candidate mask) there;
    the sparse tail product and the exact re-scoring stay on the host.
    """
    import torch

    y = (sp.csr_matrix(interactions) != 0).astype(np.float32).tocsr()
    n = y.shape[0]
    a = sp.csr_matrix((n, 1), dtype=np.float32) if attributes is None else \
        (sp.csr_matrix(attributes) != 0).astype(np.float32).tocsr()
    if a.shape[0] != n:
        raise ValueError(f"interactions have {n} users, attributes {a.shape[0]}")
    a1, a2 = np.float32(alpha[0]), np.float32(alpha[1])
    ry, ra = _inv_sqrt32(np.diff(y.indptr)), _inv_sqrt32(np.diff(a.indptr))
    feats = sp.hstack([sp.diags(np.sqrt(float(a1)) * ry.astype(np.float64)) @ y,
                       sp.diags(np.sqrt(float(a2)) * ra.astype(np.float64)) @ a], format="csr").astype(np.float32)
    dense, tail, tail_t = _split_columns(feats, dense_frac, max_dense)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dense is not None:
        dense = dense.to(dev)
    out_r, out_c = [], []
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        approx = dense[s:e] @ dense.T if dense is not None else torch.zeros((e - s, n), dtype=torch.float32, device=dev)
        if tail.nnz:
            prod = tail[s:e] @ tail_t
            if prod.nnz:
                approx += torch.from_numpy(prod.toarray()).to(dev)
            del prod
        ar = torch.arange(e - s, device=dev)
        approx[ar, ar + s] = 0.0
        kk = min(k, n)
        thr = torch.topk(approx, kk, dim=1, sorted=True).values[:, kk - 1] - margin
        # >= the smallest normal float32 <=> > 0 here (a positive sim is >= 1e-10 or so): one pass
        thr.clamp_(min=float(np.finfo(np.float32).tiny))
        r, c = torch.nonzero(approx >= thr[:, None], as_tuple=True)
        out_r.append(r.cpu().numpy() + s)
        out_c.append(c.cpu().numpy())
        del approx
    r = np.concatenate(out_r).astype(np.int64)
    c = np.concatenate(out_c).astype(np.int64)
    sim = a1 * ((_pair_dots(y, r, c) * ry[r]) * ry[c]) + a2 * ((_pair_dots(a, r, c) * ra[r]) * ra[c])
    ok = sim > 0
    r, c, sim = r[ok], c[ok], sim[ok]
    order = np.lexsort((c, -sim, r))
    r, c, sim = r[order], c[order], sim[order]
    first = np.searchsorted(r, r)  # r is sorted: index of the row's first candidate
    keep = (np.arange(r.size) - first) < k
    r, c, sim = r[keep], c[keep], sim[keep]
    knn = sp.csr_matrix((sim if weighted else np.ones_like(sim), (r, c)), shape=(n, n), dtype=np.float32)
    sym = knn.maximum(knn.T).tocsr().astype(dtype)
    sym.sort_indices()
    return sym


def _pair_dots(m: sp.csr_matrix, r: np.ndarray, c: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Exact ``<M_r, M_c>`` of 0/1 rows for each pair, as float32 integers (row-wise sparse merge)."""
    out = np.empty(r.size, dtype=np.float32)
    for s in range(0, r.size, chunk):
        e = min(r.size, s + chunk)
        out[s:e] = np.asarray(m[r[s:e]].multiply(m[c[s:e]]).sum(axis=1), dtype=np.float64).ravel()
    return out


# ----- 4. attribute bipartite graphs (DG-ENN 4.1.1) -------------------------------------------
def attribute_incidence(owners: np.ndarray, values: np.ndarray, n_owners: int, n_values: int,
                        dtype=np.float32) -> sp.csr_matrix:
    """Owner x attribute-value incidence of one field (edge (u, a) iff a belongs to u; DG-ENN 4.1.1).

    ``values`` is ``[N]`` or ``[N, L]`` (multi-valued, 0 = padding, each value its own edge). An
    owner appearing in several rows gets the union of its values (research notes 2.2 #5); owners
    without a value have an empty row. The square graph over owners and values is
    :func:`bipartite_adjacency`.
    """
    return binary_incidence(owners, values, (n_owners, n_values), dtype)


def mixed_incidence(incidences: Sequence[sp.spmatrix]) -> tuple[sp.csr_matrix, np.ndarray]:
    """One incidence over all fields (DG-ENN Fig. 4 "no divide-and-conquer" variant).

    Value nodes of different fields stay distinct: columns of field t are shifted by
    ``offsets[t]`` (returned, length ``len(incidences) + 1``).
    """
    sizes = [m.shape[1] for m in incidences]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return sp.hstack([sp.csr_matrix(m) for m in incidences], format="csr"), offsets


def bipartite_adjacency(b: sp.spmatrix) -> sp.csr_matrix:
    """Square symmetric ``[[0, B], [B^T, 0]]`` over ``rows of B`` then ``columns of B``."""
    b = sp.csr_matrix(b)
    out = sp.bmat([[None, b], [b.T, None]], format="csr")
    if out.shape != (sum(b.shape), sum(b.shape)):  # bmat drops all-None sizes for empty B
        out = sp.csr_matrix(out, shape=(sum(b.shape),) * 2)
    out.sort_indices()
    return out


# ----- 5. user-item bipartite (DG-ENN 4.1.2, uv graph) ----------------------------------------
def user_item_graph(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                    labels: np.ndarray | None = None, weighted: bool = False, dtype=np.float32,
                    chunk_rows: int = CHUNK_ROWS) -> sp.csr_matrix:
    """User x item matrix Y of DG-ENN 4.1.2: ``y_uv = 1`` iff (u, v) is a train positive.

    Rows with ``labels > 0`` only (all rows when ``labels`` is None); ``items`` may be ``[N, L]``
    (e.g. histories; read ``chunk_rows`` rows at a time when longer). ``weighted`` counts repeated
    interactions instead of 0/1.
    """
    if np.ndim(items) == 2 and len(items) > chunk_rows:
        total = sp.csr_matrix((n_users, n_items), dtype=dtype)
        for r in _row_chunks(len(items), chunk_rows):
            total = total + user_item_graph(read_chunk(users, r), read_chunk(items, r), n_users, n_items,
                                            None if labels is None else read_chunk(labels, r), weighted, dtype,
                                            chunk_rows)
        return total.tocsr() if weighted else _binary(total)
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if labels is not None:
        pos = np.asarray(labels) > 0
        users, items = users[pos], items[pos]
    if items.ndim == 2:
        users = np.broadcast_to(users[:, None], items.shape)
    users, items = users.ravel(), items.ravel()
    keep = items != 0
    return csr_from_pairs(users[keep], items[keep], (n_users, n_items), weighted, dtype)


def drop_edges(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> sp.csr_matrix:
    """A copy of ``m`` without the entries (rows[i], cols[i]) (absent pairs are ignored).

    For one training step, so that an instance never sees its own target edge (research notes
    2.3 option a). Vectorised: a binary search of the pair keys in the CSR's sorted keys.
    """
    m = sp.csr_matrix(m, copy=True)
    m.sort_indices()
    if m.nnz == 0 or len(rows) == 0:
        return m
    r = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keys = r * m.shape[1] + m.indices
    q = np.asarray(rows, dtype=np.int64) * m.shape[1] + np.asarray(cols, dtype=np.int64)
    pos = np.searchsorted(keys, q)
    hit = pos < keys.size
    hit[hit] = keys[pos[hit]] == q[hit]
    keep = np.ones(m.nnz, dtype=bool)
    keep[pos[hit]] = False
    return csr_from_sorted(r[keep], m.indices[keep].astype(np.int64), m.data[keep], m.shape)
