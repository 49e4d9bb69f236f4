"""EGIN's graph sampling (Algorithms 1-2) equals a brute-force build from the paper's pseudo-code
on hand-made and random padded sequences: windows, sessions, time spans, the category constraint
and padding."""
import numpy as np
import pytest
import torch

from ctrgraph.graphs.search_pairs import (
    query_sessions,
    session_pairs,
    span_pairs,
    window_pairs,
)


def as_set(p):
    return set(zip(p.b.tolist(), p.src.tolist(), p.dst.tolist()))


def brute_window(lengths, w):
    out = set()
    for b, n in enumerate(lengths):
        for j in range(n):  # Algorithm 1: c_k in C[j-w : j+w], both directions, no self pair
            for k in range(max(0, j - w), min(n, j + w + 1)):
                if k != j:
                    out |= {(b, j, k), (b, k, j)}
    return out


def brute_sessions(ts, cats, n, gap):
    sess, s = [], -1
    for m in range(n):
        if m == 0 or ts[m] - ts[m - 1] > gap or cats[m] != cats[m - 1]:
            s += 1
        sess.append(s)
    return sess


def brute_span(qts, qcat, qn, its, icat, inn, span, both):
    out = set()
    for b in range(len(qn)):
        for q in range(qn[b]):  # Algorithm 2: 0 < TIME(i2) - TIME(i1) < T and CAT(i1) ∩ CAT(i2) != ∅
            for i in range(inn[b]):
                dt = its[b][i] - qts[b][q]
                if (abs(dt) if both else dt) > 0 and (abs(dt) if both else dt) < span and qcat[b][q] == icat[b][i]:
                    out.add((b, q, i))
    return out


def padded(rows, L, fill=0):
    x = torch.full((len(rows), L), fill, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    return x


def test_window_pairs_hand_made():
    mask = padded([[1, 1, 1, 1], [1, 1], []], 4).bool()
    got = as_set(window_pairs(mask, 2))
    assert got == brute_window([4, 2, 0], 2)
    assert (0, 0, 2) in got and (0, 0, 3) not in got and (0, 1, 1) not in got and not any(b == 2 for b, *_ in got)


@pytest.mark.parametrize("w", [1, 2, 5])
def test_window_pairs_random(w):
    rng = np.random.default_rng(w)
    lengths = rng.integers(0, 12, 9).tolist()
    mask = torch.arange(12) < torch.tensor(lengths).unsqueeze(1)
    assert as_set(window_pairs(mask, w)) == brute_window(lengths, w)


def test_sessions_cut_by_gap_and_category():
    ts = padded([[0, 10, 100, 105, 106, 300], [5, 6]], 6)
    cats = padded([[3, 3, 3, 4, 4, 4], [2, 2]], 6)
    mask = padded([[1] * 6, [1, 1]], 6).bool()
    s = query_sessions(ts, mask, max_gap=50, cats=cats)
    assert s[0].tolist() == [0, 0, 1, 2, 2, 3]  # gap 90 > 50, category 3 -> 4, gap 194
    assert s[1].tolist() == [0, 0, -1, -1, -1, -1]
    assert as_set(session_pairs(s, mask)) == {(0, 0, 1), (0, 1, 0), (0, 3, 4), (0, 4, 3), (1, 0, 1), (1, 1, 0)}


def test_sessions_random_equal_brute_force():
    rng = np.random.default_rng(0)
    B, M, gap = 7, 10, 30
    n = rng.integers(0, M + 1, B)
    ts = np.cumsum(rng.integers(1, 60, (B, M)), axis=1)
    cats = rng.integers(1, 3, (B, M))
    mask = torch.arange(M) < torch.tensor(n).unsqueeze(1)
    s = query_sessions(torch.tensor(ts), mask, gap, cats=torch.tensor(cats))
    want = set()
    for b in range(B):
        ref = brute_sessions(ts[b], cats[b], n[b], gap)
        assert s[b, : n[b]].tolist() == ref and (s[b, n[b]:] == -1).all()
        want |= {(b, i, j) for i in range(n[b]) for j in range(n[b]) if i != j and ref[i] == ref[j]}
    assert as_set(session_pairs(s, mask)) == want


def test_similarity_threshold_cuts_sessions():
    ts, mask = torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool)
    sim = torch.tensor([[1.0, 0.9, 0.1]])
    assert query_sessions(ts, mask, 10, similarity=sim, min_similarity=0.5)[0].tolist() == [0, 0, 1]


