"""Weighted sum over a sequence, ``s_b = sum_l w_bl v_bl``, with a cheaper backward on CPU.

The forward is the batched matmul every pooling in the library used (``bmm(w [B,1,L], v [B,L,d])``),
so values are unchanged. Autograd's backward of that matmul computes ``dL/dv = w^T g`` as a batched
matmul with an inner dimension of 1 ([B, L, 1] @ [B, 1, d]), which on CPU is slower than the same
outer product written as a broadcast multiply ``w[..., None] * g[:, None, :]`` (measured for
[1024, 50, 16], one thread, in a loop: 0.27 vs 0.17 ms). Each element of that product is one
multiplication either way, so the gradient is bit-identical (tested). ``dL/dw`` keeps autograd's
own matmul (``bmm(g [B,1,d], v^T [B,d,L])``).

:func:`pooled_field` goes one step further for rows straight from
:func:`~ctrgraph.layers.lookup.table_lookup` that feed nothing but the sum: the table's gradient
dT[ids_bl] += w_bl g_b is written by one native kernel in the order of ``index_add_``, each product
rounded before it is added (:func:`ctrgraph.layers.native.pooled_lookup`), so neither the [B, L, d]
product nor its index_add_ pass exist and the gradient is bit-identical (tested). Measured for
[1024, 50] ids into a 1578 x 16 table, one thread: lookup + sum + backward 0.7 vs 2.0 ms.
"""
from __future__ import annotations

import torch

from .lookup import LazyRows, lookup_source
from .native import kernel as native_kernel
from .native import pooled_lookup, pooled_table


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w, v)
        return torch.bmm(w.unsqueeze(1), v).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, v = ctx.saved_tensors
        gw = gv = None
        if ctx.needs_input_grad[0]:
            gw = torch.bmm(grad.unsqueeze(1), v.transpose(1, 2)).squeeze(1)
        if ctx.needs_input_grad[1]:
            gv = w.unsqueeze(-1) * grad.unsqueeze(1)
        return gw, gv


def weighted_sum(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w [B, L], v [B, L, d] -> [B, d] = sum_l w[:, l] v[:, l]; values and gradients equal to
    ``torch.bmm(w.unsqueeze(1), v).squeeze(1)``. Tracing / scripting (export), autocast and
    no-grad calls use that matmul itself."""
    if (not torch.is_grad_enabled() or torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.is_autocast_enabled(v.device.type) or w.dtype != v.dtype
            or not (w.requires_grad or v.requires_grad)):
        return torch.bmm(w.unsqueeze(1), v).squeeze(1)
    return _WeightedSum.apply(w, v)


def pooled_field(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_sum` of rows ``v`` [B, L, d] that the caller uses for nothing else (their
    gradient is this sum's alone): where ``v`` came straight from
    :func:`~ctrgraph.layers.lookup.table_lookup` with [B, L] ids, the table's gradient is written
    directly by the native kernel (the same values and gradients, bit for bit); otherwise
    :func:`weighted_sum`. If ``v`` does feed something else, the gradients stay correct, but the
    table's gradient is then two sums added, not one (the same terms in another order)."""
    src = lookup_source(v)
    if (src is not None and src[1].dim() == 2 and src[1].dtype == torch.int64 and v.device.type == "cpu"
            and w.dtype == v.dtype and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and native_kernel() is not None):
        weight, ids, pad = src
        return pooled_lookup(w, v, weight, ids, pad)
    return weighted_sum(w, v)


def pooled_rows(w: torch.Tensor, v: LazyRows) -> torch.Tensor:
    """:func:`pooled_field` of rows not computed yet: with the native kernel and weights without a
    gradient, the table's rows are gathered by chunks straight into the batched matmul (the same
    values and gradients as ``weighted_sum(w, v.rows())``, bit for bit; no [B, L, d] gather kept);
    otherwise :func:`pooled_field` of ``v.rows()``."""
    if (not w.requires_grad and w.dtype == v.handle.dtype and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and native_kernel() is not None):
        return pooled_table(w, v.handle, v.ids, v.padding_idx, v.sparse)
    return pooled_field(w, v.rows())
