"""Per-sequence heterogeneous graphs of DemiNet (Wang et al., AAAI 2022, "Heterogeneous Graph
Construction", Eqs. 1-5) and their edge-dropout views (Eqs. 16-17), batched.

Nodes are the valid positions of post-padded behaviour sequences ``[B, L]`` (most recent last),
packed into one list of ``N`` nodes in (instance, position) order: padding positions are not
nodes, so no work is spent on them. Node i *receives* from node j under relation r (GAT's N_i):

- ``in``   (Eq. 1, r_in): j is one of the ``eps`` positions before i (its ε predecessors),
- ``out``  (Eq. 2, r_out): j is one of the ``eps`` positions after i (its ε successors). The paper's
  two contextual relations would carry the same messages if messages followed edge direction; as
  SR-GNN's incoming / outgoing matrices, we read them as the two neighbourhoods of the receiving
  node, each with its own parameters (research notes §4.2 #1),
- ``sim``  (Eqs. 3-4, r_sim): cos(h_i, h_j) >= ``threshold``, i != j, on the layer-0 node features,
  computed without gradient (§4.2 #7; a repeated item has cos 1 with itself elsewhere),
- ``self`` (Eq. 5, r_self): i = j.

:class:`SequenceGraph` keeps the banded relations (``in``, ``out``, ``self``) as ``[N, O]`` masks over
their offsets (node n receives from packed node n + offsets[o]; a mask is False where that crosses
into another instance), so attention over them costs O(N ε); ``sim`` is a ``[B, L, L]`` mask (dense:
after a few training steps the similarity graph of ml100k-ctr holds about a quarter of all pairs,
where dense attention measured 2.2x faster than an edge list; see
:func:`~ctrgraph.graphs.pair_attention.pair_attention`) with its edge list on demand. :meth:`SequenceGraph.edges` lists any
relation's edges, :meth:`SequenceGraph.dense` gives ``[B, R, L, L]`` masks (tests), ``pack`` /
``unpack`` move node features between ``[B, L, D]`` and ``[N, D]``. Everything is a vectorised
tensor operation: no loop over instances, positions or edges.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RELATIONS = ("in", "out", "sim", "self")


def band_offsets(relation: str, eps: int) -> list[int]:
    """Offsets o of a banded relation: node n receives from node n + o."""
    if relation == "in":
        return [-o for o in range(1, eps + 1)]
    if relation == "out":
        return list(range(1, eps + 1))
    if relation == "self":
        return [0]
    raise ValueError(f"{relation!r} is not a banded relation")


def shift(x: torch.Tensor, offset: int, dim: int = 0) -> torch.Tensor:
    """``out[..., n, ...] = x[..., n + offset, ...]`` along ``dim``, zero (False) where out of range."""
    if offset == 0:
        return x
    n = x.shape[dim]
    if abs(offset) >= n:
        return torch.zeros_like(x)
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim()))
    if offset > 0:
        return torch.nn.functional.pad(x.narrow(dim, offset, n - offset), pad + [0, offset])
    return torch.nn.functional.pad(x.narrow(dim, 0, n + offset), pad + [-offset, 0])


class _BandedSum(torch.autograd.Function):
    """``out[n] = Σ_o w[o, n] * x[n + offsets[o]]`` (x [N, ...], w [O, N, ...] broadcast over x's
    trailing dims, out-of-range neighbours zero) with a hand-written backward: the gradient of x is
    the same banded sum with the offsets reversed, accumulated in one padded buffer."""

    @staticmethod
    def forward(ctx, x, w, offsets):
        lo, hi = max(0, -min(offsets)), max(0, max(offsets))
        n = x.shape[0]
        pad = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1) + [lo, hi])
        out = None
        for q, o in enumerate(offsets):  # one fused multiply-add per offset
            view = pad[lo + o: lo + o + n]
            out = w[q] * view if out is None else torch.addcmul(out, w[q], view)
        ctx.save_for_backward(pad, w)
        ctx.offsets, ctx.lo, ctx.n = offsets, lo, n
        return out

    @staticmethod
    def backward(ctx, g):
        pad, w = ctx.saved_tensors
        lo, n = ctx.lo, ctx.n
        gx = gw = None
        if ctx.needs_input_grad[0]:
            buf = torch.zeros_like(pad)
            for q, o in enumerate(ctx.offsets):
                buf[lo + o: lo + o + n].addcmul_(w[q], g)
            gx = buf[lo: lo + n]
        if ctx.needs_input_grad[1]:
            dims = tuple(i for i, (a, b) in enumerate(zip(w.shape[1:], g.shape)) if a == 1 and b != 1)
            gw = torch.stack([(g * pad[lo + o: lo + o + n]).sum(dims, keepdim=True) if dims
                              else g * pad[lo + o: lo + o + n] for o in ctx.offsets])
        return gx, gw, None


def banded_sum(x: torch.Tensor, w: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """``out[n] = Σ_o w[o][n] * x[n + offsets[o]]`` over the packed nodes (zero out of range); ``w``
    [O, N, ..., 1] broadcasts over x's trailing dimensions. The messages of the banded relations."""
    if w.shape[0] != len(offsets):
        raise ValueError(f"banded_sum: {w.shape[0]} weights for {len(offsets)} offsets")
    return _BandedSum.apply(x, w, tuple(offsets))


