"""Graph toolkit: every builder equals a brute-force per-row reference written from the papers' text."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import ctrgraph.graphs as g

SEEDS = range(12)


# ----- random inputs -------------------------------------------------------------------------
def random_padded(rng: np.random.Generator, n_items: int, n_rows: int | None = None, max_len: int | None = None):
    """Post-padded sequences with empty rows, single-item rows, repeats (small vocab) and padding."""
    n_rows = n_rows or int(rng.integers(1, 12))
    max_len = max_len or int(rng.integers(1, 9))
    lens = rng.integers(0, max_len + 1, n_rows)
    lens[rng.random(n_rows) < 0.2] = 1
    lens[rng.random(n_rows) < 0.15] = 0
    a = np.zeros((n_rows, max_len), dtype=np.int32)
    for i, l in enumerate(lens):
        a[i, :l] = rng.integers(1, n_items, l)
    return a


def rows_of(a: np.ndarray) -> list[list[int]]:
    return [[int(x) for x in r if x != 0] for r in a]


# ----- references, literally ------------------------------------------------------------------
def ref_cooccurrence(seqs: list[list[int]], n: int, delta: int, k: int | None) -> np.ndarray:
    """Res-embedding Algorithm 1 line by line (1-based positions as in the paper)."""
    z = np.zeros((n, n))
    for b in seqs:
        m = len(b)
        for c in range(1, m + 1):
            nl, nr = max(1, c - delta), min(c + delta, m)
            for w in range(nl, nr + 1):
                if b[w - 1] != b[c - 1]:  # {g_Nl .. g_Nr} \ g_c
                    z[b[c - 1], b[w - 1]] += 1
    if k is not None:  # line 9, ties: smaller item id first
        for i in range(n):
            cand = sorted([(-z[i, j], j) for j in range(n) if z[i, j] > 0])
            keep = {j for _, j in cand[:k]}
            for j in range(n):
                if j not in keep:
                    z[i, j] = 0
    return z


def ref_transitions(seqs, n, directed, weighted, self_loops=False):
    c = np.zeros((n, n))
    for s in seqs:
        for t in range(len(s) - 1):
            a, b = s[t], s[t + 1]
            if a == b and not self_loops:
                continue
            if directed:
                c[a, b] += 1
            elif a == b:
                c[a, a] += 1
            else:
                c[a, b] += 1
                c[b, a] += 1
    return c if weighted else (c > 0).astype(float)


def ref_knn(y: np.ndarray, a: np.ndarray, k: int, weighted: bool) -> np.ndarray:
    """DG-ENN Eq. 8 pair by pair, top-k positive, no self, ties by id, A <- max(A, A^T).

    Float32 arithmetic in the documented order: a1 * ((dot * r_i) * r_j) + a2 * (...), r = 1/sqrt(nnz).
    """
    n = y.shape[0]
    f = np.float32
    yb, ab = (y != 0), (a != 0)

    def r(cnt):
        return f(1.0 / math.sqrt(cnt)) if cnt > 0 else f(0)

    knn = np.zeros((n, n))
    for i in range(n):
        cand = []
        for j in range(n):
            if i == j:
                continue
            dy = f(int((yb[i] & yb[j]).sum()))
            da = f(int((ab[i] & ab[j]).sum()))
            sy = f(0.5) * ((dy * r(yb[i].sum())) * r(yb[j].sum()))
            sa = f(0.5) * ((da * r(ab[i].sum())) * r(ab[j].sum()))
            s = f(sy + sa)
            if s > 0:
                cand.append((-float(s), j))
        for ms, j in sorted(cand)[:k]:
            knn[i, j] = -ms if weighted else 1.0
    return np.maximum(knn, knn.T)


# ----- 1. co-occurrence -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_cooccurrence_matches_algorithm_1(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))  # small vocab -> repeats and ties
    a = random_padded(rng, n)
    delta = int(rng.integers(1, 4))
    for k in (None, 1, 2, 3):
        got = g.cooccurrence_graph(a, n, window=delta, top_k=k)
        assert isinstance(got, sp.csr_matrix) and got.has_sorted_indices
        np.testing.assert_array_equal(got.toarray(), ref_cooccurrence(rows_of(a), n, delta, k))
    assert got.diagonal().sum() == 0


@pytest.mark.parametrize("seed", range(4))
def test_cooccurrence_large_counts(seed):
    """Counts up to dozens (exercises the count-level pruning of the top-k) against Algorithm 1."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 12))
    a = random_padded(rng, n, n_rows=60, max_len=25)
    for k in (1, 2, 4):
        got = g.cooccurrence_graph(a, n, window=3, top_k=k)
        np.testing.assert_array_equal(got.toarray(), ref_cooccurrence(rows_of(a), n, 3, k))