@pytest.mark.parametrize("both", [False, True])
def test_span_pairs_equal_brute_force(both):
    rng = np.random.default_rng(int(both))
    B, M, L, span = 6, 5, 8, 40
    qn, inn = rng.integers(0, M + 1, B), rng.integers(0, L + 1, B)
    qts, its = rng.integers(0, 200, (B, M)), rng.integers(0, 200, (B, L))
    qcat, icat = rng.integers(1, 4, (B, M)), rng.integers(1, 4, (B, L))
    qm = torch.arange(M) < torch.tensor(qn).unsqueeze(1)
    im = torch.arange(L) < torch.tensor(inn).unsqueeze(1)
    got = span_pairs(torch.tensor(qts), qm, torch.tensor(qcat), torch.tensor(its), im, torch.tensor(icat), span,
                     "both" if both else "after")
    assert as_set(got) == brute_span(qts, qcat, qn, its, icat, inn, span, both)


def test_span_pairs_hand_made_and_multi_category():
    q_ts, i_ts = torch.tensor([[100, 0]]), torch.tensor([[90, 101, 139, 140, 120]])
    qm, im = torch.tensor([[True, False]]), torch.ones(1, 5, dtype=torch.bool)
    q_cat = torch.tensor([[[2, 5], [0, 0]]])  # the query's category set {2, 5}
    i_cat = torch.tensor([[2, 5, 2, 2, 7]])
    got = as_set(span_pairs(q_ts, qm, q_cat, i_ts, im, i_cat, 40))
    # 90: before the query; 140: dt = 40 not < T; 120: category 7 not in {2, 5}
    assert got == {(0, 0, 1), (0, 0, 2)}


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="window must be >= 1"):
        window_pairs(torch.ones(1, 3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="do not share one"):
        query_sessions(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool), 5)
    with pytest.raises(ValueError, match="direction"):
        m = torch.ones(1, 2, dtype=torch.bool)
        span_pairs(torch.zeros(1, 2), m, torch.ones(1, 2), torch.zeros(1, 2), m, torch.ones(1, 2), 5, "before")


@pytest.mark.parametrize("w", [1, 3])
def test_undirected_window_and_session_pairs_are_each_edge_once(w):
    rng = np.random.default_rng(10 + w)
    lengths = rng.integers(0, 12, 9).tolist()
    mask = torch.arange(12) < torch.tensor(lengths).unsqueeze(1)
    assert as_set(window_pairs(mask, w, both=False)) == {(b, i, j) for b, i, j in brute_window(lengths, w) if i < j}
    ts = torch.tensor(np.cumsum(rng.integers(1, 60, (9, 12)), axis=1))
    s = query_sessions(ts, mask, 30, cats=torch.tensor(rng.integers(1, 3, (9, 12))))
    both = as_set(session_pairs(s, mask))
    assert as_set(session_pairs(s, mask, both=False)) == {(b, i, j) for b, i, j in both if i < j}
    assert len(both) > 0


@pytest.mark.parametrize("both, scale", [(False, 1), (True, 1), (False, 2**40), (True, 2**40)])
def test_keyed_span_pairs_equal_the_general_path(both, scale):
    """Integer timestamps take the key path (small and 2^40-second ranges);
    float timestamps the general one: the same edges, each once, category 0, equal timestamps and
    padding included."""
    rng = np.random.default_rng(7)
    B, M, L, span = 40, 9, 13, 50.5
    qts = torch.tensor(rng.integers(0, 300, (B, M))) * scale
    its = torch.tensor(rng.integers(0, 300, (B, L))) * scale
    qcat, icat = torch.tensor(rng.integers(0, 4, (B, M))), torch.tensor(rng.integers(0, 4, (B, L)))
    qm = torch.arange(M) < torch.tensor(rng.integers(0, M + 1, B)).unsqueeze(1)
    im = torch.arange(L) < torch.tensor(rng.integers(0, L + 1, B)).unsqueeze(1)
    d = "both" if both else "after"
    got = span_pairs(qts, qm, qcat, its, im, icat, span * scale, d)
    ref = span_pairs(qts.double(), qm, qcat, its.double(), im, icat, span * scale, d)
    assert len(ref) > 20 and len(got) == len(ref)
    assert as_set(got) == as_set(ref)
    from ctrgraph.graphs import native, search_pairs as sp

    keyed = sp._span_pairs_keyed(qts, qm, qcat, its, im, icat, span * scale, d)
    if native.search_graph_kernel() is not None:  # the C++ enumeration: the keyed path's pairs in its order
        fused = sp._span_pairs_native(qts, qm, qcat, its, im, icat, span * scale, d)
        for x, y in ((fused.b, keyed.b), (fused.src, keyed.src), (fused.dst, keyed.dst)):
            assert torch.equal(x, y)


