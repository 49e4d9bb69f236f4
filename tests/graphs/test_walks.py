"""node2vec walks (Grover & Leskovec 2016): every step an edge, p / q change the walk, the second step
matches the exact transition probabilities."""
import numpy as np
import pytest
import scipy.sparse as sp

from ctrgraph.errors import ConfigError
from ctrgraph.graphs import node2vec_walks, walks_to_ragged


def _ring_with_chords(n=12):
    r = np.arange(1, n)
    rows = np.r_[r, np.roll(r, -1), r[::3]]
    cols = np.r_[np.roll(r, -1), r, (r[::3] + 4 - 1) % (n - 1) + 1]
    a = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64)
    a.setdiag(0)
    a.eliminate_zeros()
    return sp.csr_matrix(a)


def test_node2vec_walks_follow_edges_and_pq_changes_the_walk():
    a = _ring_with_chords()
    starts = np.tile(np.arange(1, 12), 300)
    dense = a.toarray() > 0
    back = {}
    for p, q in ((0.1, 1.0), (10.0, 0.1)):
        w = node2vec_walks(a, starts, 8, p=p, q=q, seed=1)
        assert (w[:, 0] == starts).all() and (w > 0).all()
        assert dense[w[:, :-1], w[:, 1:]].all()  # every step is an edge
        back[p] = (w[:, 2:] == w[:, :-2]).mean()
    assert back[0.1] > 0.6 and back[10.0] < 0.1, back


def test_node2vec_second_step_matches_exact_transition():
    a = _ring_with_chords()
    p, q = 0.5, 2.0
    starts = np.full(60000, 1)
    w = node2vec_walks(a, starts, 3, p=p, q=q, seed=2)
    cur = w[0, 1]
    prev_nb = set(a[1].indices)
    nb = a[cur].indices
    alpha = np.array([1 / p if x == 1 else (1.0 if x in prev_nb else 1 / q) for x in nb])  # reference
    exact = alpha * a[cur].data / (alpha * a[cur].data).sum()
    sel = w[w[:, 1] == cur, 2]
    emp = np.array([(sel == x).mean() for x in nb])
    assert np.abs(emp - exact).max() < 0.02, (emp, exact)


def test_node2vec_rejects_bad_pq():
    with pytest.raises(ConfigError, match="p and q"):
        node2vec_walks(_ring_with_chords(), np.array([1]), 3, p=0.0)


def test_walks_to_ragged_drops_dead_ends():
    v, off = walks_to_ragged(np.array([[3, 4, 0], [5, 0, 0]]))
    assert v.tolist() == [3, 4, 5] and off.tolist() == [0, 2, 3]
