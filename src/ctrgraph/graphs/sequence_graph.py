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
into another instance), so attention over them costs O(N ε) (:func:`band_attention`, :func:`banded_sum`);
``sim`` is a ``[B, L, L]`` mask whose edge list and CSR form (:meth:`SequenceGraph.sim_csr`) are
computed once per graph and inherited, filtered, by the dropout views (after a few training steps the
similarity graph of ml100k-ctr holds about a quarter of all pairs). On the CPU the attention over
these relations runs in the fused kernels of :mod:`ctrgraph.graphs.native` (compiled on first use);
elsewhere, or where they cannot be built, on PyTorch tensors (``sim`` dense per instance in length
buckets: :func:`~ctrgraph.graphs.pair_attention.pair_attention`). :meth:`SequenceGraph.edges` lists any
relation's edges, :meth:`SequenceGraph.dense` gives ``[B, R, L, L]`` masks (tests), ``pack`` /
``unpack`` move node features between ``[B, L, D]`` and ``[N, D]``. Everything is a vectorised
tensor operation: no loop over instances, positions or edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import native

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
    if torch.jit.is_tracing():  # export: no branch on this batch's n (a gather the tracer keeps dynamic)
        idx = torch.arange(n, device=x.device) + offset
        ok = (idx >= 0) & (idx < n)
        out = x.index_select(dim, idx.clamp(0, max(n - 1, 0)))
        return out * ok.view([-1] + [1] * (x.dim() - 1 - dim % x.dim())).to(out.dtype) \
            if out.dtype != torch.bool else out & ok.view([-1] + [1] * (x.dim() - 1 - dim % x.dim()))
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


class _NativeBandedSum(torch.autograd.Function):
    """:class:`_BandedSum` for x [N, P, C] and w [O, N, P] in one pass of the native CPU kernel."""

    @staticmethod
    def forward(ctx, x, w, offsets):
        ctx.save_for_backward(x, w)
        ctx.offsets, ctx.ext = offsets, native.kernel()
        return ctx.ext.banded_forward(x, w, list(offsets))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx, gw = ctx.ext.banded_backward(g, x, w, list(ctx.offsets))
        return gx, gw, None


def banded_sum(x: torch.Tensor, w: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """``out[n] = Σ_o w[o][n] * x[n + offsets[o]]`` over the packed nodes (zero out of range); ``w``
    [O, N, ..., 1] broadcasts over x's trailing dimensions. The messages of the banded relations.
    For CPU tensors x [N, P, C] with w [O, N, P, 1] the fused kernel of :mod:`ctrgraph.graphs.native`
    (where it is built), otherwise one multiply-add per offset."""
    if w.shape[0] != len(offsets):
        raise ValueError(f"banded_sum: {w.shape[0]} weights for {len(offsets)} offsets")
    if (x.dim() == 3 and w.dim() == 4 and w.shape[1:] == (x.shape[0], x.shape[1], 1) and x.device.type == "cpu"
            and w.dtype == x.dtype and native.kernel() is not None):
        return _NativeBandedSum.apply(x, w.squeeze(-1), tuple(offsets))
    if torch.jit.is_tracing():  # export (inference): plain ops the tracer records, same sums
        return sum(w[q] * shift(x, o) for q, o in enumerate(offsets))
    return _BandedSum.apply(x, w, tuple(offsets))


class _NativeBandAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_i, s_j, z, mask, offsets, slope):
        ctx.ext = native.kernel()
        alpha, e = ctx.ext.band_att_forward(s_i, s_j, z, mask, list(offsets), slope)
        ctx.save_for_backward(s_i, s_j, z, alpha, mask)
        ctx.offsets, ctx.slope = offsets, slope
        return alpha, e

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_alpha, g_e):
        s_i, s_j, z, alpha, mask = ctx.saved_tensors
        g_alpha = torch.zeros_like(alpha) if g_alpha is None else g_alpha
        g_e = torch.zeros_like(z) if g_e is None else g_e
        gi, gj, gz = ctx.ext.band_att_backward(g_alpha, g_e, s_i, s_j, z, alpha, mask, list(ctx.offsets),
                                                      ctx.slope)
        return gi, gj, gz, None, None, None


