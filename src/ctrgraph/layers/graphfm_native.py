"""GraphFM's layer up to W_a (Eq. 7-12) as one fused CPU kernel (``csrc/graphfm_native.cpp``), with its
autograd Function.

For the paper's configuration (NMF metric, top-m selection, p_ij on the message, softmax over the
selected neighbours) :func:`aggregate` returns x^h_i = h_i ⊙ Σ_j w^h_ij h_j [B, n, H, d], w^h_ij =
alpha^h_ij p_ij: the input of Eq. 12's W^h_a for all heads, in the layout whose per-head product gives
Eq. 13's concatenation directly. Per block of 16 batch rows the kernel forms the n(n+1)/2 pair
products h_i ⊙ h_j once (in L2) and maps them with one GEMM to the metric's hidden layer and the
attention scores; the rest runs per row without [B, n, n] or [B, H, n, d] intermediates: Eq. 7's
sigmoid, Eq. 8-9's top-m (the rank of each candidate: a stable descending sort, ties to the lower
index), Eq. 10's LeakyReLU, Eq. 11's softmax over N_i and the weighted sum (over N_i only: the other
terms are exact zeros). The backward recomputes the sums and the products and writes the gradients of h
and of the four parameters directly. The per-block GEMMs call the BLAS that libtorch carries (``sgemm_`` /
``dgemm_``) directly, without ATen's per-call dispatch and bias copy; Eq. 7's sigmoid and Eq. 11's exps (float32)
take 16 lanes at once. :func:`head_linear` then applies Eq. 12-13's per-head W^h_a (and σ = ReLU, in place) with
one 2-D product per head on strided views, without the permuted copies of an einsum. The PyTorch
path (GraphFMLayer.edges and the einsums) forms P, the mask, the softmax and the aggregates as separate
[B, n, n] / [B, H, n, n] / [B, H, n, d] tensors, each a pass over memory forward and backward.

The values equal the PyTorch path's up to the last bits (other summation orders in the GEMMs, the
metric's second layer and the weighted sums; the kernel's float32 exp, within an ulp or two of libm's):
tests/models/test_graphfm_native.py. Built like
:mod:`ctrgraph.layers.native` (``CTRGRAPH_NATIVE=0``: PyTorch path).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ..graphs.native import build_extension, enabled

_SOURCE = Path(__file__).with_name("csrc") / "graphfm_native.cpp"
CFLAGS = ["-O3", "-fno-math-errno"]


def kernel():
    """The compiled extension, or None where disabled, not buildable, or while tracing / scripting."""
    if not enabled() or torch.jit.is_scripting():
        return None
    return build_extension("ctrgraph_graphfm_native", _SOURCE, "GraphFM", cflags=CFLAGS)


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, wc, bc, w2, b2, m, self_interaction, slope, interaction):
        x, w, P, mask, Z, alpha = kernel().graphfm_forward(h, wc, bc, w2, b2, m, self_interaction, slope, interaction)
        ctx.save_for_backward(h, wc, w2, Z, P, alpha, w)
        ctx.slope, ctx.interaction = slope, interaction
        ctx.mark_non_differentiable(w, P, mask)
        ctx.set_materialize_grads(False)  # no zero-filled [B, n, H, n] / [B, n, n] gradients for w, P, mask
        return x, w, P, mask

    @staticmethod
    @once_differentiable
    def backward(ctx, gx, _gw, _gP, _gmask):
        if gx is None:  # x unused
            return None, None, None, None, None, None, None, None, None
        h, wc, w2, Z, P, alpha, w = ctx.saved_tensors
        gh, gwc, gbc, gw2, gb2 = kernel().graphfm_backward(gx, h, wc, w2, Z, P, alpha, w, ctx.slope, ctx.interaction)
        return gh, gwc, gbc, gw2, gb2, None, None, None, None


class _HeadLinear(torch.autograd.Function):
    """x [B, n, H, d] -> [B, n, H e], head h's block of columns x[:, :, h] W[h] (W [H, d, e]): one 2-D product per
    head on strided views of x, the output and the gradients (no permuted copies, as einsum / bmm make); with
    ``relu`` the ReLU in place on that output (its backward: threshold_backward on the output, as ReLU's)."""

    @staticmethod
    def forward(ctx, x, W, relu):
        B, n, H, d = x.shape
        e = W.shape[-1]
        x = x.contiguous()
        out = x.new_empty(B, n, H * e)
        xv, ov = x.view(B * n, H * d), out.view(B * n, H * e)
        for h in range(H):
            torch.mm(xv[:, h * d:(h + 1) * d], W[h], out=ov[:, h * e:(h + 1) * e])
        if relu:
            out.relu_()
            ctx.save_for_backward(x, W, out)
        else:
            ctx.save_for_backward(x, W)
        ctx.relu = relu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g, *_):
        x, W = ctx.saved_tensors[:2]
        B, n, H, d = x.shape
        e = W.shape[-1]
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, ctx.saved_tensors[2], 0)
        gv, xv = g.contiguous().view(B * n, H * e), x.view(B * n, H * d)
        gx = gW = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x)
            gxv = gx.view(B * n, H * d)
            for h in range(H):
                torch.mm(gv[:, h * e:(h + 1) * e], W[h].t(), out=gxv[:, h * d:(h + 1) * d])
        if ctx.needs_input_grad[1]:
            gW = torch.empty_like(W)
            for h in range(H):
                torch.mm(xv[:, h * d:(h + 1) * d].t(), gv[:, h * e:(h + 1) * e], out=gW[h])
        return gx, gW, None


def head_linear(x: torch.Tensor, W: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Eq. 12-13's per-head W^h_a with the heads side by side: x [B, n, H, d], W [H, d, e] -> [B, n, H e]
    (= einsum("bihd,hde->bihe", x, W).flatten(2)), then ReLU where ``relu`` (σ of Eq. 12)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        out = torch.einsum("bihd,hde->bihe", x, W).flatten(2)
        return torch.relu(out) if relu else out
    return _HeadLinear.apply(x, W, relu)


def applies(n: int, heads: int, d: int) -> bool:
    """Whether the kernel takes these sizes (at most 16 fields, 4 heads, width 512)."""
    return n <= 16 and heads <= 4 and d <= 512


def aggregate(h: torch.Tensor, wc: torch.Tensor, bc: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, m: int,
              self_interaction: bool = True, slope: float = 0.2, interaction: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GraphFM's Eq. 7-12 up to W_a. h [B, n, d]; wc [q + H, d] = W1 of Eq. 7 stacked on the scores a_h
    of Eq. 10, bc [q + H] = b1 ‖ score bias; w2 [q], b2 [1] = W2, b2 of Eq. 7; ``m`` neighbours per row
    (Eq. 8); ``slope`` of Eq. 10's LeakyReLU (0: ReLU). Returns
    (x [B, n, H, d] = h_i ⊙ Σ_j w^h_ij h_j (``interaction``; else Σ_j w^h_ij h_j, ablation -I),
    w [B, n, H, n] = alpha^h_ij P_ij on N_i and 0 elsewhere, P [B, n, n] (Eq. 7), mask [B, n, n] (N_i));
    only ``x`` carries gradients. Needs :func:`kernel` and :func:`applies`."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (h, wc, bc, w2, b2)):
        x, w, P, mask, _, _ = kernel().graphfm_forward(h, wc, bc, w2, b2, m, self_interaction, slope, interaction)
        return x, w, P, mask
    return _Layer.apply(h, wc, bc, w2, b2, m, self_interaction, slope, interaction)