@pytest.mark.parametrize("both", [True, False])
def test_session_pairs_from_runs_equal_the_row_comparison_in_order(both):
    """Sessions numbered as query_sessions does (non-decreasing along a row, also across a padding
    hole) take the run enumeration; arbitrary session ids (not runs) the row comparison: both give
    the brute-force pairs, the first in the row comparison's order (instance, query, partner)."""
    from ctrgraph.graphs import search_pairs as sp

    rng = np.random.default_rng(3)
    B, M = 11, 9
    mask = torch.tensor(rng.random((B, M)) < 0.8)
    mask[0] = False  # a row without queries
    ts = torch.tensor(np.cumsum(rng.integers(1, 60, (B, M)), axis=1))
    s = query_sessions(ts, mask, 40, cats=torch.tensor(rng.integers(1, 3, (B, M))))
    shuffled = torch.where(mask, torch.tensor(rng.integers(0, 3, (B, M))), -1)  # ids that are not runs
    for sess in (s, shuffled):
        want = [(b, i, j) for b in range(B) for i in range(M) for j in range(M)
                if mask[b, i] and mask[b, j] and sess[b, i] == sess[b, j] and (i != j if both else i < j)]
        got = session_pairs(sess, mask, both=both)
        assert list(zip(got.b.tolist(), got.src.tolist(), got.dst.tolist())) == want
    b, i = mask.nonzero(as_tuple=True)
    assert sp._session_runs(b, s[b, i], M) is not None and sp._session_runs(b, shuffled[b, i], M) is None


def test_pair_ids_read_both_ends():
    from ctrgraph.graphs.search_pairs import PairSet

    q, c = torch.arange(12).reshape(3, 4) + 100, torch.arange(15).reshape(3, 5) + 200
    pr = PairSet(torch.tensor([0, 2, 1]), torch.tensor([3, 0, 1]), torch.tensor([4, 2, 0]))
    a, p = pr.ids(q, c)
    assert a.tolist() == [103, 108, 105] and p.tolist() == [204, 212, 205]
    a, p = pr.ids(q.t().contiguous().t(), c)  # a non-contiguous view reads the same ids
    assert a.tolist() == [103, 108, 105]


def _native_or_skip():
    from ctrgraph.graphs import native

    if native.search_graph_kernel() is None:
        pytest.skip("the native kernel cannot be built here")


def _listed(p):
    return list(zip(p.b.tolist(), p.src.tolist(), p.dst.tolist()))


@pytest.mark.parametrize("w, both", [(1, True), (2, False), (3, True), (7, False)])
def test_native_window_pairs_equal_the_pytorch_path_in_order(w, both, monkeypatch):
    _native_or_skip()
    from ctrgraph.graphs import search_pairs as sp

    rng = np.random.default_rng(w)
    for L in (1, 4, 12):  # also windows wider than the sequence
        mask = torch.tensor(rng.random((17, L)) < 0.7)  # holes in the middle too
        got = window_pairs(mask, w, both=both)
        with monkeypatch.context() as mp:
            mp.setattr(sp, "search_graph_kernel", lambda: None)
            want = window_pairs(mask, w, both=both)
        assert _listed(got) == _listed(want)
        assert got.b.dtype == got.src.dtype == got.dst.dtype == torch.long


@pytest.mark.parametrize("both", [True, False])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("with_cats, with_sim", [(True, False), (True, True), (False, False)])
def test_native_query_session_pairs_equal_sessions_then_pairs_in_order(both, dtype, with_cats, with_sim, monkeypatch):
    """The fused q2q enumeration against query_sessions + session_pairs (PyTorch): gaps above and at
    the limit, category changes and category 0, a similarity cut, padding holes and empty rows."""
    _native_or_skip()
    from ctrgraph.graphs import search_pairs as sp

    rng = np.random.default_rng(5)
    B, M = 23, 10
    mask = torch.tensor(rng.random((B, M)) < 0.8)
    mask[0] = False
    ts = torch.tensor(np.cumsum(rng.choice([1, 20, 40, 41], (B, M)), axis=1)).to(dtype)  # gap 40: not a cut
    cats = torch.tensor(rng.integers(0, 3, (B, M))).to(dtype) if with_cats else None
    sim = torch.tensor(rng.random((B, M)), dtype=torch.float32) if with_sim else None
    got = sp.query_session_pairs(ts, mask, 40, cats=cats, similarity=sim, min_similarity=0.2, both=both)
    want = session_pairs(query_sessions(ts, mask, 40, cats=cats, similarity=sim, min_similarity=0.2), mask, both)
    assert len(want) > 10 and _listed(got) == _listed(want)
    assert mask[got.b, got.src].all() and mask[got.b, got.dst].all()  # a hole before the first query: no padded end
    with monkeypatch.context() as mp:
        mp.setattr(sp, "search_graph_kernel", lambda: None)
        assert _listed(sp.query_session_pairs(ts, mask, 40, cats=cats, similarity=sim, min_similarity=0.2,
                                              both=both)) == _listed(want)