@pytest.mark.parametrize("seed", range(6))
def test_top_k_rows_generic(seed):
    """The generic top-k (fallback when ids/counts do not pack into one int64 key; float values)."""
    from ctrgraph.graphs._util import top_k_rows

    rng = np.random.default_rng(seed)
    m = (rng.random((7, 9)) < 0.6) * rng.choice([1.0, 2.0, 3.0, 5.0], (7, 9))
    for k in (1, 2, 3):
        ref = np.zeros_like(m)
        for i in range(7):
            for _, j in sorted((-m[i, j], j) for j in range(9) if m[i, j] != 0)[:k]:
                ref[i, j] = m[i, j]
        np.testing.assert_array_equal(top_k_rows(sp.csr_matrix(m), k).toarray(), ref)
        big = sp.csr_matrix(m)
        big.data = big.data + 0.25  # not integer counts: lexsort path
        np.testing.assert_array_equal(top_k_rows(big, k).toarray(), np.where(ref != 0, ref + 0.25, 0))


def test_cooccurrence_ragged_equals_padded_and_ties():
    rng = np.random.default_rng(0)
    a = random_padded(rng, 6, 20, 7)
    seqs = rows_of(a)
    vals = np.array([x for s in seqs for x in s], dtype=np.int64)
    off = np.r_[0, np.cumsum([len(s) for s in seqs])]
    assert (g.cooccurrence_graph((vals, off), 6, 2, 2) != g.cooccurrence_graph(a, 6, 2, 2)).nnz == 0
    # explicit tie: item 1 co-occurs once with 2, 3, 4 -> top-2 keeps 2 and 3
    z = g.cooccurrence_graph(np.array([[2, 1, 3], [1, 4, 0]]), 5, 1, 2).toarray()
    assert list(np.flatnonzero(z[1])) == [2, 3]


def test_cooccurrence_empty():
    z = g.cooccurrence_graph(np.zeros((3, 4), dtype=np.int32), 5)
    assert z.shape == (5, 5) and z.nnz == 0
    z = g.cooccurrence_graph(np.array([[3]]), 5)
    assert z.nnz == 0


# ----- 2. transitions -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("directed,weighted,self_loops",
                         [(False, False, False), (False, True, False), (True, False, False), (True, True, False),
                          (False, True, True), (True, True, True)])
def test_transitions_match_reference(seed, directed, weighted, self_loops):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    a = random_padded(rng, n)
    got = g.transition_graph(a, n, directed=directed, weighted=weighted, self_loops=self_loops)
    np.testing.assert_array_equal(got.toarray(), ref_transitions(rows_of(a), n, directed, weighted, self_loops))


# ----- 3. user kNN ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_user_knn_matches_eq8(seed, weighted):
    rng = np.random.default_rng(seed)
    nu, ni, na = int(rng.integers(2, 15)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    y = (rng.random((nu, ni)) < 0.3).astype(float)
    at = (rng.random((nu, na)) < 0.3).astype(float)  # users without attributes included
    y[0] = 0  # a user without interactions
    k = int(rng.integers(1, 4))
    ref = ref_knn(y, at, k, weighted)
    for dense_frac in (0.0, 0.3, 2.0):  # all columns dense, popular ones dense, all sparse
        got = g.user_knn_graph(sp.csr_matrix(y), sp.csr_matrix(at), k=k, weighted=weighted,
                               chunk_size=int(rng.integers(1, 5)), dense_frac=dense_frac)
        np.testing.assert_array_equal(got.toarray(), ref)
    assert got.diagonal().sum() == 0
    assert (got != got.T).nnz == 0


def test_user_knn_without_attributes():
    y = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=float))
    got = g.user_knn_graph(y, None, k=1).toarray()
    np.testing.assert_array_equal(got, ref_knn(y.toarray(), np.zeros((3, 1)), 1, False))


