"""Fused CPU kernels of the layers (``csrc/layers_native.cpp``), with their autograd Functions.

- :func:`pooled_lookup`: a weighted sum over rows looked up from a table, s_b = sum_l w_bl T[ids_bl],
  whose backward writes the table gradient directly (dT[ids_bl] += w_bl g_b in index_add_'s order:
  bit-identical to autograd's w[..., None] * g[:, None, :] then index_add_, without the [B, L, d]
  product). The forward is the same batched matmul as :func:`~ctrgraph.layers.pooling.weighted_sum`.
- :func:`small_attention`: softmax(scale Q K^T) V per row and head for a few fields (AutoInt's
  interacting layer) from the fused projection [B, F, 3 H dh], output [B, F, H dh]. On CPU at F = 12,
  2 heads of 8, B 1024, one thread: 3.6 vs 8.9 ms forward + backward against
  ``scaled_dot_product_attention``'s flash kernel, whose per-call overhead dominates at these sizes;
  vectorised over the query rows since (the softmax's max and sum lane-wise, no horizontal
  reduction): 1.6 vs 3.2 ms, bit-identical to the row-wise version (ninth session, loaded machine).
  Its values differ from that kernel's in the last bits (another exp, another summation order), and
  AutoInt's training amplifies them (ml100k-ctr, 2 epochs, seed 1, d' = 32: test logloss 0.51676 ->
  0.51770; one thread -> two on SDPA alone: 0.51676 -> 0.51666): see docs/zoo-attention.md.

- :func:`cross_v2`: DCN-V2's full-rank cross network x_{l+1} = x0 * (W_l x_l + b_l) + x_l as one
  Function: torch's addmm / mm / sum for the matrix products and the bias sums, one native pass per
  layer for the elementwise rest (forward: x0 * h + x; backward: the output's gradient, the
  gradient of h and the running sum of x0's gradient). Its values and gradients are the plain
  modules' bit for bit: x0's gradient terms are summed in autograd's order for that graph (another
  branch's gradient on x0, passed back through the second output, first).
- :func:`field_lookups`: the one-valued fields' table lookups of a plain provider as one Function
  (native gathers from the int32 / int64 ids as they come, the table gradients as ``_Lookup``'s
  index_add_ in batch order), instead of one lookup, one int64 conversion and one autograd node per
  field; the same values and gradients bit for bit.
- :func:`pair_attention`: AFM's attention over the pairwise interactions (``PairwiseAttention``) as
  one Function: the pair products, the ReLU's backward and the gradient of E (the two index_selects'
  index_add_ sums, in their order) in native passes, the matmuls, softmax and bmm torch's own calls
  with the operands autograd passes them; the plain modules' values and gradients bit for bit.
- :func:`augru_last`: DIEN's AUGRU recurrence (the last state) as one Function: torch's mm,
  sigmoid, tanh (and in the backward mm, sum, tanh_backward, sigmoid_backward) called from one
  native loop over the steps, the arithmetic between them fused; values and gradients those of
  :func:`ctrgraph.layers.recurrent._attentional_loop` bit for bit (the gradients of h and of U summed
  in autograd's order for that loop).

The extension is compiled on first use like :mod:`ctrgraph.graphs.native` (same switch,
``CTRGRAPH_NATIVE=0``); where it cannot be built, :func:`kernel` returns None and callers keep their
PyTorch path. CUDA tensors, tracing and scripting always take the PyTorch path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..graphs.native import build_extension, enabled

_SOURCE = Path(__file__).with_name("csrc") / "layers_native.cpp"
# no reassociation and no contraction to fused multiply-add: pooled_lookup_backward must round each
# product before adding it, as index_add_ of the materialised products does
CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]


def kernel():
    """The compiled extension, or None where it is disabled, cannot be built, or a model is being
    traced / scripted for export."""
    if not enabled() or torch.jit.is_scripting():
        return None
    return build_extension("ctrgraph_layers_native", _SOURCE, "layer", cflags=CFLAGS)


class _PooledLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, rows, weight, ids, padding_idx):
        ctx.save_for_backward(w, rows, ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return torch.bmm(w.unsqueeze(1), rows).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        w, rows, ids = ctx.saved_tensors
        gw = gt = None
        if ctx.needs_input_grad[0]:
            gw = torch.bmm(g.unsqueeze(1), rows.transpose(1, 2)).squeeze(1)
        if ctx.needs_input_grad[2]:
            gt = kernel().pooled_lookup_backward(g, ids, w, ctx.rows, ctx.padding_idx)
        return gw, None, gt, None, None


def pooled_lookup(w: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor,
                  padding_idx: int) -> torch.Tensor:
    """sum_l w[:, l] rows[:, l] for rows = weight[ids] [B, L, d] (the lookup's output, computed by the
    caller), with the gradient going to ``weight`` (and ``w``) directly, not through ``rows``. A
    ``padding_idx`` >= 0 keeps that row's gradient at zero. Needs :func:`kernel`."""
    return _PooledLookup.apply(w, rows.detach(), weight, ids, padding_idx)


