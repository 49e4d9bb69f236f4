"""DemiNet's per-sequence heterogeneous graph (Eqs. 1-5) against a brute-force build, and its
edge-dropout views (Eqs. 16-17)."""
import numpy as np
import pytest
import torch

from ctrgraph.graphs.sequence_graph import RELATIONS, sequence_graph, sequence_relations


def _batch(seed=0, b=6, n=9, d=5):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([0, 1, 2, 5, 9, 7])[:b]
    mask = torch.arange(n).unsqueeze(0) < lens.unsqueeze(1)
    h = torch.randn(b, n, d, generator=g)
    h[3, 4] = h[3, 1] * 2.0  # a repeated item (same direction): cos = 1
    return mask, h


def _brute(mask, h, eps, t):
    b, n = mask.shape
    out = np.zeros((b, 4, n, n), dtype=bool)
    for x in range(b):  # reference loops over instances and node pairs
        m = int(mask[x].sum())
        for i in range(m):
            for j in range(m):
                out[x, 0, i, j] = 1 <= i - j <= eps  # r_in: i receives from its eps predecessors
                out[x, 1, i, j] = 1 <= j - i <= eps  # r_out: i receives from its eps successors
                hi, hj = h[x, i].double(), h[x, j].double()
                cos = float(hi @ hj / (hi.norm() * hj.norm()))
                out[x, 2, i, j] = i != j and cos >= t
                out[x, 3, i, j] = i == j
    return out


@pytest.mark.parametrize("eps, t", [(1, 0.7), (3, 0.0), (3, 0.7), (8, -1.0)])
def test_relation_masks_equal_the_brute_force_build(eps, t):
    mask, h = _batch()
    got = sequence_relations(mask, h, eps, t).numpy()
    np.testing.assert_array_equal(got, _brute(mask, h, eps, t))
    assert got[3, 2, 4, 1] and got[3, 2, 1, 4]  # the repeated item's bidirectional similarity edges
    # a subset of relations, in the given order
    sub = sequence_relations(mask, h, eps, t, ("self", "in")).numpy()
    np.testing.assert_array_equal(sub, got[:, [3, 0]])


def test_padding_has_no_edges_and_sim_needs_features():
    mask, h = _batch()
    adj = sequence_relations(mask, h, 3, 0.0)
    pad = ~mask
    assert not adj.any(1)[pad].any() and not adj.any(1).transpose(1, 2)[pad].any()
    with pytest.raises(ValueError, match="features"):
        sequence_relations(mask, None)
    with pytest.raises(ValueError, match="relations"):
        sequence_relations(mask, h, relations=("in", "bogus"))
    g = sequence_graph(mask, h, 2, 0.0, ("in", "out", "sim"))
    rows, cols = g.union_edges()
    bi, pi = mask.nonzero(as_tuple=True)
    union = torch.zeros_like(g.dense()[:, 0])
    union[bi[rows], pi[rows], pi[cols]] = True
    assert torch.equal(union, g.dense().any(1)) and rows.numel() == int(union.sum())  # each pair once


def test_pack_unpack_and_stacked_views():
    mask, h = _batch()
    g = sequence_graph(mask, h, 3, 0.0)
    x = g.pack(h)
    assert x.shape == (int(mask.sum()), h.shape[-1])
    assert torch.equal(g.unpack(x), h * mask.unsqueeze(-1))
    torch.manual_seed(0)
    two = g.stack_views(0.5)
    d, d2 = g.dense(), two.dense()
    assert d2.shape[0] == 2 * d.shape[0] and not torch.equal(d2[:6], d2[6:])
    assert not (d2[:6] & ~d).any() and torch.equal(d2[:6, 3], d[:, 3])


