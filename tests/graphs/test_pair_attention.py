"""pair_attention (length-bucketed masked GAT attention) equals the dense autograd formulation."""
import pytest
import torch

from ctrgraph.graphs.pair_attention import pair_attention


def dense_reference(s_i, s_j, v, mask):
    sc = torch.nn.functional.leaky_relu(s_i[..., :, None] + s_j[..., None, :], 0.2)
    m = mask[:, None]
    return (torch.softmax(sc.masked_fill(~m, -1e9), -1) * m) @ v


def case(seed=0, B=23, P=2, L=9, C=4):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, L + 1, (B,), generator=g)
    lengths[0] = 0  # an empty sequence
    valid = torch.arange(L) < lengths[:, None]
    mask = (torch.rand(B, L, L, generator=g) < 0.4) & valid[:, :, None] & valid[:, None, :]
    mask[1] = False  # a sequence whose rows have no neighbour
    args = [torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True)
            for s in ((B, P, L), (B, P, L), (B, P, L, C))]
    return args, mask, lengths


@pytest.mark.parametrize("budget", [1, 40, 300, 1 << 18])
def test_values_and_gradients_equal_the_dense_reference(budget):
    (si, sj, v), mask, lengths = case()
    out = pair_attention(si, sj, v, mask, lengths, budget=budget)
    ref = dense_reference(si, sj, v, mask)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), (si, sj, v))
    want = torch.autograd.grad((ref * g).sum(), (si, sj, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_rows_without_neighbours_are_zero_and_lengths_default_from_the_mask():
    (si, sj, v), mask, lengths = case(seed=3)
    out = pair_attention(si, sj, v, mask)
    torch.testing.assert_close(out, pair_attention(si, sj, v, mask, lengths))
    empty = ~mask.any(-1)  # [B, L]
    assert out.detach().transpose(1, 2)[empty].abs().max() == 0


def test_shape_mismatch_is_a_clear_error():
    (si, sj, v), mask, _ = case()
    with pytest.raises(ValueError, match="do not agree"):
        pair_attention(si, sj[:, :, :-1], v, mask)


def native_or_skip():
    from ctrgraph.graphs import native

    if native.kernel() is None:
        import shutil

        if shutil.which("g++") or shutil.which("c++"):
            pytest.fail("a C++ compiler is present but the native pair-attention kernel did not build")
        pytest.skip("no C++ compiler: the native kernel is not built here")
    return native


@pytest.mark.parametrize("seed", [0, 5])
def test_native_csr_kernel_equals_the_dense_reference(seed):
    """The fused edge-list kernel: values and gradients of s_i, s_j and v equal the dense formulation,
    rows without neighbours give zeros (float64)."""
    native = native_or_skip()
    from ctrgraph.graphs.sequence_graph import SequenceGraph

    (si, sj, v), mask, lengths = case(seed=seed)
    valid = torch.arange(mask.shape[1]) < lengths[:, None]
    g = SequenceGraph(("sim",), valid, {}, {}, mask)
    rowptr, col, inst = g.sim_csr()
    pk = lambda t: g.pack(t.transpose(1, 2))  # [B, Φ, L, ...] -> [N, Φ, ...]  # noqa: E731
    out = native.csr_pair_attention(pk(si), pk(sj), pk(v), rowptr, col, inst)
    ref = dense_reference(si, sj, v, mask)
    torch.testing.assert_close(out, pk(ref))
    gout = torch.randn_like(out)
    got = torch.autograd.grad((out * gout).sum(), (si, sj, v))
    want = torch.autograd.grad((pk(ref) * gout).sum(), (si, sj, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert int(inst[-1]) == out.shape[0] and int(rowptr[-1]) == int(mask.sum())


def test_native_kernel_passes_gradcheck_and_rejects_bad_shapes():
    native = native_or_skip()
    g = torch.Generator().manual_seed(2)
    N, P, C = 7, 2, 3
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 4, 5, 6, 6])
    cols = torch.tensor([1, 2, 0, 0, 1, 3, 5, 4, 5, 4])
    rowptr = torch.zeros(N + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(torch.bincount(rows, minlength=N), 0)
    inst = torch.tensor([0, 4, 7])
    args = [torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True) for s in ((N, P), (N, P), (N, P, C))]
    assert torch.autograd.gradcheck(lambda a, b, c: native.csr_pair_attention(a, b, c, rowptr, cols, inst), args)
    with pytest.raises(ValueError, match="do not agree"):
        native.csr_pair_attention(args[0], args[1][:-1], args[2], rowptr, cols, inst)


def test_head_scores_native_equals_the_matmul_path(monkeypatch):
    from ctrgraph.graphs import native

    native_or_skip()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(5000, 4 * 6, generator=g, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 6, generator=g, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.double, requires_grad=True)
    out = native.head_scores(x, w, b)
    monkeypatch.setenv("CTRGRAPH_NATIVE", "0")
    ref = native.head_scores(x, w, b)
    want = torch.stack([(torch.nn.functional.leaky_relu(x[:, 6 * k: 6 * k + 6], 0.2) * w[k]).sum(1) + b[k]
                        for k in range(4)], 1)
    torch.testing.assert_close(ref, want)
    torch.testing.assert_close(out, want)
    gout = torch.randn_like(out)
    for a, c in zip(torch.autograd.grad((out * gout).sum(), (x, w, b)), torch.autograd.grad((want * gout).sum(), (x, w, b))):
        torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="does not match"):
        native.head_scores(x[:, :-1], w, b)


def test_native_csr_kernel_with_a_scalar_message():
    """The z path (DemiNet's w_d · h aggregated with the same weights) equals attention over [v ‖ z]."""
    native = native_or_skip()
    from ctrgraph.graphs.sequence_graph import SequenceGraph

    (si, sj, v), mask, lengths = case(seed=11)
    valid = torch.arange(mask.shape[1]) < lengths[:, None]
    g = SequenceGraph(("sim",), valid, {}, {}, mask)
    rowptr, col, inst = g.sim_csr()
    pk = lambda t: g.pack(t.transpose(1, 2))  # noqa: E731
    vz = pk(v)
    z = vz[..., 0].detach().clone().requires_grad_()
    out, oz = native.csr_pair_attention(pk(si), pk(sj), vz[..., 1:], rowptr, col, inst, z=z)
    ref = native.csr_pair_attention(pk(si), pk(sj), torch.cat([z.unsqueeze(-1), vz[..., 1:]], -1), rowptr, col, inst)
    torch.testing.assert_close(torch.cat([oz.unsqueeze(-1), out], -1), ref)
    g1, g2 = torch.randn_like(out), torch.randn_like(oz)
    got = torch.autograd.grad((out * g1).sum() + (oz * g2).sum(), (si, sj, v, z), retain_graph=True)
    want = torch.autograd.grad((torch.cat([g2.unsqueeze(-1), g1], -1) * ref).sum(), (si, sj, v, z))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
