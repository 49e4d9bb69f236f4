"""Neighbour sampling with a fixed fan-out per hop, for graphs too large to propagate whole.

(DG-ENN 4.4 suggests sampling for large graphs; research notes 2.2 #12.) A node with at most
``fanout`` neighbours keeps all of them (exact); a node with more draws ``fanout`` neighbours
uniformly *with replacement* (one vectorised draw, O(fanout) per node whatever its degree). Each
kept edge carries ``A[h, i] * deg(h) / n_drawn(h)``, so the sampled aggregation is an unbiased
estimate of the full ``(A e)_h`` for whatever normalised ``A`` is sampled (exact below the fan-out).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .propagate import CSRMatmul, combine_layers, csr_row_ids


@dataclass
class Block:
    """One hop: ``adj`` [len(dst), len(src)] sparse; ``src[:len(dst)] == dst`` (destinations come first).
    ``centre`` (optional, [len(dst)]): a self weight added exactly by :func:`block_mm`."""

    dst: torch.Tensor
    src: torch.Tensor
    adj: torch.Tensor
    centre: torch.Tensor | None = None


def sample_neighbors(adj: torch.Tensor, seeds: torch.Tensor, fanout: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampled edges ``(seed position, neighbour id, weight)`` of a torch sparse CSR ``adj``."""
    crow, col, val = adj.crow_indices().long(), adj.col_indices().long(), adj.values()
    seeds = seeds.to(torch.int64)
    start = crow[seeds]
    deg = crow[seeds + 1] - start
    take = torch.clamp(deg, max=fanout)
    total = int(take.sum())
    pos_seed = torch.repeat_interleave(torch.arange(seeds.numel(), device=crow.device), take, output_size=total)
    first = torch.cumsum(take, 0) - take
    j = torch.arange(total, device=crow.device) - first[pos_seed]  # 0..take-1 inside each seed
    d = deg[pos_seed]
    u = torch.rand(total, generator=generator, device=crow.device) if generator is None or generator.device == crow.device \
        else torch.rand(total, generator=generator).to(crow.device)
    rnd = torch.minimum((u * d).to(torch.int64), d - 1)
    off = torch.where(d <= fanout, j, rnd)
    e = start[pos_seed] + off
    w = val[e] * (d.to(val.dtype) / take[pos_seed].to(val.dtype))
    return pos_seed, col[e], w


def sample_blocks(adj: torch.Tensor, seeds: torch.Tensor, fanouts: list[int],
                  generator: torch.Generator | None = None) -> list[Block]:
    """Multi-hop blocks, ordered from the input layer to the seeds (``fanouts[0]`` is the seeds' hop)."""
    blocks: list[Block] = []
    dst = seeds.to(torch.int64)
    for f in fanouts:
        ps, nb, w = sample_neighbors(adj, dst, f, generator)
        extra = torch.unique(nb)
        extra = extra[~torch.isin(extra, dst)]
        src = torch.cat([dst, extra])
        # local index of each neighbour in src
        order = torch.argsort(src)
        loc = order[torch.searchsorted(src[order], nb)]
        a = torch.sparse_coo_tensor(torch.stack([ps, loc]), w, size=(dst.numel(), src.numel())).coalesce()
        blocks.append(Block(dst=dst, src=src, adj=a))
        dst = src
    return blocks[::-1]


def sampled_lightgcn(blocks: list[Block], table: torch.Tensor, combine: str = "mean") -> torch.Tensor:
    """LightGCN (Eq. 11 + Eq. 13) of the seeds on sampled blocks; equals the full one below the fan-out."""
    n_seeds = blocks[-1].dst.numel()
    h = table[blocks[0].src]
    layers = [table[blocks[-1].dst]]
    for b in blocks:
        h = torch.sparse.mm(b.adj, h)
        layers.append(h[:n_seeds])
    return combine_layers(layers, combine)