def band_attention(s_i: torch.Tensor, s_j: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, offsets: list[int],
                   slope: float = 0.2, neg: float = -1e9) -> tuple[torch.Tensor, torch.Tensor]:
    """GAT attention of one banded relation over the packed nodes (DemiNet Eqs. 6-7, and Eqs. 8-9 on a
    scalar message z): α[o, n] = softmax over the offsets o with ``mask[n, o]`` of
    LeakyReLU(s_i[n] + s_j[n + offsets[o]]), e[n] = Σ_o α[o, n] z[n + offsets[o]]. s_i, s_j, z [N, Φ],
    mask [N, O] (False where n + offset leaves [0, N), as in :class:`SequenceGraph`'s bands; the kernel
    skips such entries) -> (α [O, N, Φ], zero where masked; e [N, Φ]). The fused kernel of
    :mod:`ctrgraph.graphs.native` on the CPU where it is built, else shifted tensors."""
    if (s_i.device.type == "cpu" and s_i.dim() == 2 and s_i.dtype == s_j.dtype == z.dtype
            and native.kernel() is not None):
        return _NativeBandAttention.apply(s_i, s_j, z, mask, tuple(offsets), slope)
    mo = mask.T.unsqueeze(-1)  # [O, N, 1]
    a = torch.nn.functional.leaky_relu(s_i + torch.stack([shift(s_j, o) for o in offsets]), slope)
    alpha = torch.softmax(a.masked_fill(~mo, neg), dim=0) * mo
    return alpha, (alpha * torch.stack([shift(z, o) for o in offsets])).sum(0)


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
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

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
            return self._sim_edges()[1:]
        n, o = self.band[relation].nonzero(as_tuple=True)
        return n, n + torch.tensor(self.offsets[relation], device=n.device, dtype=n.dtype)[o]

    def _sim_edges(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat indices into ``sim`` [E], receivers [E], senders [E]) of the similarity edges, row-major
        (receivers ascending), computed once per graph (views inherit theirs from the full graph)."""
        if "sim_edges" not in self._cache:
            flat = self.sim.reshape(-1).nonzero().squeeze(1)
            length = self.mask.shape[1]
            index = torch.full(self.mask.shape, -1, dtype=torch.long, device=self.mask.device)
            index[self.mask] = torch.arange(self.n_nodes, device=self.mask.device)
            index = index.reshape(-1)
            b, i, j = flat // (length * length), (flat // length) % length, flat % length
            self._cache["sim_edges"] = (flat, index[b * length + i], index[b * length + j])
        return self._cache["sim_edges"]

    def sim_csr(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sim`` in CSR form over the packed nodes, computed once per graph: (rowptr [N + 1], col [E],
        node ranges of the instances [B + 1]) for :func:`~ctrgraph.graphs.native.csr_pair_attention`."""
        if "csr" not in self._cache:
            _, rows, cols = self._sim_edges()
            n = self.n_nodes
            rowptr = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
            torch.cumsum(torch.bincount(rows, minlength=n), 0, out=rowptr[1:])
            inst = torch.zeros(self.mask.shape[0] + 1, dtype=torch.long, device=rows.device)
            torch.cumsum(self.mask.sum(1), 0, out=inst[1:])
            self._cache["csr"] = (rowptr, cols.contiguous(), inst)
        return self._cache["csr"]

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
        sim, cache = None, {}
        if self.sim is not None:  # one draw per similarity edge, not per [L, L] entry
            flat, rows, cols = self._sim_edges()
            k = keep(flat)
            cache["sim_edges"] = (flat[k], rows[k], cols[k])
            sim = torch.zeros_like(self.sim).reshape(-1).index_fill_(0, flat[k], True).view(self.sim.shape)
        return SequenceGraph(self.relations, self.mask, band, self.offsets, sim, cache)

    def stack_views(self, rate: float, views: int = 2, generator: torch.Generator | None = None) -> SequenceGraph:
        """``views`` independent edge-dropout views of the batch as ONE graph over ``views`` copies of
        its instances (mask [views * B, L]), so that they go through a layer in one pass."""
        parts = [self.drop(rate, generator) for _ in range(views)]
        band = {r: torch.cat([p.band[r] for p in parts]) for r in self.band}
        sim, cache = None, {}
        if self.sim is not None:
            sim = torch.cat([p.sim for p in parts])
            n, size = self.n_nodes, self.sim.numel()
            edges = [p._sim_edges() for p in parts]
            cache["sim_edges"] = tuple(torch.cat([e[t] + v * (size if t == 0 else n) for v, e in enumerate(edges)])
                                       for t in range(3))
        return SequenceGraph(self.relations, self.mask.repeat(views, 1), band, self.offsets, sim, cache)

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
                pos = torch.arange(length, device=mask.device)
                sim = sim & (pos.unsqueeze(1) != pos) & mask.unsqueeze(2) & mask.unsqueeze(1)  # i != j, valid
        else:
            offsets[r] = band_offsets(r, eps)
            band[r] = torch.stack([(shift(bi, o) == bi) & (torch.arange(n, device=bi.device) + o >= 0)
                                   & (torch.arange(n, device=bi.device) + o < n) for o in offsets[r]], dim=-1)
    return SequenceGraph(tuple(relations), mask, band, offsets, sim)


def sequence_relations(mask: torch.Tensor, feats: torch.Tensor | None = None, eps: int = 3,
                       threshold: float = 0.7, relations: tuple[str, ...] = RELATIONS) -> torch.Tensor:
    """The relation masks ``[B, R, L, L]`` (bool) of :func:`sequence_graph`, dense."""
    return sequence_graph(mask, feats, eps, threshold, relations).dense()