@pytest.mark.parametrize("both", [True, False])
def test_native_span_pairs_on_time_ordered_rows_equal_the_keyed_path(both):
    """Histories in time order (the fast path: one interval per query, ties included) and rows out of
    order (sorted first), mixed in one batch: the keyed path's pairs in its order."""
    _native_or_skip()
    from ctrgraph.graphs import search_pairs as sp

    rng = np.random.default_rng(11)
    B, M, L = 60, 8, 15
    qts = torch.tensor(np.sort(rng.integers(0, 400, (B, M)), axis=1))
    its = torch.tensor(np.sort(rng.integers(0, 400, (B, L)), axis=1))
    its[::3] = torch.tensor(rng.integers(0, 400, (len(its[::3]), L)))  # every third row out of order
    its[1, 3:6] = its[1, 3]  # equal times
    qcat, icat = torch.tensor(rng.integers(0, 3, (B, M))), torch.tensor(rng.integers(0, 3, (B, L)), dtype=torch.int32)
    qm = torch.arange(M) < torch.tensor(rng.integers(0, M + 1, B)).unsqueeze(1)
    im = torch.arange(L) < torch.tensor(rng.integers(0, L + 1, B)).unsqueeze(1)
    d = "both" if both else "after"
    fused = sp._span_pairs_native(qts, qm, qcat, its, im, icat, 60.0, d)
    keyed = sp._span_pairs_keyed(qts, qm, qcat, its, im, icat.long(), 60.0, d)
    assert len(keyed) > 50 and _listed(fused) == _listed(keyed)


def test_native_pair_ids_equal_index_select(monkeypatch):
    _native_or_skip()
    from ctrgraph.graphs import search_pairs as sp

    rng = np.random.default_rng(2)
    q, c = torch.tensor(rng.integers(0, 99, (6, 4))), torch.tensor(rng.integers(0, 99, (6, 9)))
    pr = sp.PairSet(torch.tensor(rng.integers(0, 6, 50)), torch.tensor(rng.integers(0, 4, 50)),
                    torch.tensor(rng.integers(0, 9, 50)))
    got = pr.ids(q, c)
    with monkeypatch.context() as mp:
        mp.setattr(sp, "search_graph_kernel", lambda: None)
        want = pr.ids(q, c)
    assert all(torch.equal(x, y) and x.dtype == torch.long for x, y in zip(got, want))
    with pytest.raises(RuntimeError, match="out of range"):
        sp.PairSet(torch.tensor([6]), torch.tensor([0]), torch.tensor([0])).ids(q, c)


def test_native_queue_push_equals_the_pytorch_push(monkeypatch):
    """The same ring, pointer and fill after pushes smaller than, equal to and larger than the queue,
    with padding, wrapping and int32 / int64 ids."""
    _native_or_skip()
    from ctrgraph.layers import negative_queue
    from ctrgraph.layers.negative_queue import IdQueue

    rng = np.random.default_rng(4)
    pushes = [torch.tensor(rng.integers(0, 50, n)).to(dt).reshape(-1, r)
              for n, dt, r in ((6, torch.int64, 2), (0, torch.int64, 1), (13, torch.int32, 1), (40, torch.int64, 4),
                               (7, torch.int32, 7), (13, torch.int64, 1))]
    pushes.append(torch.zeros(5, dtype=torch.int64))  # all padding
    fast, slow = IdQueue(13, 50), IdQueue(13, 50)
    for ids in pushes:
        fast.push(ids)
        with monkeypatch.context() as mp:
            mp.setattr(negative_queue, "search_graph_kernel", lambda: None)
            slow.push(ids)
        for x, y in ((fast.ids, slow.ids), (fast.ptr, slow.ptr), (fast.filled, slow.filled)):
            assert torch.equal(x, y)
