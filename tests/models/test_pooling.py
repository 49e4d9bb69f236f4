"""weighted_sum: the values and gradients of bmm(w [B,1,L], v [B,L,d]) (bit-identical); and the trainer's
deterministic mode without the NaN fill of new tensors."""
import torch

from ctrgraph.layers.pooling import weighted_sum
from ctrgraph.train.trainer import seed_everything


def _bmm(w, v):
    return torch.bmm(w.unsqueeze(1), v).squeeze(1)


def test_weighted_sum_equals_bmm_values_and_gradients():
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for seed in range(6):
            g = torch.Generator().manual_seed(seed)
            B, L, d = (int(torch.randint(1, n, (1,), generator=g)) for n in (700, 60, 40))
            w0 = torch.randn(B, L, generator=g)
            if seed % 2:  # a 0/1 mask, as the embedded batch's mean pooling
                w0 = (w0 > 0).float()
            v0, up = torch.randn(B, L, d, generator=g), torch.randn(B, d, generator=g)
            for w_grad in (True, False):
                wa, va = w0.clone().requires_grad_(w_grad), v0.clone().requires_grad_()
                wb, vb = w0.clone().requires_grad_(w_grad), v0.clone().requires_grad_()
                ya, yb = _bmm(wa, va), weighted_sum(wb, vb)
                assert torch.equal(ya, yb)
                ya.backward(up)
                yb.backward(up)
                assert torch.equal(va.grad, vb.grad), (threads, seed)
                if w_grad:
                    assert torch.equal(wa.grad, wb.grad), (threads, seed)
    torch.set_num_threads(1)


def test_weighted_sum_falls_back_without_grad():
    w, v = torch.rand(3, 4), torch.rand(3, 4, 2)
    with torch.no_grad():
        assert torch.equal(weighted_sum(w, v), _bmm(w, v))


def test_deterministic_mode_does_not_fill_new_tensors():
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    seed_everything(1, deterministic=True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_pooled_field_writes_the_table_gradient_of_index_add_bit_for_bit():
    """pooled_field over table_lookup rows: the values and the table's gradient of
    weighted_sum(w, table_lookup(T, ids)) exactly (padding row, repeated ids, 1 and 2 threads)."""
    import pytest

    from ctrgraph.layers import native
    from ctrgraph.layers.lookup import lookup_source, table_lookup
    from ctrgraph.layers.pooling import pooled_field

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for seed in range(6):
            g = torch.Generator().manual_seed(seed)
            V, B, L, d = (int(torch.randint(2, n, (1,), generator=g)) for n in (40, 300, 60, 20))
            T0 = torch.randn(V, d, generator=g)
            ids = torch.randint(0, V, (B, L), generator=g)
            w = (ids != 0).float() / 3 if seed % 2 else torch.randn(B, L, generator=g)
            up = torch.randn(B, d, generator=g)
            pad = 0 if seed % 3 else None
            Ta, Tb = T0.clone().requires_grad_(), T0.clone().requires_grad_()
            ya = weighted_sum(w, table_lookup(Ta, ids, pad))
            rows = table_lookup(Tb, ids, pad)
            assert lookup_source(rows) is not None
            yb = pooled_field(w, rows)
            assert torch.equal(ya, yb)
            ya.backward(up)
            yb.backward(up)
            assert torch.equal(Ta.grad, Tb.grad), (threads, seed)
    torch.set_num_threads(1)


def test_pooled_field_gradient_of_the_weights_and_gradcheck():
    import pytest

    from ctrgraph.layers import native
    from ctrgraph.layers.lookup import table_lookup
    from ctrgraph.layers.pooling import pooled_field

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    T = torch.randn(7, 3, dtype=torch.double, requires_grad=True)
    ids = torch.randint(0, 7, (5, 4))
    w = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, T: pooled_field(w, table_lookup(T, ids)), (w, T))
    wa = w.detach().clone().requires_grad_()
    ya = weighted_sum(wa, table_lookup(T, ids, 0))
    yb = pooled_field(w, table_lookup(T, ids, 0))
    up = torch.randn_like(ya)
    ya.backward(up)
    yb.backward(up)
    assert torch.equal(wa.grad, w.grad)


def test_rows_changed_in_place_have_no_lookup_source():
    from ctrgraph.layers.lookup import lookup_source, table_lookup

    T = torch.randn(5, 2, requires_grad=True)
    rows = table_lookup(T, torch.randint(0, 5, (3, 4)))
    assert lookup_source(rows) is not None
    with torch.no_grad():
        rows.mul_(2)
    assert lookup_source(rows) is None
    assert lookup_source(torch.randn(3, 4, 2)) is None


def test_lazy_rows_pooled_without_the_gather_and_read_as_rows():
    """pooled_rows of LazyRows: the values and table gradient of weighted_sum over table_lookup, bit for
    bit (chunks of the batched matmul, several batch sizes); reading the field materialises the rows."""
    import pytest

    from ctrgraph.embeddings.base import _FieldValues
    from ctrgraph.layers import native
    from ctrgraph.layers.lookup import LazyRows, table_lookup
    from ctrgraph.layers.pooling import pooled_rows

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    for seed, (V, B, L) in enumerate([(1578, 1024, 50), (21, 130, 6), (9, 3, 2), (30, 65, 20)]):
        g = torch.Generator().manual_seed(seed)
        T0 = torch.randn(V, 16, generator=g)
        ids = torch.randint(0, V, (B, L), generator=g)
        w = (ids != 0).float()
        up = torch.randn(B, 16, generator=g)
        Ta, Tb, Tc = (T0.clone().requires_grad_() for _ in range(3))
        ya = weighted_sum(w, table_lookup(Ta, ids, 0))
        yb = pooled_rows(w, LazyRows(Tb, ids, 0))
        assert torch.equal(ya, yb)
        ya.backward(up)
        yb.backward(up)
        assert torch.equal(Ta.grad, Tb.grad), seed
        vals = _FieldValues({"f": LazyRows(Tc, ids, 0), "g": T0})
        rows = vals["f"]
        assert isinstance(rows, torch.Tensor) and torch.equal(rows, table_lookup(T0, ids, 0))
        assert vals.read == {"f"}
        assert all(isinstance(v, torch.Tensor) for v in dict(vals).values())
        assert vals.read == {"f", "g"}
