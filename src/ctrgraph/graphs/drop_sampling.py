"""Neighbour sampling on a :class:`~ctrgraph.graphs.dg.DropGraph` with a step's edge drops
(DG-ENN §4.4: "to scale up the model training, neighbor sampling is necessary"), used by the
``dg`` provider's sampled training steps (:mod:`ctrgraph.embeddings.dg_sampled`)."""
from __future__ import annotations

import torch

from .dg import DropGraph
from .sampling import Block, csr_block, frontier, sample_csr


def assemble_rows(idx: list[torch.Tensor], parts: list[torch.Tensor]) -> torch.Tensor:
    """Rows ``parts[k][j]`` placed at ``idx[k][j]`` (the ``idx`` together a permutation of 0..n-1)."""
    i, v = torch.cat(idx), torch.cat(parts)
    return v.new_zeros(v.shape).index_copy(0, i, v)


class SampledDropGraph:
    """Neighbour sampling (§4.4) on a :class:`DropGraph` with a step's drops applied to the sampled
    entries only (no work on the whole graph per step). The off-diagonal entries form a CSR drawn
    from with :func:`~ctrgraph.graphs.sampling.sample_csr`; the degrees |N_h| of Eqs. 9-11 are the
    base degrees minus the pairs this step removes at each endpoint (exactly those of
    :meth:`DropGraph.adjacency`); a removed pair's entries stay drawable with weight 0, so the
    estimate is unbiased for the dropped graph; the centre term (Eq. 9's 1/|N_h|, or ``isolated`` for
    a node without neighbours) is applied exactly, never sampled, so a fan-out >= the largest
    degree reproduces the whole graph."""

    def __init__(self, g: DropGraph):
        off = ~g.is_diag
        off &= g.pair_cnt[g.pid] > 0 if g.pair_cnt.numel() else torch.zeros_like(off)
        rows = g.rows[off]
        self.g = g
        self.col, self.pid = g.cols[off], g.pid[off]
        self.crow = torch.zeros(g.n + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(torch.bincount(rows, minlength=g.n), 0, out=self.crow[1:])
        self.deg0 = torch.diff(self.crow).to(torch.float32)

    def to(self, device) -> SampledDropGraph:
        for k in ("col", "pid", "crow", "deg0"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def sampler(self, drop: torch.Tensor | None = None):
        """This step's ``sampler(dst, fanout) -> Block`` (for
        :func:`~ctrgraph.graphs.sampling.sample_blocks_with`), one count subtracted per pair id in
        ``drop`` as in :meth:`DropGraph.adjacency`."""
        g = self.g
        removed = torch.zeros(0, dtype=torch.int64, device=self.crow.device)
        if drop is not None and drop.numel():
            ids, k = torch.unique(drop, return_counts=True)
            cnt = g.pair_cnt[ids]
            removed = ids[(cnt > 0) & (cnt - k <= 0)]
        key = g.pair_keys[removed]
        ends = torch.sort(torch.cat([key // g.n, key % g.n])).values  # endpoints of the removed pairs

        def degrees(x: torch.Tensor) -> torch.Tensor:
            d = self.deg0[x]
            if ends.numel():
                d = d - (torch.searchsorted(ends, x, right=True) - torch.searchsorted(ends, x)).to(d.dtype)
            return d

        def sample(dst: torch.Tensor, fanout: int) -> Block:
            pos, e, scale = sample_csr(self.crow, dst, fanout)
            src, loc = frontier(dst, self.col[e])
            d = degrees(src)  # only the block's nodes; dst come first
            s = torch.where(d > 0, d.clamp_min(1.0).rsqrt(), torch.zeros_like(d))
            w = s[pos] * s[loc] * scale
            if removed.numel():  # edges of removed pairs weigh 0; only dst at a removed endpoint can have one
                cand = torch.nonzero(torch.isin(dst, ends)[pos]).squeeze(1)
                cand = cand[torch.isin(self.pid[e[cand]], removed)]
                w = w.index_fill(0, cand, 0.0)
            d_dst = d[:dst.numel()]
            centre = d_dst.clamp_min(1.0).reciprocal() if g.norm == "gcn" else torch.zeros_like(d_dst)
            centre = torch.where(d_dst > 0, centre, torch.full_like(d_dst, g.isolated))
            return csr_block(dst, src, pos, loc, w, centre if bool(centre.any()) else None)

        return sample