def test_dropout_views_differ_keep_self_loops_and_touch_no_padding():
    mask, h = _batch()
    g = sequence_graph(mask, h, 3, 0.0)
    adj = g.dense()
    torch.manual_seed(0)
    v1, v2 = g.drop(0.6).dense(), g.drop(0.6).dense()
    assert not torch.equal(v1, v2)
    for v in (v1, v2):
        assert not (v & ~adj).any()  # only removes edges
        assert torch.equal(v[:, 3], adj[:, 3])  # every self loop kept
        rest = adj[:, :3].sum().item()
        kept = v[:, :3].sum().item()
        assert 0.25 * rest < kept < 0.55 * rest  # about 40 % of the other edges survive
    assert torch.equal(g.drop(0.0).dense(), adj)
    with pytest.raises(ValueError, match="rate"):
        g.drop(1.0)
    assert RELATIONS == ("in", "out", "sim", "self")


def test_views_inherit_sim_edges_and_csr_equal_to_a_fresh_build():
    """drop / stack_views carry the full graph's similarity edge list filtered (no second scan of the
    [B, L, L] mask): it must equal what the view's own mask gives, and so must its CSR."""
    from ctrgraph.graphs.sequence_graph import SequenceGraph

    mask, h = _batch()
    g = sequence_graph(mask, h, 3, 0.0)
    torch.manual_seed(1)
    for view in (g.drop(0.5), g.stack_views(0.5, 3)):
        fresh = SequenceGraph(view.relations, view.mask, view.band, view.offsets, view.sim)
        for a, b in zip(view._sim_edges(), fresh._sim_edges()):
            assert torch.equal(a, b)
        for a, b in zip(view.sim_csr(), fresh.sim_csr()):
            assert torch.equal(a, b)
    rowptr, col, inst = g.sim_csr()
    assert int(rowptr[-1]) == int(g.sim.sum()) and torch.equal(inst[1:] - inst[:-1], mask.sum(1))


@pytest.mark.parametrize("offsets", [[-3, -2, -1, 0, 1, 2, 3], [0], [2, -5]])
def test_native_banded_sum_equals_the_multiply_add_path(offsets):
    from ctrgraph.graphs import native
    from ctrgraph.graphs.sequence_graph import _BandedSum, banded_sum

    if native.kernel() is None:
        pytest.skip("the native kernel is not built here")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(11, 2, 5, generator=g, dtype=torch.double, requires_grad=True)
    w = torch.randn(len(offsets), 11, 2, 1, generator=g, dtype=torch.double)
    w = (w * (torch.rand(w.shape, generator=g) < 0.7)).requires_grad_()  # zero weights = masked neighbours
    out, ref = banded_sum(x, w, offsets), _BandedSum.apply(x, w, tuple(offsets))
    torch.testing.assert_close(out, ref)
    gout = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad((out * gout).sum(), (x, w)), torch.autograd.grad((ref * gout).sum(), (x, w))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("rel, eps", [("in", 3), ("out", 3), ("out", 1)])
def test_native_band_attention_equals_the_shifted_tensor_path(rel, eps, monkeypatch):
    """Eqs. 6-9 of one banded relation: the fused kernel against the shifted-tensor formulation, values
    and gradients (float64), including nodes without any neighbour."""
    from ctrgraph.graphs import native
    from ctrgraph.graphs.sequence_graph import band_attention

    if native.kernel() is None:
        pytest.skip("the native kernel is not built here")
    mask, h = _batch()
    g = sequence_graph(mask, h, eps, 0.5, ("in", "out", "self"))
    m, offsets = g.band[rel], g.offsets[rel]
    gen = torch.Generator().manual_seed(7)
    n = m.shape[0]
    si, sj, z = (torch.randn(n, 2, generator=gen, dtype=torch.double, requires_grad=True) for _ in range(3))
    alpha, e = band_attention(si, sj, z, m, offsets)
    monkeypatch.setenv("CTRGRAPH_NATIVE", "0")
    ref_alpha, ref_e = band_attention(si, sj, z, m, offsets)
    torch.testing.assert_close(alpha, ref_alpha)
    torch.testing.assert_close(e, ref_e)
    ga, ge = torch.randn_like(alpha), torch.randn_like(e)
    got = torch.autograd.grad((alpha * ga).sum() + (e * ge).sum(), (si, sj, z))
    want = torch.autograd.grad((ref_alpha * ga).sum() + (ref_e * ge).sum(), (si, sj, z))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert (~m.any(1)).any() and alpha.detach()[:, ~m.any(1)].abs().max() == 0