# ----- 4. attribute graphs --------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_attribute_incidence_and_mixed(seed):
    rng = np.random.default_rng(seed)
    nu, nv, n = 7, 5, int(rng.integers(1, 20))
    owners = rng.integers(1, nu, n)
    multi = rng.integers(0, nv, (n, 3))  # multi-valued with padding 0 anywhere, repeats
    single = rng.integers(0, 4, n)
    ref = np.zeros((nu, nv))
    for o, vs in zip(owners, multi):
        for v in vs:
            if v != 0:
                ref[o, v] = 1
    b = g.attribute_incidence(owners, multi, nu, nv)
    np.testing.assert_array_equal(b.toarray(), ref)
    b2 = g.attribute_incidence(owners, single, nu, 4)
    mixed, off = g.mixed_incidence([b, b2])
    np.testing.assert_array_equal(off, [0, nv, nv + 4])
    np.testing.assert_array_equal(mixed.toarray(), np.hstack([ref, b2.toarray()]))
    adj = g.bipartite_adjacency(b).toarray()
    assert adj.shape == (nu + nv,) * 2
    np.testing.assert_array_equal(adj[:nu, nu:], ref)
    np.testing.assert_array_equal(adj, adj.T)
    assert adj[:nu, :nu].sum() == 0 and adj[nu:, nu:].sum() == 0


# ----- 5. user-item and edge dropping ---------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_user_item_and_drop(seed):
    rng = np.random.default_rng(seed)
    nu, ni, n = 6, 7, 30
    u, v, lab = rng.integers(1, nu, n), rng.integers(1, ni, n), rng.integers(0, 2, n)
    ref = np.zeros((nu, ni))
    for a, b, l in zip(u, v, lab):
        if l > 0:
            ref[a, b] = 1
    y = g.user_item_graph(u, v, nu, ni, labels=lab)
    np.testing.assert_array_equal(y.toarray(), ref)
    du, dv = rng.integers(0, nu, 5), rng.integers(0, ni, 5)
    ref2 = ref.copy()
    ref2[du, dv] = 0
    np.testing.assert_array_equal(g.drop_edges(y, du, dv).toarray(), ref2)
    np.testing.assert_array_equal(y.toarray(), ref)  # input untouched


# ----- sequences from histories ---------------------------------------------------------------
def test_user_sequences_from_histories():
    users = np.array([2, 2, 3, 2, 4])
    hist = np.array([[5, 0, 0], [5, 6, 0], [7, 0, 0], [6, 8, 9], [0, 0, 0]])
    ts = np.array([[10, 0, 0], [10, 11, 0], [5, 0, 0], [11, 12, 13], [0, 0, 0]])
    v, off, uid = g.user_sequences(users, hist, ts)
    assert uid.tolist() == [2, 3]
    assert [v[off[i]:off[i + 1]].tolist() for i in range(2)] == [[5, 6, 8, 9], [7]]
    v, off, uid = g.user_sequences(users, hist)  # longest history per user
    assert [v[off[i]:off[i + 1]].tolist() for i in range(2)] == [[6, 8, 9], [7]]


# ----- normalizations -------------------------------------------------------------------------
def _rand_adj(rng, n, sym=True):
    a = (rng.random((n, n)) < 0.3) * rng.integers(1, 4, (n, n)).astype(float)
    np.fill_diagonal(a, 0)
    a[0] = 0
    a[:, 0] = 0  # isolated node
    return np.maximum(a, a.T) if sym else a


@pytest.mark.parametrize("seed", range(5))
def test_normalizations(seed):
    rng = np.random.default_rng(seed)
    n = 6
    a = _rand_adj(rng, n, sym=bool(seed % 2))
    d = a.sum(1)
    sym, row, avg, gcn, kipf = (np.zeros((n, n)) for _ in range(5))
    for i in range(n):
        cnt = (a[i] != 0).sum()
        for j in range(n):
            if a[i, j] != 0:
                sym[i, j] = a[i, j] / math.sqrt(d[i] * d[j]) if d[j] > 0 else 0.0  # degree 0 -> factor 0
                row[i, j] = a[i, j] / d[i]
                avg[i, j] = 1 / cnt
                gcn[i, j] = sym[i, j]
        gcn[i, i] = 1 / d[i] if d[i] > 0 else 1.0
    at = a + np.eye(n)
    dt = at.sum(1)
    kipf = at / np.sqrt(np.outer(dt, dt))
    for fn, ref in ((g.sym_norm, sym), (g.row_norm, row), (g.avg_norm, avg), (g.kipf_norm, kipf)):
        np.testing.assert_allclose(fn(sp.csr_matrix(a)).toarray(), ref, rtol=1e-6, atol=1e-7)
    if not seed % 2:
        return
    np.testing.assert_allclose(g.gcn_literal_norm(sp.csr_matrix(a)).toarray(), gcn, rtol=1e-6)
    r, c = np.nonzero(a)
    w = g.sym_norm_edges(torch.tensor(r), torch.tensor(c), n, torch.tensor(a[r, c]))
    np.testing.assert_allclose(w.numpy(), sym[r, c], rtol=1e-6)


