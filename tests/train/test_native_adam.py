"""ctrgraph.train.optim.Adam (the native float32 CPU step): parameters and state bit-identical to
torch.optim.Adam's single-tensor step, torch's step for every other case."""
from __future__ import annotations

import copy

import pytest
import torch

from ctrgraph.layers import native
from ctrgraph.train.optim import Adam

SHAPES = [(192, 192), (192,), (945, 16), (3,), (1,), (70001,), (5, 7)]


def _train(cls, opts: dict, skip: bool, dtype=torch.float32, steps: int = 12):
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]
    opt = cls(ps, **opts)
    for i in range(steps):
        for j, p in enumerate(ps):  # gradients over 9 decades; one parameter without a gradient now and then
            p.grad = None if skip and j == 3 and i % 3 == 0 else \
                torch.randn(p.shape, generator=g, dtype=dtype) * 10.0 ** (i % 9 - 6)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts,skip", [({"lr": 1e-3}, False),
                                       ({"lr": 3e-2, "betas": (0.3, 0.99), "eps": 1e-6}, True),  # lerp's other branch
                                       ({"lr": 1e-4, "betas": (0.5, 0.9)}, True),
                                       ({"lr": 1e-3, "weight_decay": 0.1}, False),  # torch's step
                                       ({"lr": 1e-3, "amsgrad": True}, False)])
def test_native_adam_is_bit_identical_to_torch_adam(threads, opts, skip):
    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref, ro = _train(torch.optim.Adam, opts, skip)
        new, no = _train(Adam, opts, skip)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(ref, new):
        assert torch.equal(a, b)
        for k in ro.state[a]:
            assert torch.equal(ro.state[a][k], no.state[b][k])


def test_native_adam_falls_back_for_double_and_keeps_hooks_and_state_dict():
    ref, _ = _train(torch.optim.Adam, {"lr": 1e-2}, False, torch.float64, 4)
    new, opt = _train(Adam, {"lr": 1e-2}, False, torch.float64, 4)
    assert all(torch.equal(a, b) for a, b in zip(ref, new))
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    opt.step()
    assert calls == ["pre", "post"]
    p32, o32 = _train(Adam, {"lr": 1e-2}, False, steps=3)
    twin = Adam([p.detach().clone().requires_grad_() for p in p32], lr=1e-2)
    twin.load_state_dict(copy.deepcopy(o32.state_dict()))  # load_state_dict keeps the tensors it is given
    for a, b in zip(p32, twin.param_groups[0]["params"]):
        a.grad = b.grad = torch.full_like(a, 0.5)
    o32.step()
    twin.step()
    assert all(torch.equal(a, b) for a, b in zip(p32, twin.param_groups[0]["params"]))
