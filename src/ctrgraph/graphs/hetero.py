"""Graphs of DG-ENN's Table 4 baselines (paper §5.3.2: GCN, KGAT and HGAT on the DG-ENN graphs).

One node set for all graphs (:class:`NodeLayout`): ``users | items | values of each user-attribute
field | values of each item-attribute field`` (only the fields of the graphs used), each block
indexed by its table's ids (row 0 = padding, an isolated node). The selected graphs (``uattr``,
``iattr``: G_ua / G_vb of §4.1.1, one bipartite part per field; ``uu``, ``vv``, ``uv``: §4.1.2)
are merged into one symmetric matrix (:func:`merged_graph`) held as a :class:`MaskedGraph` (a
:class:`~ctrgraph.graphs.dg.DropGraph` with per-step edge masks and Kipf's renormalisation), so the
providers share DG's leakage guard (:func:`target_item_pairs`).

:class:`RelationMatmul` applies a different matrix to each row (by relation or node type) without a
loop over relations and without materialising one matrix per row (KGAT's W_r, HGAT's W_τ);
:func:`aggregate` sums weighted messages per edge row (attention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .dg import DGGraphData, DropGraph


# ----- node layout and the merged graph ----------------------------------------------------------
@dataclass(frozen=True)
class NodeBlock:
    """A contiguous range of node ids: one node type (HGAT) and one embedding table."""

    kind: str  # "user" | "item" | "uattr" | "iattr" | "entity"
    name: str  # type name: "user", "item", an attribute field's name, or "entity"
    table: str | None  # the embedding table whose ids index the block (None: KG entities)
    offset: int
    size: int


class NodeLayout:
    """Blocks of node ids, in order; ``node_type[i]`` is the block index of node i."""

    def __init__(self, blocks: list[tuple[str, str, str | None, int]]):
        out, off = [], 0
        for kind, name, table, size in blocks:
            out.append(NodeBlock(kind, name, table, off, int(size)))
            off += int(size)
        self.blocks: list[NodeBlock] = out
        self.n = off
        self.node_type = np.repeat(np.arange(len(out)), [b.size for b in out]).astype(np.int64)

    def __getitem__(self, name: str) -> NodeBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def with_block(self, kind: str, name: str, table: str | None, size: int) -> NodeLayout:
        return NodeLayout([(b.kind, b.name, b.table, b.size) for b in self.blocks] + [(kind, name, table, size)])

    @property
    def n_types(self) -> int:
        return len(self.blocks)


def merged_graph(g: DGGraphData, layout: NodeLayout, parts: tuple[str, ...]) -> sp.csr_matrix:
    """All selected DG-ENN graphs as one symmetric matrix over the layout's nodes. Entries are
    multiplicities (1 for every edge; the vv transition counts for item-item edges, so that
    :class:`DropGraph` can subtract one user's transitions); edges are used unweighted."""
    u, i = layout["user"], layout["item"]
    rows, cols, vals = [], [], []

    def add(m: sp.spmatrix, r_off: int, c_off: int, mirror: bool, counts: bool = False) -> None:
        m = sp.coo_matrix(m)
        keep = m.data != 0
        r, c = m.row[keep].astype(np.int64) + r_off, m.col[keep].astype(np.int64) + c_off
        v = m.data[keep].astype(np.float32) if counts else np.ones(r.size, np.float32)
        rows.extend([r, c] if mirror else [r])
        cols.extend([c, r] if mirror else [c])
        vals.extend([v, v] if mirror else [v])

    if "uv" in parts:
        add(g.uv, u.offset, i.offset, mirror=True)
    if "uu" in parts:  # symmetric already (kNN graph, symmetrised)
        add(g.uu, u.offset, u.offset, mirror=False)
    if "vv" in parts:  # symmetric transition counts C + C^T
        add(g.vv, i.offset, i.offset, mirror=False, counts=True)
    for kind, owner, inc in (("uattr", u, g.user_attr), ("iattr", i, g.item_attr)):
        for b in (b for b in layout.blocks if b.kind == kind):  # one bipartite part per field (a few)
            add(inc[b.name], owner.offset, b.offset, mirror=True)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return sp.csr_matrix((v, (r, c)), shape=(layout.n, layout.n))


class MaskedGraph(DropGraph):
    """:class:`DropGraph` plus the per-step edge mask (for attention over the present edges) and
    Kipf & Welling's renormalisation ``D~^-1/2 (A + I) D~^-1/2`` (``D~ = D + I``, GCN and HGAT)."""

    def edge_mask(self, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean mask over the CSR entries: off-diagonal edges present after ``drop`` (pair ids,
        one count each)."""
        cnt = self.pair_cnt
        if drop is not None and drop.numel():
            cnt = cnt.index_add(0, drop, torch.full(drop.shape, -1.0, device=drop.device))
        on = ~self.is_diag
        if cnt.numel() == 0:
            return torch.zeros_like(on)
        return on & (cnt > 0)[self.pid]

    def kipf(self, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Renormalised adjacency (torch sparse CSR, self-loops included, dropped edges valued 0)."""
        on = self.edge_mask(drop)
        d = torch.bincount(self.rows[on], minlength=self.n).to(torch.float32) + 1.0
        s = d.rsqrt()
        val = torch.where(on | self.is_diag, s[self.rows] * s[self.cols], torch.zeros((), device=d.device))
        return torch.sparse_csr_tensor(self.crow, self.cols, val, size=(self.n, self.n), check_invariants=False)


def target_item_pairs(u: torch.Tensor, v: torch.Tensor, seq: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                      n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transitions of user u into and out of item v in u's train sequence, as item pairs
    (a, b) (DG's vv drop rule; a positive whose item is not in u's sequence has none)."""
    keys, prev, nxt = seq
    if not keys.numel() or not u.numel():
        e = torch.zeros(0, dtype=torch.long, device=u.device)
        return e, e
    q = u * n_items + v
    at = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    hit = keys[at] == q
    at, vh = at[hit], v[hit]
    pv, nv = prev[at], nxt[at]  # 0: no previous / next item
    return torch.cat([pv[pv > 0], nv[nv > 0]]), torch.cat([vh[pv > 0], vh[nv > 0]])


# ----- one matrix per row, vectorised ------------------------------------------------------------
class RelationMatmul:
    """``y[p] = w[rel[p]] @ x[p]`` for a fixed relation index per row (``w``: [R, d_out, d_in]).

    Written as sparse products so that neither a loop over relations nor a [P, d_out, d_in] gather
    is needed: ``y = M @ W_stack`` with M [P, R*d_in] holding x[p] in relation rel[p]'s column
    block; the backward uses the same trick for dx and ``M^T @ dy`` for dw. The sparsity structure
    depends on ``rel`` only and is built once."""

    def __init__(self, rel: torch.Tensor, n_rel: int, d_in: int, d_out: int):
        rel = rel.long()
        p = rel.numel()
        self.shape = (p, n_rel, d_in, d_out)
        ar = torch.arange(p + 1, dtype=torch.long)
        self.m_crow, self.m_col = ar * d_in, (rel[:, None] * d_in + torch.arange(d_in)).reshape(-1)
        self.g_crow, self.g_col = ar * d_out, (rel[:, None] * d_out + torch.arange(d_out)).reshape(-1)
        # M^T: row r*d_in + j lists the rows p of relation r (ascending), value x[p, j]
        order = torch.argsort(rel, stable=True)
        cnt = torch.bincount(rel, minlength=n_rel)
        start = torch.cumsum(cnt, 0) - cnt
        row_cnt = cnt.repeat_interleave(d_in)
        self.t_crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(row_cnt, 0)])
        row = torch.repeat_interleave(torch.arange(n_rel * d_in), row_cnt, output_size=p * d_in)
        pos = torch.arange(p * d_in) - self.t_crow[row]
        src = order[start[row // d_in] + pos]
        self.t_col, self.t_idx = src, src * d_in + row % d_in

    def to(self, device) -> RelationMatmul:
        for k in ("m_crow", "m_col", "g_crow", "g_col", "t_crow", "t_col", "t_idx"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p, r, d_in, d_out = self.shape
        if x.shape != (p, d_in) or w.shape != (r, d_out, d_in):
            raise ValueError(f"RelationMatmul: expected x {(p, d_in)} and w {(r, d_out, d_in)}, "
                             f"got {tuple(x.shape)} and {tuple(w.shape)}")
        return _RelMM.apply(x.contiguous(), w, self)


class _RelMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, s: RelationMatmul):
        p, r, d_in, d_out = s.shape
        ctx.s = s
        ctx.save_for_backward(x, w)
        m = torch.sparse_csr_tensor(s.m_crow, s.m_col, x.reshape(-1), size=(p, r * d_in), check_invariants=False)
        return torch.sparse.mm(m, w.transpose(1, 2).reshape(r * d_in, d_out))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = ctx.s
        p, r, d_in, d_out = s.shape
        g = g.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gm = torch.sparse_csr_tensor(s.g_crow, s.g_col, g.reshape(-1), size=(p, r * d_out), check_invariants=False)
            gx = torch.sparse.mm(gm, w.reshape(r * d_out, d_in))
        if ctx.needs_input_grad[1]:
            mt = torch.sparse_csr_tensor(s.t_crow, s.t_col, x.reshape(-1)[s.t_idx], size=(r * d_in, p),
                                         check_invariants=False)
            gw = torch.sparse.mm(mt, g).reshape(r, d_in, d_out).transpose(1, 2)
        return gx, gw, None


def aggregate(rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """``out[r] = sum_e weight[e] h[cols[e]]`` over the edges e with ``rows[e] = r`` (attention messages)."""
    return torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, rows, weight[:, None] * h[cols])