@dataclass
class SequenceGraph:
    """The relations of a batch of sequence graphs, in ``relations`` order, over the ``N`` valid
    positions of ``mask`` [B, L] packed in (instance, position) order: ``band[r]`` [N, O_r] masks of
    the banded relations (``offsets[r]``), ``sim`` the [B, L, L] mask of the similarity edges
    (``sim[b, i, j]``: position i receives from position j), or None without ``sim``."""

    relations: tuple[str, ...]
    mask: torch.Tensor
    band: dict[str, torch.Tensor]
    offsets: dict[str, list[int]]
    sim: torch.Tensor | None

    @property
    def n_nodes(self) -> int:
        return next(iter(self.band.values())).shape[0] if self.band else int(self.mask.sum())

    @property
    def flat(self) -> torch.Tensor:
        """Flat positions ``b * L + i`` of the packed nodes [N]."""
        return self.mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [N, ...] (the valid positions, in order; an index_select, whose backward is
        an index_add)."""
        return x.reshape(-1, *x.shape[2:]).index_select(0, self.flat)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, L, ...] with zeros on padding."""
        out = x.new_zeros((self.mask.numel(),) + tuple(x.shape[1:])).index_copy(0, self.flat, x)
        return out.view(tuple(self.mask.shape) + tuple(x.shape[1:]))

    def edges(self, relation: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(receivers, senders) of one relation as packed node indices."""
        if relation == "sim":
            b, i, j = self.sim.nonzero(as_tuple=True)
            index = torch.full(self.mask.shape, -1, dtype=torch.long, device=self.mask.device)
            index[self.mask] = torch.arange(self.n_nodes, device=self.mask.device)
            return index[b, i], index[b, j]
        n, o = self.band[relation].nonzero(as_tuple=True)
        return n, n + torch.tensor(self.offsets[relation], device=n.device, dtype=n.dtype)[o]

    def dense(self) -> torch.Tensor:
        """``[B, R, L, L]`` bool: ``out[b, r, i, j]`` = position i receives from position j under r."""
        b, length = self.mask.shape
        bi, pi = self.mask.nonzero(as_tuple=True)
        out = torch.zeros(b, len(self.relations), length, length, dtype=torch.bool, device=self.mask.device)
        for k, r in enumerate(self.relations):  # at most four relations
            rows, cols = self.edges(r)
            out[bi[rows], k, pi[rows], pi[cols]] = True
        return out

    def drop(self, rate: float, generator: torch.Generator | None = None) -> SequenceGraph:
        """One edge-dropout view (Eqs. 16-17): every edge of every relation except ``self`` is kept with
        probability 1 - ``rate``, independently (research notes §4.2 #9); self loops stay, so every
        node keeps a neighbour; padding has no edges to drop."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"edge dropout rate must be in [0, 1), got {rate}")
        if rate == 0.0:
            return self

        def keep(like: torch.Tensor) -> torch.Tensor:
            return torch.rand(like.shape, device=like.device, generator=generator) >= rate

        band = {r: m if r == "self" else m & keep(m) for r, m in self.band.items()}
        sim = None
        if self.sim is not None:  # one draw per similarity edge, not per [L, L] entry
            edges = self.sim.reshape(-1).nonzero().squeeze(1)
            kept = edges[keep(edges)]
            sim = torch.zeros_like(self.sim).reshape(-1).index_fill_(0, kept, True).view(self.sim.shape)
        return SequenceGraph(self.relations, self.mask, band, self.offsets, sim)

    def stack_views(self, rate: float, views: int = 2, generator: torch.Generator | None = None) -> SequenceGraph:
        """``views`` independent edge-dropout views of the batch as ONE graph over ``views`` copies of
        its instances (mask [views * B, L]), so that they go through a layer in one pass."""
        parts = [self.drop(rate, generator) for _ in range(views)]
        band = {r: torch.cat([p.band[r] for p in parts]) for r in self.band}
        sim = None if self.sim is None else torch.cat([p.sim for p in parts])
        return SequenceGraph(self.relations, self.mask.repeat(views, 1), band, self.offsets, sim)

    def union_edges(self, without_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges of the union of the relations, each pair once (operators on the homogeneous graph)."""
        parts = [self.edges(r) for r in self.relations if not (without_self and r == "self")]
        if not parts:
            e = torch.zeros(0, dtype=torch.long, device=self.mask.device)
            return e, e
        rows, cols = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        n = self.n_nodes
        key = torch.unique(rows * n + cols)
        return key // n, key % n


def sequence_graph(mask: torch.Tensor, feats: torch.Tensor | None = None, eps: int = 3, threshold: float = 0.7,
                   relations: tuple[str, ...] = RELATIONS) -> SequenceGraph:
    """The graphs of the sequences ``mask`` [B, L] (True = valid, valid positions first); ``feats``
    [B, L, D] the node features for ``sim`` (needed only with ``sim``)."""
    bad = [r for r in relations if r not in RELATIONS]
    if bad or not relations or len(set(relations)) != len(relations):
        raise ValueError(f"relations must be distinct names of {RELATIONS}, got {relations}")
    if eps < 1:
        raise ValueError(f"eps must be >= 1, got {eps}")
    bi, _ = mask.nonzero(as_tuple=True)  # the instance of every packed node
    n = bi.numel()
    band, offsets, sim = {}, {}, None
    for r in relations:  # at most four relations
        if r == "sim":
            if feats is None:
                raise ValueError("the sim relation needs node features")
            length = mask.shape[1]
            with torch.no_grad():
                x = torch.nn.functional.normalize(feats.detach().float(), dim=-1)
                sim = torch.bmm(x, x.transpose(1, 2)) >= threshold
                sim &= ~torch.eye(length, dtype=torch.bool, device=mask.device)
                sim &= mask.unsqueeze(2) & mask.unsqueeze(1)
        else:
            offsets[r] = band_offsets(r, eps)
            band[r] = torch.stack([(shift(bi, o) == bi) & (torch.arange(n, device=bi.device) + o >= 0)
                                   & (torch.arange(n, device=bi.device) + o < n) for o in offsets[r]], dim=-1)
    return SequenceGraph(tuple(relations), mask, band, offsets, sim)


def sequence_relations(mask: torch.Tensor, feats: torch.Tensor | None = None, eps: int = 3,
                       threshold: float = 0.7, relations: tuple[str, ...] = RELATIONS) -> torch.Tensor:
    """The relation masks ``[B, R, L, L]`` (bool) of :func:`sequence_graph`, dense."""
    return sequence_graph(mask, feats, eps, threshold, relations).dense()