class _PooledTable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, weight, ids, padding_idx, sparse=False):
        ctx.save_for_backward(w, ids)
        ctx.shape, ctx.padding_idx, ctx.sparse = weight.shape, padding_idx, sparse
        return kernel().pooled_lookup_forward(weight, ids, w, 64)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        w, ids = ctx.saved_tensors
        if not ctx.sparse:
            return None, kernel().pooled_lookup_backward(g, ids, w, ctx.shape[0], ctx.padding_idx), None, None, None
        # row-sparse: the same kernel over the batch's distinct rows (ids renumbered 0..k-1), whose
        # [k, d] result is the sparse gradient's values (each row's terms summed in the same order)
        from .lookup import unique_rows

        uniq, inv = unique_rows(ids.reshape(-1), ctx.shape[0])
        pad = -1
        if ctx.padding_idx >= 0:
            at = int(torch.searchsorted(uniq, ctx.padding_idx))
            pad = at if at < uniq.numel() and int(uniq[at]) == ctx.padding_idx else -1
        vals = kernel().pooled_lookup_backward(g, inv.view(ids.shape), w, uniq.numel(), pad)
        if pad >= 0:
            uniq, vals = torch.cat([uniq[:pad], uniq[pad + 1:]]), torch.cat([vals[:pad], vals[pad + 1:]])
        gt = torch.sparse_coo_tensor(uniq.unsqueeze(0), vals, ctx.shape, is_coalesced=True, check_invariants=False)
        return None, gt, None, None, None


def pooled_table(w: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int,
                 sparse: bool = False) -> torch.Tensor:
    """sum_l w[:, l] weight[ids[:, l]] [B, d] for weights ``w`` [B, L] without a gradient: the values
    of ``bmm(w, weight[ids])`` (bmm by chunks of 64 rows gathered into one reused buffer), the table's
    gradient as :func:`pooled_lookup`'s; with ``sparse`` that gradient as a coalesced row-sparse COO
    tensor over the rows ``ids`` uses (``embedding.sparse``), the padding row left out. Needs
    :func:`kernel`."""
    return _PooledTable.apply(w, weight, ids, padding_idx, sparse)


class _CrossV2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x0, *wb):
        k = kernel()
        Ws = wb[0::2]
        xs, hs, x = [], [], x0
        for W, b in zip(Ws, wb[1::2]):
            h = torch.addmm(b, x, W.t())  # F.linear's own call for a 2-d input
            xs.append(x)
            hs.append(h)
            x = k.cross_layer_forward(x0, h, x)
        ctx.save_for_backward(x0, *Ws, *xs[1:], *hs)
        ctx.bias_shapes = [b.shape for b in wb[1::2]]
        ctx.set_materialize_grads(False)
        return x, x0.view_as(x0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, gtap):
        k = kernel()
        L = len(ctx.bias_shapes)
        x0, Ws, xs, hs = ctx.saved_tensors[0], ctx.saved_tensors[1:L + 1], ctx.saved_tensors[L + 1:2 * L], \
            ctx.saved_tensors[2 * L:]
        xs = (x0, *xs)
        g, gh, acc = None, torch.empty_like(x0), torch.empty_like(x0)
        # the output's gradient read in place where its rows are contiguous (the column block of the
        # model's concatenation that CatBackward hands over), not copied
        if gout is None:
            gp = torch.zeros_like(x0)
        elif gout.stride(1) == 1 and gout.stride(0) >= gout.shape[1]:
            gp = gout
        else:
            gp = gout.contiguous()
        gx, acc_in = None, None if gtap is None else gtap.contiguous()
        grads: list[torch.Tensor | None] = [None] * (2 * L)
        for l in reversed(range(L)):
            # g = gp + gx, written only where a next layer reads it: with no gx it is gp itself
            if gx is not None and l > 0 and g is None:
                g = torch.empty_like(x0)
            k.cross_layer_backward(gp, gx, g if gx is not None and l > 0 else None, hs[l], x0, gh, acc_in, acc,
                                   l == 0)
            if gx is not None and l > 0:
                gp = g
            acc_in = acc
            grads[2 * l] = gh.t().mm(xs[l])  # addmm's backward for a transposed weight, W's gradient
            grads[2 * l + 1] = gh.sum_to_size(ctx.bias_shapes[l])
            gx = gh.mm(Ws[l])
        acc.add_(gx)
        return (acc if ctx.needs_input_grad[0] else None), *grads


