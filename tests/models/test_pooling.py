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