# ----- propagation ----------------------------------------------------------------------------
def _dense_layers(adj, x, n_layers, step):
    out, h = [x], x
    for l in range(n_layers):
        h = step(l, adj, h)
        out.append(h)
    return out


@pytest.mark.parametrize("kind", ["lightgcn", "gcn", "ngcf"])
@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_propagators_match_dense_equations(kind, combine):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    n, d, L = 9, 4, 3
    a = _rand_adj(rng, n)
    norm = g.gcn_literal_norm(sp.csr_matrix(a)) if kind == "gcn" else g.sym_norm(sp.csr_matrix(a))
    dense = torch.tensor(norm.toarray(), dtype=torch.float32)
    x = torch.randn(n, d)
    m = g.make_propagator(kind, d, L, combine)
    act = torch.nn.functional.leaky_relu

    def step(l, A, h):
        if kind == "lightgcn":
            return A @ h
        if kind == "gcn":
            return act(A @ h @ m.w[l].weight.T, 0.2)
        agg = A @ h
        return act((h + agg) @ m.w1[l].weight.T + (h * agg) @ m.w2[l].weight.T, 0.2)

    layers = _dense_layers(dense, x, L, step)
    ref = torch.stack(layers).sum(0) / (L + 1 if combine == "mean" else 1)
    adj = g.to_torch_sparse(norm)
    torch.testing.assert_close(m(adj, x), ref, rtol=1e-5, atol=1e-6)
    rows = torch.tensor([3, 0, 3, 8])
    torch.testing.assert_close(m(adj, x, rows), ref[rows], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m(g.to_torch_sparse(norm, "coo"), x, rows), ref[rows], rtol=1e-5, atol=1e-6)
    # gradients: cached-transpose backward (asymmetric A on purpose) equals the dense equations'
    asym = g.row_norm(sp.csr_matrix(a))
    dense_a = torch.tensor(asym.toarray(), dtype=torch.float32)
    wr = torch.randn(rows.numel(), d)
    for rr in (None, rows):
        xr = x.clone().requires_grad_(True)
        out = m(g.to_torch_sparse(asym), xr, rr, adj_t=g.transpose_csr(g.to_torch_sparse(asym)))
        (out * (wr if rr is not None else 1.0)).sum().backward()
        xd = x.clone().requires_grad_(True)
        full = torch.stack(_dense_layers(dense_a, xd, L, step)).sum(0) / (L + 1 if combine == "mean" else 1)
        ((full[rr] * wr) if rr is not None else full).sum().backward()
        torch.testing.assert_close(xr.grad, xd.grad, rtol=1e-4, atol=1e-5)


def test_edge_softmax():
    rows = torch.tensor([0, 0, 2, 2, 2, 4])
    s = torch.randn(6, 2)
    out = g.edge_softmax(rows, s, 5)
    for r in (0, 2, 4):
        m = rows == r
        torch.testing.assert_close(out[m], torch.softmax(s[m], 0))


def test_sampling_exact_below_fanout_and_unbiased():
    rng = np.random.default_rng(3)
    n = 30
    a = _rand_adj(rng, n)
    adj = g.to_torch_sparse(g.sym_norm(sp.csr_matrix(a)))
    x = torch.randn(n, 3)
    seeds = torch.tensor([5, 1, 0, 7])
    full = g.LightGCN(2)(adj, x, seeds)
    blocks = g.sample_blocks(adj, seeds, [n, n])
    torch.testing.assert_close(g.sampled_lightgcn(blocks, x), full, rtol=1e-5, atol=1e-6)
    # fan-out below degrees: one hop is an unbiased estimate of A[seeds] @ x
    gen = torch.Generator().manual_seed(0)
    est = torch.stack([torch.sparse.mm(b.adj, x[b.src]) for b in
                       (g.sample_blocks(adj, seeds, [2], gen)[0] for _ in range(3000))]).mean(0)
    torch.testing.assert_close(est, torch.sparse.mm(g.sparse_rows(adj, seeds), x), rtol=0.1, atol=0.05)
    for b in g.sample_blocks(adj, seeds, [2, 3], gen):
        assert torch.equal(b.src[: b.dst.numel()], b.dst)
        assert (torch.bincount(b.adj.indices()[0], minlength=b.dst.numel()) <= 3).all()


