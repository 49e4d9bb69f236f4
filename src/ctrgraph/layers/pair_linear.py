"""A linear map of every unordered field pair's product, ``z[t, b] = W (h[b, i_t] ⊙ h[b, j_t]) + bias``,
without keeping the [T, B, d] pair tensor and without gathers.

GraphFM's Eq. 7 (metric MLP, first layer) and Eq. 10 (attention scores) both start with a linear
map of every pair product h_i ⊙ h_j. Formed for the whole batch, the pair tensor ([B, 78, 64] for
12 fields) and its gradients are the largest tensors of a GraphFM step, and gathering the two
sides of each pair (index_select, and index_add in the backward) is slow on CPU and scales badly
with threads (docs/graphfm.md, Cost).

Here the n(n+1)/2 pairs are enumerated by **circular offset**: offset o pairs field i with field
(i + o) mod n, for o = 0 .. floor(n/2) (all n rows, except that for even n the offset n/2 keeps
only the first n/2 rows, which would otherwise repeat). With the states laid out as [n, B, d]
and the first floor(n/2) fields appended once more (``h2`` = [n + floor(n/2), B, d]), the partner
of rows r0..r1 at offset o is the contiguous slice ``h2[o + r0 : o + r1]``: every product is a
plain elementwise product of two contiguous blocks, and the backward accumulates with two
``addcmul_`` into contiguous blocks. On CPU rows are processed in cache-sized groups (on other
devices one group per offset); the forward keeps only ``h``, the backward recomputes each group's
products. :func:`circulant_pairs` gives the pair order (row t of the output is the pair
``(iu[t], ju[t])``).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

#: bytes of one group's products (rows x B x d); 1 MB measured best at one and at two threads here
CHUNK_BYTES = 1 << 20


def _offsets(n: int) -> list[tuple[int, int]]:
    """(offset o, rows kept) for o = 0 .. floor(n/2)."""
    return [(o, n if o == 0 or 2 * o < n else n // 2) for o in range(n // 2 + 1)]


def circulant_pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n(n+1)/2 unordered pairs ``(iu[t], ju[t])`` in the order :func:`pair_linear` returns them."""
    iu, ju = [], []
    for o, rows in _offsets(n):
        r = torch.arange(rows)
        iu.append(r)
        ju.append((r + o) % n)
    return torch.cat(iu), torch.cat(ju)


def _groups(n: int, B: int, d: int, esize: int, cpu: bool = True):
    """(offset, first row, end row, output row) of each group of rows (off the CPU: one group per offset)."""
    step = max(1, CHUNK_BYTES // max(1, B * d * esize)) if cpu else n
    start = 0
    for o, rows in _offsets(n):
        for r0 in range(0, rows, step):
            yield o, r0, min(rows, r0 + step), start + r0
        start += rows


class _PairLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias):
        B, n, d = h.shape
        k = weight.shape[0]
        ht = h.transpose(0, 1).contiguous()  # [n, B, d]
        h2 = torch.cat([ht, ht[: n // 2]])  # partners: h2[o + r] is field (r + o) mod n
        out = h.new_empty(n * (n + 1) // 2, B, k)
        wt = weight.t()
        for o, r0, r1, s in _groups(n, B, d, h.element_size(), h.device.type == "cpu"):
            p = (ht[r0:r1] * h2[o + r0:o + r1]).view(-1, d)
            o_ = out[s:s + r1 - r0].view(-1, k)
            if bias is None:
                torch.mm(p, wt, out=o_)
            else:
                torch.addmm(bias, p, wt, out=o_)
        ctx.save_for_backward(ht, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        ht, weight = ctx.saved_tensors
        n, B, d = ht.shape
        h2 = torch.cat([ht, ht[: n // 2]])
        k = weight.shape[0]
        g = g.contiguous()
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gh = torch.zeros_like(ht) if need_h else None
        g2 = torch.zeros_like(h2) if need_h else None  # gradient of the partner blocks
        gw = torch.zeros_like(weight) if need_w else None
        for o, r0, r1, s in _groups(n, B, d, ht.element_size(), ht.device.type == "cpu"):
            a, b = ht[r0:r1], h2[o + r0:o + r1]
            go = g[s:s + r1 - r0].view(-1, k)
            if need_w:
                gw.addmm_(go.t(), (a * b).view(-1, d))
            if need_h:
                gz = (go @ weight).view(r1 - r0, B, d)
                gh[r0:r1].addcmul_(gz, b)
                g2[o + r0:o + r1].addcmul_(gz, a)
        if need_h:
            gh += g2[:n]
            gh[: n // 2] += g2[n:]
            gh = gh.transpose(0, 1)
        gb = g.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gh, gw, gb


def pair_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, n, d]`` states, ``[k, d]`` weight -> ``[T, B, k]``, T = n(n+1)/2, row t =
    ``F.linear(h[:, iu[t]] * h[:, ju[t]], weight, bias)`` with ``iu, ju = circulant_pairs(n)``
    (same values and gradients)."""
    if h.dim() != 3 or weight.dim() != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"pair_linear: h [B, n, d] and weight [k, d] expected, got {tuple(h.shape)}, {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"pair_linear: bias [{weight.shape[0]}] expected, got {tuple(bias.shape)}")
    if torch.jit.is_tracing():  # TorchScript export (inference): plain tensor ops the tracer records
        iu, ju = (x.to(h.device) for x in circulant_pairs(h.shape[1]))
        return torch.nn.functional.linear(h[:, iu] * h[:, ju], weight, bias).transpose(0, 1)
    return _PairLinear.apply(h, weight, bias)
