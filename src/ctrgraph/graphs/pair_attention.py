"""Masked dense pair attention over per-instance node sets, in length buckets.

``out[b, φ, i] = Σ_j α[b, φ, i, j] v[b, φ, j]`` with ``α = softmax_j(LeakyReLU(s_i[b, φ, i] +
s_j[b, φ, j]))`` restricted to ``mask[b, i, j]`` (GAT's Eqs. for one relation held as a per-instance
``[L, L]`` mask, e.g. DemiNet's r_sim, Eqs. 6-8); a row without any neighbour gives zeros.

Written as one autograd function that works chunk by chunk over the instances sorted by their
number of valid positions (``lengths``; valid positions first): each chunk is cut to its own
longest sequence, so the ``[c, Φ, L_c, L_c]`` score blocks hold no padding tail beyond the chunk's
longest and stay small enough for the CPU caches. The backward recomputes nothing but the LeakyReLU
sign and keeps only the attention weights of the chunks (no full-size intermediate tensors). The loop
is over chunks of instances (tens per batch), never over instances, nodes or edges.
"""
from __future__ import annotations

import torch

NEG = -1e9
SLOPE = 0.2  # GAT's LeakyReLU slope


def _chunks(lengths: torch.Tensor, heads: int, budget: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """(instance order by length, [(start, stop, L_c)] ranges of that order): consecutive instances
    whose score entries (Φ · length² each) add up to about ``budget``; L_c is a range's longest."""
    order = torch.argsort(lengths, stable=True)
    sl = lengths[order]
    cost = torch.cumsum(heads * sl.clamp_min(1) ** 2, 0)
    _, counts = torch.unique_consecutive(torch.div(cost - 1, budget, rounding_mode="floor"), return_counts=True)
    stops = torch.cumsum(counts, 0)
    bounds = zip([0] + stops[:-1].tolist(), stops.tolist(), sl[stops - 1].clamp_min(1).tolist())
    return order, list(bounds)


class _PairAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_i, s_j, v, mask, lengths, budget):
        order, chunks = _chunks(lengths, v.shape[1], budget)
        si, sj, vs, ms = s_i[order], s_j[order], v[order], mask[order]  # sorted by length: chunks are slices
        out = torch.zeros_like(vs)
        saved = []
        for a, b, lc in chunks:
            m = ms[a:b, :lc, :lc].unsqueeze(1)  # [c, 1, Lc, Lc]
            sc = torch.nn.functional.leaky_relu_(si[a:b, :, :lc, None] + sj[a:b, :, None, :lc], SLOPE)
            sc.masked_fill_(~m, NEG)
            att = torch.softmax(sc, dim=-1)
            att.mul_(m.any(-1, keepdim=True))  # rows without a neighbour: zero
            torch.matmul(att, vs[a:b, :, :lc], out=out[a:b, :, :lc])
            saved.append(att)
        ctx.save_for_backward(si, sj, vs, order, *saved)
        ctx.chunks = chunks
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        si, sj, vs, order, *saved = ctx.saved_tensors
        g = g[order]
        gi, gj, gv = torch.zeros_like(si), torch.zeros_like(sj), torch.zeros_like(vs)
        for (a, b, lc), att in zip(ctx.chunks, saved):
            gc = g[a:b, :, :lc]
            torch.matmul(att.transpose(-1, -2), gc, out=gv[a:b, :, :lc])
            d = gc @ vs[a:b, :, :lc].transpose(-1, -2)  # dL/dα [c, Φ, Lc, Lc]
            d.sub_((d * att).sum(-1, keepdim=True)).mul_(att)  # softmax backward (masked entries: α = 0)
            d.mul_(torch.where(si[a:b, :, :lc, None] + sj[a:b, :, None, :lc] > 0, 1.0, SLOPE))  # LeakyReLU'
            torch.sum(d, -1, out=gi[a:b, :, :lc])
            torch.sum(d, -2, out=gj[a:b, :, :lc])
        back = [torch.empty_like(x).index_copy_(0, order, x) for x in (gi, gj, gv)]
        return back[0], back[1], back[2], None, None, None


def pair_attention(s_i: torch.Tensor, s_j: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                   lengths: torch.Tensor | None = None, budget: int = 1 << 18) -> torch.Tensor:
    """s_i, s_j [B, Φ, L] (the receiver and sender halves of the attention score), v [B, Φ, L, C]
    (messages), mask [B, L, L] bool (row i receives from column j), ``lengths`` [B] valid positions
    (default: the last row or column with an edge + 1) -> out [B, Φ, L, C]; ``budget`` caps the
    entries of one chunk's score block."""
    B, P, L, C = v.shape
    if s_i.shape != (B, P, L) or s_j.shape != (B, P, L) or mask.shape != (B, L, L):
        raise ValueError(f"pair_attention: shapes s_i {tuple(s_i.shape)}, s_j {tuple(s_j.shape)}, "
                         f"v {tuple(v.shape)}, mask {tuple(mask.shape)} do not agree")
    if lengths is None:
        used = mask.any(1) | mask.any(2)  # [B, L]
        lengths = torch.where(used, torch.arange(1, L + 1, device=mask.device), 0).amax(1)
    if torch.jit.is_tracing():  # export (inference): one dense block, no length-dependent chunks
        m = mask.unsqueeze(1)  # [B, 1, L, L]
        sc = torch.nn.functional.leaky_relu(s_i.unsqueeze(-1) + s_j.unsqueeze(-2), SLOPE).masked_fill(~m, NEG)
        return torch.matmul(torch.softmax(sc, dim=-1) * m.any(-1, keepdim=True), v)
    return _PairAttention.apply(s_i, s_j, v, mask, lengths, budget)