# ----- dataset helpers ------------------------------------------------------------------------
def test_from_dataset_synthetic():
    from ctrgraph.registry import load_dataset

    ds = load_dataset("synthetic", {"n_instances": 3000, "n_users": 200, "n_items": 300, "n_categories": 10,
                                    "max_len": 10}, cache=False)
    z = g.cooccurrence_from_dataset(ds, 2, 8)
    n_items = len(ds.vocabs["item_id"])
    assert z.shape == (n_items, n_items) and z.nnz > 0
    assert np.diff(z.indptr).max() <= 8
    t = g.transitions_from_dataset(ds)
    assert (t != t.T).nnz == 0
    assert set(g.attribute_incidences(ds, "user")) == {"age", "city"}
    assert set(g.attribute_incidences(ds, "item")) == {"category_id", "brand"}
    y = g.user_item_from_dataset(ds)
    tr = ds.split("train")
    assert y.nnz == len({(u, v) for u, v, l in zip(tr["user_id"], tr["item_id"], tr["label"]) if l > 0})
    knn = g.user_knn_from_dataset(ds, k=5)
    assert knn.shape[0] == len(ds.vocabs["user_id"]) and knn.nnz > 0
    # users' sequences: the reconstructed stream contains every history as a contiguous window
    v, off, uid = g.user_sequences(tr["user_id"], tr["hist_item_id"], tr["hist_ts"])
    seq = {int(u): v[off[i]:off[i + 1]].tolist() for i, u in enumerate(uid)}
    for u, h in zip(tr["user_id"][:300], tr["hist_item_id"][:300]):
        h = [int(x) for x in h if x != 0]
        if h:
            s = seq[int(u)]
            assert any(s[j:j + len(h)] == h for j in range(len(s) - len(h) + 1))
    # the literal "every sample's history" reading counts at least as much
    zs = g.cooccurrence_from_dataset(ds, 2, None, count_over="samples")
    zu = g.cooccurrence_from_dataset(ds, 2, None, count_over="users")
    assert zs.sum() >= zu.sum()


# ----- pair-key kernels behind co-occurrence and transitions (issue 4 speed work) -------------
def ragged_of(seqs: list[list[int]]):
    vals = np.array([x for s in seqs for x in s], dtype=np.int32)
    return vals, np.r_[0, np.cumsum([len(s) for s in seqs])].astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_window_pair_keys_brute_force(seed):
    """Every pair of positions at distance 1..window inside one sequence, distinct items only."""
    from ctrgraph.graphs._pairs import key_halves, window_pair_keys

    rng = np.random.default_rng(seed)
    seqs = rows_of(random_padded(rng, 6, 15, 6))
    vals, off = ragged_of(seqs)
    for window in (1, 2, 4, 9):
        keys = window_pair_keys(vals, off, window)
        kept = keys[keys >= 2**32]
        hi, lo = key_halves(kept)
        got = sorted(zip(hi.tolist(), lo.tolist()))
        ref = sorted((max(s[i], s[i + d]), min(s[i], s[i + d])) for s in seqs for d in range(1, window + 1)
                     for i in range(len(s) - d) if s[i] != s[i + d])
        assert got == ref
        assert (keys < 2**32).sum() + kept.size == sum(max(0, vals.size - d) for d in range(1, window + 1))


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 18])
def test_unique_sorted_pairs_across_blocks(monkeypatch, block):
    """Runs of equal keys crossing block boundaries (and whole blocks of one run) count right."""
    import ctrgraph.graphs._pairs as U

    monkeypatch.setattr(U, "_BLOCK", block)
    rng = np.random.default_rng(block)
    for _ in range(60):
        m = int(rng.integers(0, 30))
        keys = (rng.integers(1, 4, m).astype(np.int64) << 32) | rng.integers(0, 3, m)
        keys = np.concatenate([keys, rng.integers(0, 2**32, int(rng.integers(0, 3))),  # dropped pairs
                               np.full(int(rng.integers(0, 12)), (5 << 32) | 1)])  # a long run
        keys.sort()
        valid = keys[keys >= 2**32]
        u, c = np.unique(valid, return_counts=True)
        pc = U.unique_sorted_pairs(keys.copy(), head_k=2)
        np.testing.assert_array_equal(pc.keys, u)
        np.testing.assert_array_equal(pc.expand_counts(), c)
        np.testing.assert_array_equal(pc.multi_index, np.flatnonzero(c > 1))
        major = u >> 32
        np.testing.assert_array_equal(pc.head, [i for i in range(u.size) if i < 2 or major[i] != major[i - 2]])
        np.testing.assert_array_equal(U.unique_sorted_pairs(keys.copy(), counts=False), u)