def cross_v2(x0: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_L, x0') of DCN-V2's cross network on contiguous float32 x0 [B, D] with ``layers`` = [(W_l, b_l)]
    (x_{l+1} = x0 * (x_l W_l^T + b_l) + x_l); x0' is x0 for another branch, whose gradient is summed
    into x0's in autograd's order for the plain modules. Needs :func:`kernel`."""
    return _CrossV2.apply(x0, *(t for wb in layers for t in wb))


class _PairAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, E, W, b, h):
        k = kernel()
        B, F, d = E.shape
        n = F * (F - 1) // 2
        P = k.pair_products(E)                                  # [B, n, d]
        H = torch.addmm(b, P.view(B * n, d), W.t()).relu_()    # F.linear's call for [B n, d], ReLU in place
        s = torch.mm(H, h.t())                                  # [B n, 1]: the score projection's mm
        a = torch.softmax(s.view(B, n), dim=1)
        out = torch.bmm(a.unsqueeze(1), P).view(B, d)          # einsum("bp,bpd->bd")'s bmm
        ctx.save_for_backward(E, W, h, P, H, a)
        ctx.bias_shape = b.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        k = kernel()
        E, W, h, P, H, a = ctx.saved_tensors
        B, n, d = P.shape
        g = g.contiguous()
        ga = torch.bmm(g.view(B, 1, d), P.transpose(1, 2))     # bmm's backward, its first operand's gradient
        gs = torch._softmax_backward_data(ga.view(B, n), a, 1, a.dtype).contiguous()
        gh = gs.view(B * n, 1).t().mm(H)                        # mm's backward for a transposed weight
        gH = k.pair_relu_backward(gs, h, H)                     # gs h^T (K = 1), then the ReLU's backward
        gW = gH.t().mm(P.view(B * n, d))                        # addmm's backward for a transposed weight
        gb = gH.sum_to_size(ctx.bias_shape)
        gE = None
        if ctx.needs_input_grad[0]:
            gE = k.pair_products_backward(gH.mm(W), a, g, E)    # gP = gH W + a g, then the index_selects' sums
        return gE, gW, gb, gh


def pair_attention(E: torch.Tensor, W: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """AFM's attention-based pooling sum_p softmax_p(h^T ReLU(W P_p + b)) P_p over the pair products
    P_p = E[:, i] * E[:, j] (i < j, row-major) of contiguous float32 E [B, F, d], as one Function: torch's
    addmm, mm, softmax and bmm (and in the backward their backward calls) with the pair products, the
    ReLU's backward and the gradient of E native; values and gradients those of
    :class:`ctrgraph.layers.cross.PairwiseAttention`'s modules bit for bit. Needs :func:`kernel`."""
    return _PairAttention.apply(E, W, b, h)


class _FieldLookups(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pads, *tensors):
        n = len(pads)
        weights, ids = tensors[:n], tensors[n:]
        ctx.save_for_backward(*ids)
        ctx.rows, ctx.pads = [w.shape[0] for w in weights], pads
        ctx.set_materialize_grads(False)
        return tuple(kernel().field_lookups_forward(list(weights), list(ids)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        k = kernel()
        ids = ctx.saved_tensors
        out = [None if g is None or not ctx.needs_input_grad[1 + f]
               else k.lookup_backward(g, ids[f], ctx.rows[f], ctx.pads[f]) for f, g in enumerate(grads)]
        return (None, *out, *([None] * len(ids)))


def field_lookups(weights: list[torch.Tensor], ids: list[torch.Tensor], pads: list[int]) -> tuple[torch.Tensor, ...]:
    """``weights[f][ids[f]]`` [B, d] for several one-valued fields (int32 or int64 ids [B], contiguous
    float32 tables, ``pads[f]`` the padding row or -1) as one autograd node: the values of
    index_select, and each table's gradient as :class:`ctrgraph.layers.lookup._Lookup`'s (zeros, then
    index_add_ of the rows in batch order, the padding row zeroed; none for a field whose output
    gets no gradient), bit for bit. Each table must feed no other field of the call. Needs :func:`kernel`."""
    return _FieldLookups.apply(tuple(pads), *weights, *ids)


class _AUGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gx, w, a):
        hs, *kept = kernel().augru_forward(gx, w, a)
        ctx.save_for_backward(w, a, hs, *kept)
        return hs[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return tuple(kernel().augru_backward(g, *ctx.saved_tensors))


def augru_last(gx: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The last state [B, H] of the AUGRU recurrence over float32 gx [B, L, 3H], w [H, 3H], a [B, L, 1]
    (:func:`ctrgraph.layers.recurrent._attentional_loop` with ``kind="augru"``, ``keep=False``).
    Needs :func:`kernel`."""
    return _AUGRU.apply(gx, w, a)


class _SmallAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, heads, scale):
        out, P = kernel().small_attention_forward(qkv, heads, scale)
        ctx.save_for_backward(qkv, P)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        qkv, P = ctx.saved_tensors
        return kernel().small_attention_backward(g, qkv, P, ctx.scale), None, None


def small_attention(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """qkv [B, F, 3 H dh] (Q, K, V blocks, each heads-major) -> softmax(scale Q K^T) V per head,
    heads concatenated: [B, F, H dh]. Needs :func:`kernel`."""
    if not torch.is_grad_enabled() or not qkv.requires_grad:
        return kernel().small_attention_forward(qkv, heads, scale)[0]
    return _SmallAttention.apply(qkv, heads, scale)
