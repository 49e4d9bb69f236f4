"""Softmax over the last dimension for short rows (a dozen fields), with a hand-written backward.

``torch.softmax`` on CPU over a last dimension of 12 ([1024, 2, 12, 12], GraphFM's Eq. 11) took
about 11 ms forward + backward on one thread here; the same computation as plain vectorised ops
with the backward ``y ⊙ (g - <g, y>)`` took about 3 ms (measured on the shared 2-core machine).
Entries of ``-inf`` get weight 0 (a row needs at least one finite entry).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = (x - x.amax(-1, keepdim=True)).exp_()
        y /= y.sum(-1, keepdim=True)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return y * (g - (g * y).sum(-1, keepdim=True))


def softmax_last(x: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(x, dim=-1)`` (same values and gradient), faster for short rows on CPU."""
    if x.device.type != "cpu" or torch.jit.is_tracing():  # (TorchScript export records the plain op)
        return torch.softmax(x, dim=-1)
    return _Softmax.apply(x)
