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