@pytest.mark.parametrize("seed", range(8))
def test_cooccurrence_many_rows_over_k(seed, monkeypatch):
    """Rows with far more than k neighbours, skewed counts and count-1 ties (the candidate pruning
    of top_k_symmetric: multi-count levels, segment heads, rows that need their upper columns),
    with tiny blocks so runs and segments cross block boundaries."""
    import ctrgraph.graphs._pairs as U

    monkeypatch.setattr(U, "_BLOCK", int(np.random.default_rng(seed).integers(1, 50)))
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(20, 60))
    p = 1.0 / np.arange(1, n) ** 1.1  # zipf-like popularity: a few heavy rows, many light ones
    seqs = [list(rng.choice(np.arange(1, n), size=int(rng.integers(0, 25)), p=p / p.sum())) for _ in range(80)]
    vals, off = ragged_of(seqs)
    for window, k in ((1, 1), (2, 3), (3, 8)):
        got = g.cooccurrence_graph((vals, off), n, window, k)
        assert got.has_sorted_indices
        np.testing.assert_array_equal(got.toarray(), ref_cooccurrence(seqs, n, window, k))


def test_rank_keep_lexsort_path_equals_packed(monkeypatch):
    """The fallback for ids/counts too wide for one int64 key gives the same top-k."""
    import ctrgraph.graphs._pairs as U

    rng = np.random.default_rng(5)
    seqs = rows_of(random_padded(rng, 9, 40, 12))
    packed = g.cooccurrence_graph(np.array([s + [0] * (12 - len(s)) for s in seqs]), 9, 2, 3)
    monkeypatch.setattr(U, "_PACK_BITS", 0)
    generic = g.cooccurrence_graph(np.array([s + [0] * (12 - len(s)) for s in seqs]), 9, 2, 3)
    assert (packed != generic).nnz == 0 and packed.nnz > 0
    np.testing.assert_array_equal(generic.toarray(), ref_cooccurrence(seqs, 9, 2, 3))


@pytest.mark.parametrize("seed", range(4))
def test_symmetric_from_pairs_sorted_and_weighted(seed):
    from ctrgraph.graphs._pairs import symmetric_from_pairs, unique_pairs

    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, 12, 200), rng.integers(1, 12, 200)
    a, b = a[a != b], b[a != b]
    keys = (np.maximum(a, b).astype(np.int64) << 32) | np.minimum(a, b)
    pc = unique_pairs(keys.copy())
    dense = np.zeros((12, 12))
    np.add.at(dense, (a, b), 1)
    dense = dense + dense.T
    w = symmetric_from_pairs(pc.keys, 12, pc.expand_counts())
    u = symmetric_from_pairs(pc.keys, 12)
    assert w.has_sorted_indices and all(np.all(np.diff(w.indices[w.indptr[i]:w.indptr[i + 1]]) > 0) for i in range(12))
    np.testing.assert_array_equal(w.toarray(), dense)
    np.testing.assert_array_equal(u.toarray(), (dense > 0).astype(float))


def test_cooccurrence_top_k_none_is_all_counts():
    rng = np.random.default_rng(3)
    a = random_padded(rng, 7, 30, 10)
    full = g.cooccurrence_graph(a, 7, 2, None)
    np.testing.assert_array_equal(full.toarray(), ref_cooccurrence(rows_of(a), 7, 2, None))
    assert (g.cooccurrence_graph(a, 7, 2, 100) != full).nnz == 0  # k above every degree: nothing pruned
    assert g.cooccurrence_graph(a, 7, 2, 1).nnz < full.nnz


