"""A linear map of field-pair products, ``z[b, t] = W (h[b, i_t] ⊙ h[b, j_t]) + bias``, without
keeping the [B, T, d] pair tensor.

GraphFM's Eq. 7 (metric MLP, first layer) and Eq. 10 (attention scores) both start with a linear
map of every pair product h_i ⊙ h_j. Formed for the whole batch, the pair tensor ([B, 78, 64] for
12 fields) and its gradients are the largest tensors of a GraphFM step; on CPU their elementwise
products are memory bound and most of the step (measured: 43 ms of a layer's forward + backward at
batch 1024 on one thread, 21 ms with this function; benchmarks in docs/graphfm.md). Here the batch
is processed in chunks that fit in cache (larger with more threads, so each op has work to split): the forward keeps only ``h``; the backward recomputes
each chunk's products. On CUDA the whole batch is one chunk (no loop).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

#: bytes of one chunk's pair tensor on CPU at one intra-op thread (x threads² with more)
CHUNK_BYTES = 1 << 20


def _chunk(h: torch.Tensor, n_pairs: int) -> int:
    if h.device.type != "cpu":
        return max(1, h.shape[0])
    per_row = n_pairs * h.shape[-1] * h.element_size()
    t = torch.get_num_threads()  # measured here: 1 MB best at one thread, 4 MB at two (2 MB was slower)
    return max(1, CHUNK_BYTES * t * t // max(1, per_row))


class _PairLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, iu, ju):
        B, _, d = h.shape
        k = weight.shape[0]
        out = h.new_empty(B, iu.numel(), k)
        c = _chunk(h, iu.numel())
        for s in range(0, B, c):  # chunks of the batch, not rows: each chunk is vectorised
            hc = h[s:s + c]
            z = (hc.index_select(1, iu) * hc.index_select(1, ju)).view(-1, d)
            o = out[s:s + c].view(-1, k)
            if bias is None:
                torch.mm(z, weight.t(), out=o)
            else:
                torch.addmm(bias, z, weight.t(), out=o)
        ctx.save_for_backward(h, weight, iu, ju)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        h, weight, iu, ju = ctx.saved_tensors
        B, _, d = h.shape
        k = weight.shape[0]
        g = g.contiguous()
        gh = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        c = _chunk(h, iu.numel())
        for s in range(0, B, c):
            hc, gc = h[s:s + c], g[s:s + c]
            hi, hj = hc.index_select(1, iu), hc.index_select(1, ju)
            if gw is not None:
                gw.addmm_(gc.view(-1, k).t(), (hi * hj).view(-1, d))
            if gh is not None:
                gz = gc @ weight  # [c, T, d]
                gh[s:s + c].index_add_(1, iu, gz * hj).index_add_(1, ju, gz * hi)
        gb = g.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gh, gw, gb, None, None


def pair_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                iu: torch.Tensor, ju: torch.Tensor) -> torch.Tensor:
    """``[B, n, d]`` states, ``[k, d]`` weight, pair index vectors ``iu``, ``ju`` (length T) ->
    ``[B, T, k]`` = ``F.linear(h[:, iu] * h[:, ju], weight, bias)`` (same values and gradients)."""
    if h.dim() != 3 or weight.dim() != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"pair_linear: h [B, n, d] and weight [k, d] expected, got {tuple(h.shape)}, {tuple(weight.shape)}")
    return _PairLinear.apply(h.contiguous(), weight, bias, iu, ju)
