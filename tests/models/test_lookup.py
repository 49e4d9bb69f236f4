"""table_lookup: the values and gradients of F.embedding (bit-identical), padding row never learns."""
import torch

from ctrgraph.layers.lookup import table_lookup


def test_lookup_equals_f_embedding_values_and_gradients():
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            v, d = int(torch.randint(2, 4000, (1,), generator=g)), int(torch.randint(1, 33, (1,), generator=g))
            ids = torch.randint(0, v, (int(torch.randint(1, 6000, (1,), generator=g)), 3), generator=g)
            w = torch.randn(v, d, generator=g)
            up = torch.randn(*ids.shape, d, generator=g)
            for pad in (None, 0):
                a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
                ya, yb = torch.nn.functional.embedding(ids, a, pad), table_lookup(b, ids, pad)
                assert torch.equal(ya, yb)
                ya.backward(up)
                yb.backward(up)
                assert torch.equal(a.grad, b.grad), (threads, seed, pad)
                if pad == 0:
                    assert not b.grad[0].any()


def test_field_lookups_equal_one_table_lookup_per_field():
    """layers.native.field_lookups (the one-valued fields of a plain provider as one node): values and
    table gradients of table_lookup per field bit for bit, for int32 and int64 ids with many
    repeats, a gradient with strided rows (a column block of a stacked field matrix), a field whose
    output gets no gradient (its table gets none), and 1 and 2 threads."""
    import pytest

    from ctrgraph.layers import native

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            B, d = int(torch.randint(1, 3000, (1,), generator=g)), 16 if seed % 2 else 5
            sizes = [int(torch.randint(2, 50 if seed < 2 else 4000, (1,), generator=g)) for _ in range(4)]
            tables = [torch.randn(v, d, generator=g) for v in sizes]
            ids = [torch.randint(0, v, (B,), generator=g).to(torch.int32 if i % 2 else torch.int64)
                   for i, v in enumerate(sizes)]
            pads = [0, -1, 0, 0]
            up = torch.randn(B, 4, d, generator=g)
            ref = [t.clone().requires_grad_() for t in tables]
            new = [t.clone().requires_grad_() for t in tables]
            a = [table_lookup(w, x.long(), p if p >= 0 else None) for w, x, p in zip(ref, ids, pads)]
            b = native.field_lookups(new, ids, pads)
            for u, v in zip(a, b):
                assert torch.equal(u, v)
            # the last field unused: its table gets no gradient either way
            torch.stack(a[:3], 1).mul(up[:, :3]).sum().backward()
            torch.stack(b[:3], 1).mul(up[:, :3]).sum().backward()
            for r, n in zip(ref[:3], new[:3]):
                assert torch.equal(r.grad, n.grad), (threads, seed)
            assert ref[3].grad is None and new[3].grad is None
            assert not new[0].grad[0].any()
    torch.set_num_threads(before)