def test_pair_builders_reject_bad_input():
    with pytest.raises(ValueError, match="offsets"):
        g.cooccurrence_graph((np.array([2, 3, 4]), np.array([0, 2])), 5)  # offsets end short of the values
    with pytest.raises(ValueError, match="offsets"):
        g.transition_graph((np.array([2, 3, 4]), np.array([0, 3, 2, 3])), 5)  # decreasing
    with pytest.raises(ValueError, match="integers"):
        g.cooccurrence_graph(np.array([[2.0, 3.0]]), 5)
    with pytest.raises(ValueError, match="out of range"):
        g.transition_graph(np.array([[2, 7]]), 5)
    with pytest.raises(ValueError, match="window"):
        g.cooccurrence_graph(np.array([[2, 3]]), 5, window=-1)
    with pytest.raises(ValueError, match="top_k"):
        g.cooccurrence_graph(np.array([[2, 3]]), 5, top_k=0)
    assert g.cooccurrence_graph(np.array([[2, 3, 4]]), 5, window=0).nnz == 0  # window 0: no pairs


def test_chunked_builders_equal_the_whole_input(tmp_path, monkeypatch):
    """[N, L] inputs read in row chunks (memory-mapped splits) give the graphs of the whole input;
    chunks of a memory-mapped column are read with file reads (``read_chunk``), not through the map."""
    from ctrgraph.data import rows as rows_mod
    from ctrgraph.graphs import builders, from_dataset
    from ctrgraph.graphs.from_dataset import user_sequences

    rng = np.random.default_rng(5)
    n, L, ni, nu = 3000, 7, 60, 90
    hist = rng.integers(1, ni, (n, L))
    hist[np.arange(L)[None, :] >= rng.integers(0, L + 1, n)[:, None]] = 0  # post-padded
    users = np.sort(rng.integers(0, nu, n))
    ts = np.cumsum(rng.integers(0, 3, (n, L)), axis=1) + users[:, None] * 100
    labels = rng.integers(0, 2, n)

    def mapped(name, x):
        np.save(tmp_path / f"{name}.npy", x)
        return np.load(tmp_path / f"{name}.npy", mmap_mode="r")

    m_hist, m_users, m_ts, m_labels = mapped("h", hist), mapped("u", users), mapped("t", ts), mapped("l", labels)
    reads = []

    def spy(a, r):
        reads.append(isinstance(a, np.memmap))
        return rows_mod.read_chunk(a, r)

    monkeypatch.setattr(builders, "read_chunk", spy)
    monkeypatch.setattr(from_dataset, "read_chunk", spy)
    for chunk in (64, 1000):
        for weighted in (False, True):
            a = builders.user_item_graph(users, hist, nu, ni, labels, weighted)
            b = builders.user_item_graph(users, hist, nu, ni, labels, weighted, chunk_rows=chunk)
            c = builders.user_item_graph(m_users, m_hist, nu, ni, m_labels, weighted, chunk_rows=chunk)
            assert (a != b).nnz == 0 and (a != c).nnz == 0
        assert (builders.binary_incidence(users, hist, (nu, ni))
                != builders.binary_incidence(users, hist, (nu, ni), chunk_rows=chunk)).nnz == 0
        assert (builders.binary_incidence(users, hist, (nu, ni))
                != builders.binary_incidence(m_users, m_hist, (nu, ni), chunk_rows=chunk)).nnz == 0
        for k in (None, 3):
            a = builders.cooccurrence_graph(hist, ni, window=2, top_k=k)
            b = builders.cooccurrence_graph(hist, ni, window=2, top_k=k, chunk_rows=chunk)
            c = builders.cooccurrence_graph(m_hist, ni, window=2, top_k=k, chunk_rows=chunk)
            assert (a != b).nnz == 0 and (a != c).nnz == 0, (chunk, k)
        for t, mt in ((None, None), (ts, m_ts)):
            whole, part = user_sequences(users, hist, t), user_sequences(users, hist, t, chunk_rows=chunk)
            mapped_part = user_sequences(m_users, m_hist, mt, chunk_rows=chunk)
            for x, y, z in zip(whole, part, mapped_part):
                np.testing.assert_array_equal(x, y)
                np.testing.assert_array_equal(x, z)
    assert any(reads) and not all(reads)  # mapped chunks went through read_chunk (and in-memory ones too)
    with pytest.raises(ValueError, match="contiguous"):
        rows_mod.read_chunk(m_hist, slice(0, 10, 2))
