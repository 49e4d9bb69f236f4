"""DG-ENN's sampled edge parts (``edge_parts``, not the paper's; docs/dg-enn.md "Sampled edge parts"):
the parts against a brute-force split, the sampled stage against its dense formula, unbiasedness over
every draw, K = 1 equal to the exact stage bit for bit, and the provider's switch."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from support_dg import _train_batch, tiny_raw

from ctrgraph.data.encode import encode
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.graphs.dg import DropGraph, edge_part_of
from ctrgraph.registry import build_provider


def _native_or_skip():
    from ctrgraph.graphs import native

    if native.spmm_kernel() is None:
        pytest.skip("native sparse-product kernel not available")


def _graph(n=40, density=0.15, seed=3):
    """A random symmetric graph (edge counts 1-2, nodes 0-2 isolated), its DropGraph (LightGCN's literal
    norm) and an operator that drops 8 random pairs (repeats possible)."""
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=density, random_state=seed + 1, data_rvs=lambda k: rng.integers(1, 3, k)).toarray()
    a = np.triu(a, 1)
    a[:3] = 0
    a[:, :3] = 0
    a = sp.csr_matrix(a + a.T)
    g = DropGraph(a, "sym", 0.0)
    up = sp.triu(a, 1).tocoo()
    pick = rng.integers(0, up.nnz, 8)
    op = g.operator(g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick])))
    assert op.dead_rows is not None and op.dead_rows.numel() and not op.has_diag
    return g, op


def _entries(crow, col):
    crow, col = crow.numpy(), col.numpy()
    return [(r, int(c)) for r in range(crow.size - 1) for c in col[crow[r]:crow[r + 1]]]


def test_edge_parts_split_the_structure_into_disjoint_symmetric_parts():
    g, _ = _graph()
    full = _entries(g.a01.crow_indices(), g.a01.col_indices())
    for k in (1, 2, 3, 5):
        parts = g.edge_parts(k)
        assert len(parts) == k and g.edge_parts(k) is parts  # cached
        seen = []
        for p, (crow, col) in enumerate(parts):
            assert crow.dtype == col.dtype == g.a01.crow_indices().dtype
            ent = _entries(crow, col)
            assert set(ent) == {(c, r) for r, c in ent}  # symmetric
            for r, c in ent:  # each pair in the part its hash names
                assert edge_part_of(np.array([r]), np.array([c]), g.n, k)[0] == p
            seen += ent
        assert sorted(seen) == sorted(full) and len(seen) == len(full)  # disjoint, every entry once
        # each row's entries keep a01's order
        merged = sorted(seen, key=lambda e: (e[0], full.index(e)))
        assert merged == full


def _dense_stage(g, op, sop, choice, k, x, layers):
    """Eq. 13 of LightGCN on part choice[l] at layer l: h_(l+1) = S' (A_p minus the dropped pairs) S' h_l
    with S' = sqrt(k) S (the sampled operator's scales, ``sop.s``), the mean of h_0 .. h_L, float64, from
    dense matrices."""
    torch.testing.assert_close(sop.s.double(), op.s.double() * k ** 0.5)
    s = sop.s.double()
    dead = set(zip(op.dead_rows.tolist(), op.dead_cols.tolist()))
    hs = [x]
    for p in choice:
        crow, col = g.edge_parts(k)[p]
        a = torch.zeros(g.n, g.n, dtype=torch.float64)
        for r, c in _entries(crow, col):
            if (r, c) not in dead:
                a[r, c] = 1.0
        hs.append((s[:, None] * a * s[None, :]) @ hs[-1])
    return torch.stack(hs).mean(0)


def test_sampled_stage_equals_its_dense_formula_values_and_gradients():
    from ctrgraph.graphs import lightgcn_layers

    _native_or_skip()
    g, op = _graph()
    k, layers = 3, 2
    for choice in ([0, 2], [1, 1]):
        sop = g.sampled_operator(op, choice, k)
        x = torch.randn(g.n, 4, dtype=torch.float64, requires_grad=True)
        y = lightgcn_layers(sop, x, layers, "mean")
        xd = x.detach().clone().requires_grad_()
        ref = _dense_stage(g, op, sop, choice, k, xd, layers)
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
        w = torch.randn(g.n, 4, dtype=torch.float64)
        (y * w).sum().backward()
        (ref * w).sum().backward()
        torch.testing.assert_close(x.grad, xd.grad, rtol=1e-10, atol=1e-12)
        assert torch.autograd.gradcheck(lambda t: lightgcn_layers(sop, t, layers, "mean"), (x.detach().requires_grad_(),))


def test_sampled_stage_is_unbiased_over_every_draw():
    """The mean over all K^L equally likely draws of the sampled stage is the exact stage (values and
    gradients), with the step's drops; one draw alone is not (K = 4: the scales times 2, exact in floats)."""
    from ctrgraph.graphs import lightgcn_layers

    _native_or_skip()
    g, op = _graph(n=36, seed=7)
    k, layers = 4, 2
    x = torch.randn(g.n, 4, dtype=torch.float64)
    w = torch.randn(g.n, 4, dtype=torch.float64)

    def run(o):
        t = x.clone().requires_grad_()
        y = lightgcn_layers(o, t, layers, "mean")
        (y * w).sum().backward()
        return y.detach(), t.grad

    exact_y, exact_g = run(op)
    draws = [run(g.sampled_operator(op, list(c), k)) for c in itertools.product(range(k), repeat=layers)]
    torch.testing.assert_close(torch.stack([d[0] for d in draws]).mean(0), exact_y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.stack([d[1] for d in draws]).mean(0), exact_g, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(draws[0][0], exact_y)


def test_one_part_is_the_exact_stage_bit_for_bit():
    from ctrgraph.graphs import lightgcn_layers

    _native_or_skip()
    g, op = _graph(n=60, seed=9)
    for layers in (1, 2, 3):
        x0, w = torch.randn(g.n, 16), torch.randn(g.n, 16)
        outs = []
        for o in (op, g.sampled_operator(op, [0] * layers, 1)):
            x = x0.clone().requires_grad_()
            y = lightgcn_layers(o, x, layers, "mean")
            y.backward(w)
            outs.append((y.detach(), x.grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    with pytest.raises(ValueError, match="edge parts"):
        lightgcn_layers(g.sampled_operator(op, [0, 0], 1), x0, 3, "mean")
    with pytest.raises(RuntimeError, match="fused LightGCN stage"):
        g.sampled_operator(op, [0], 1).mm(x0)


@pytest.fixture(scope="module")
def tiny():
    return encode(tiny_raw())


def _provider(ds, **kw):
    torch.manual_seed(0)
    p = build_provider("dg", FeatureSpec(ds.schema, ds.vocab_sizes), 4, init_std=0.5, **kw)
    p.prepare(ds)
    return p


def test_provider_samples_training_steps_only(tiny):
    _native_or_skip()
    batch = _train_batch(tiny, np.arange(64))
    exact, sampled = _provider(tiny), _provider(tiny, edge_parts=4)
    sampled.load_state_dict(exact.state_dict())
    exact.train()
    sampled.train()
    torch.manual_seed(1)
    a = exact(batch)
    b = sampled(batch)
    assert any(not torch.allclose(a[f], b[f]) for f in ("user_id", "item_id"))  # the switch changes a step
    (b["user_id"].sum() + b["item_id"].sum()).backward()  # gradients flow through the sampled stages
    assert sampled.tables["user_id"].weight.grad.abs().sum() > 0
    exact.eval()
    sampled.eval()
    with torch.no_grad():
        ea, eb = exact(batch), sampled(batch)
    for f in ("user_id", "item_id", "hist_item_id"):
        assert torch.equal(ea[f], eb[f])  # evaluation uses every edge


def test_edge_parts_bad_values_are_clear_errors(tiny):
    for kw in ({"edge_parts": 0}, {"edge_parts": 2.5}, {"edge_parts": True}):
        with pytest.raises(ConfigError, match="edge_parts must be an integer"):
            _provider(tiny, **kw)
    for kw in ({"aggregator": "gcn"}, {"fanouts": "2,2"}):
        with pytest.raises(ConfigError, match="edge_parts > 1"):
            _provider(tiny, edge_parts=2, **kw)