# ----- sampling with per-step edge weights (DG-ENN provider, §4.4) -----------------------------
def sample_csr(crow: torch.Tensor, seeds: torch.Tensor, fanout: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries of the CSR rows ``seeds`` drawn as in :func:`sample_neighbors`, without reading values:
    ``(seed position, entry index, scale)``, seed positions nondecreasing, ``scale = n_row / n_drawn``
    (1 for a row of at most ``fanout`` entries, which are all kept). The caller computes each
    entry's weight (e.g. from degrees that change per step) times ``scale``: summed over a row's
    draws, an unbiased estimate of the row's full sum."""
    if fanout < 1:
        raise ValueError(f"fanout must be >= 1, got {fanout}")
    seeds = seeds.to(crow.device, torch.int64)
    start = crow[seeds]
    deg = crow[seeds + 1] - start
    take = torch.clamp(deg, max=fanout)
    total = int(take.sum())
    pos = torch.repeat_interleave(torch.arange(seeds.numel(), device=crow.device), take, output_size=total)
    j = torch.arange(total, device=crow.device) - (torch.cumsum(take, 0) - take)[pos]
    d = deg[pos]
    if generator is None or generator.device == crow.device:
        u = torch.rand(total, generator=generator, device=crow.device)
    else:
        u = torch.rand(total, generator=generator).to(crow.device)
    off = torch.where(d <= fanout, j, torch.minimum((u * d).to(torch.int64), d - 1))
    scale = d.to(torch.float32) / take[pos].to(torch.float32)
    return pos, start[pos] + off, scale


def frontier(dst: torch.Tensor, nbr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``src`` = ``dst`` (distinct ids) followed by the ids of ``nbr`` not in it (sorted, distinct),
    and the index of every ``nbr`` in ``src``. One sort of ``nbr``; no graph-sized work."""
    uniq, inv = torch.unique(nbr, return_inverse=True)
    n = dst.numel()
    ds, order = torch.sort(dst)
    at = torch.searchsorted(ds, uniq).clamp_max(max(n - 1, 0))
    hit = ds[at] == uniq if n else torch.zeros_like(uniq, dtype=torch.bool)
    new = ~hit
    loc = torch.where(hit, order[at] if n else at, n + torch.cumsum(new, 0) - 1)
    return torch.cat([dst, uniq[new]]), loc[inv]


def csr_block(dst: torch.Tensor, src: torch.Tensor, pos: torch.Tensor, loc: torch.Tensor, w: torch.Tensor,
              centre: torch.Tensor | None = None) -> Block:
    """A :class:`Block` with a CSR ``adj`` from edges ``(dst position, src position, weight)`` whose
    dst positions are nondecreasing (as :func:`sample_csr` returns them); repeated edges count
    each time. ``centre``: a per-destination self weight applied exactly (see :func:`block_mm`)."""
    crow = torch.zeros(dst.numel() + 1, dtype=torch.int64, device=pos.device)
    torch.cumsum(torch.bincount(pos, minlength=dst.numel()), 0, out=crow[1:])
    adj = torch.sparse_csr_tensor(crow, loc, w, size=(dst.numel(), src.numel()), check_invariants=False)
    return Block(dst=dst, src=src, adj=adj, centre=centre)


class _BlockMM(CSRMatmul):
    """``adj @ x`` for a one-step CSR block; the backward builds the block's transpose (one sort of
    its column indices) instead of torch's generic CSR backward (about 2x slower, measured)."""

    @staticmethod
    def backward(ctx, g):
        crow, col, val = ctx.a.crow_indices(), ctx.a.col_indices(), ctx.a.values()
        row = csr_row_ids(crow, col.numel())
        order = torch.argsort(col, stable=True)
        crow_t = torch.zeros(ctx.n + 1, dtype=torch.int64, device=crow.device)
        torch.cumsum(torch.bincount(col, minlength=ctx.n), 0, out=crow_t[1:])
        adj_t = torch.sparse_csr_tensor(crow_t, row[order], val[order].to(g.dtype), size=(ctx.n, g.shape[0]),
                                        check_invariants=False)
        return None, torch.sparse.mm(adj_t, g)


def block_mm(b: Block, h: torch.Tensor) -> torch.Tensor:
    """One hop's aggregation ``(A e)`` at ``b.dst`` from ``h`` (rows of ``b.src``), plus
    ``centre * h[:len(dst)]`` when the block has a centre term (dst rows come first in src)."""
    if b.adj.layout == torch.sparse_csr and h.requires_grad:
        agg = _BlockMM.apply(b.adj, h)
    else:
        agg = torch.sparse.mm(b.adj, h)
    if b.centre is not None:
        agg = agg + b.centre[:, None].to(h.dtype) * h[:b.dst.numel()]
    return agg


def sample_blocks_with(sampler, seeds: torch.Tensor, fanouts: list[int]) -> list[Block]:
    """Multi-hop blocks as :func:`sample_blocks` (input layer first, ``fanouts[0]`` the seeds' hop),
    each hop's :class:`Block` from ``sampler(dst, fanout)`` (whose ``src`` must start with ``dst``)."""
    blocks: list[Block] = []
    dst = seeds.to(torch.int64)
    for f in fanouts:
        b = sampler(dst, f)
        blocks.append(b)
        dst = b.src
    return blocks[::-1]


def propagate_blocks(blocks: list[Block], x: torch.Tensor, layer=None, combine: str = "mean") -> torch.Tensor:
    """Eqs. 12-13 of the seeds on sampled blocks; ``x`` holds the input rows (``blocks[0].src``, or
    the seeds when there are no blocks). ``layer(l, agg, x_dst, dst)`` turns the aggregation
    ``(A e^(l))`` at the block's destinations into ``e^(l+1)`` (a propagator's per-row transform;
    None: LightGCN, ``e^(l+1) = A e^(l)``); ``dst`` holds their global ids."""
    n_seeds = blocks[-1].dst.numel() if blocks else x.shape[0]
    h = x
    layers = [x[:n_seeds]]
    for l, b in enumerate(blocks):
        agg = block_mm(b, h)
        h = agg if layer is None else layer(l, agg, h[:b.dst.numel()], b.dst)
        layers.append(h[:n_seeds])
    return combine_layers(layers, combine)
