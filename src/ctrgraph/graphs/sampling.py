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

from .propagate import combine_layers


@dataclass
class Block:
    """One hop: ``adj`` [len(dst), len(src)] sparse; ``src[:len(dst)] == dst`` (destinations come first)."""

    dst: torch.Tensor
    src: torch.Tensor
    adj: torch.Tensor


def sample_neighbors(adj: torch.Tensor, seeds: torch.Tensor, fanout: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampled edges ``(seed position, neighbour id, weight)`` of a torch sparse CSR ``adj``."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
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
