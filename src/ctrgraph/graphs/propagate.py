"""Propagation on torch sparse adjacencies: LightGCN / GCN / NGCF aggregators (DG-ENN Eqs. 9-13).

Each aggregator module owns the parameters of one graph (DG-ENN: "separate parameters for
different fields"); create one module per graph. ``forward(adj, x, rows=None)`` returns the layer
combination (Eq. 13) for all nodes, or only for ``rows``: then the last layer is computed for
those rows only (``A[rows] @ e^(L-1)``), the cheapest exact way to serve a batch.

The adjacency passed in must already be normalised (:mod:`ctrgraph.graphs.normalize`):
``sym_norm`` for LightGCN (Eq. 11) and NGCF (Eq. 10), ``gcn_literal_norm`` (or ``kipf_norm``) for
GCN (Eq. 9, which includes the centre node).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from . import native as _native


def to_torch_sparse(m: sp.spmatrix, layout: str = "csr", device: str | torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scipy sparse -> torch sparse (``layout`` ``csr`` or ``coo``), int64 indices."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    crow = torch.from_numpy(m.indptr.astype(np.int64))
    col = torch.from_numpy(m.indices.astype(np.int64))
    val = torch.from_numpy(np.asarray(m.data)).to(dtype)
    t = torch.sparse_csr_tensor(crow, col, val, size=m.shape, check_invariants=False)
    if layout == "coo":
        t = t.to_sparse_coo().coalesce()
    elif layout != "csr":
        raise ValueError(f"layout must be 'csr' or 'coo', got {layout!r}")
    return t.to(device) if device is not None else t


def sparse_rows(adj: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of a torch sparse CSR (or COO) matrix as a ``[len(rows), n]`` sparse CSR (vectorised)."""
    if adj.layout != torch.sparse_csr:
        adj = adj.to_sparse_csr()
    crow, col, val = adj.crow_indices().long(), adj.col_indices().long(), adj.values()
    rows = rows.to(crow.device, torch.int64)
    start, stop = crow[rows], crow[rows + 1]
    cnt = stop - start
    new_crow = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=crow.device)
    torch.cumsum(cnt, 0, out=new_crow[1:])
    total = int(new_crow[-1])
    seg = torch.repeat_interleave(torch.arange(rows.numel(), device=crow.device), cnt, output_size=total)
    pos = start[seg] + torch.arange(total, device=crow.device) - new_crow[:-1][seg]
    return torch.sparse_csr_tensor(new_crow, col[pos], val[pos], size=(rows.numel(), adj.shape[1]), check_invariants=False)


def combine_layers(layers: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    """Eq. 13: ``mean`` (the text's "average", LightGCN's 1/(L+1); research notes 2.2 #1) or ``sum`` (as printed)."""
    out = layers[0].clone() if len(layers) == 1 else layers[0]
    for t in layers[1:]:  # = torch.stack(layers).sum(0) bit for bit (same order), without the [L+1, n, d] copy
        out = out + t
    if how == "mean":
        return out / len(layers)
    if how == "sum":
        return out
    raise ValueError(f"combine must be 'mean' or 'sum', got {how!r}")


def transpose_csr(adj: torch.Tensor) -> torch.Tensor:
    """The transpose of a torch sparse matrix as CSR (build once, pass as ``adj_t``)."""
    return adj.to_sparse_coo().t().coalesce().to_sparse_csr()


def csr_int32(adj: torch.Tensor) -> torch.Tensor:
    """A torch sparse CSR with int32 indices where they fit (else unchanged): torch's CPU CSR @ dense
    converts int64 indices to int32 on every call; the product is the same bit for bit (tested)."""
    crow, col = adj.crow_indices(), adj.col_indices()
    if crow.dtype == torch.int32 or max(adj.shape[0], adj.shape[1], col.numel()) >= 2**31 - 1:
        return adj
    return torch.sparse_csr_tensor(crow.to(torch.int32), col.to(torch.int32), adj.values(), size=adj.shape,
                                   check_invariants=False)


class _SpMM(torch.autograd.Function):
    """``adj @ x`` with the gradient ``adj^T @ g`` from a given CSR ``adj_t`` (constant adjacency).

    torch's own backward for CSR @ dense rebuilds the transpose on every call, which dominated
    the step time on CPU (4 s for 3 layers on 2M non-zeros, against 0.1 s with a cached transpose).
    """

    @staticmethod
    def forward(ctx, adj, adj_t, x):
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, g):
        return None, None, torch.sparse.mm(ctx.adj_t, g)


def csr_row_ids(crow: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row index of every stored entry of a CSR matrix (from its ``crow_indices``)."""
    return torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow.diff(), output_size=nnz)


class CSRMatmul(torch.autograd.Function):
    """``a @ x`` for a CSR matrix ``a`` that is not differentiated: the forward keeps ``a`` and the row
    count of ``x``; subclasses write the backward for ``x`` only."""

    @staticmethod
    def forward(ctx, a, x):
        ctx.a = a
        ctx.n = x.shape[0]
        return torch.sparse.mm(a, x)


class _RowsSpMM(CSRMatmul):
    """``sub @ x`` for a few gathered rows ``sub`` (CSR); backward scatters ``sub^T @ g`` with index_add."""

    @staticmethod
    def backward(ctx, g):
        sub = ctx.a
        crow, col, val = sub.crow_indices(), sub.col_indices(), sub.values()
        row = csr_row_ids(crow, col.numel())
        gx = torch.zeros((ctx.n, g.shape[1]), dtype=g.dtype, device=g.device)
        gx.index_add_(0, col, val.to(g.dtype)[:, None] * g[row])
        return None, gx


class ScaledAdjacency:
    """``Â = S A S + diag(c)`` as an operator, for a symmetric 0/1 structure ``A`` that stays fixed
    while a training step drops a few of its edges (DG-ENN's per-step drops, :class:`DropGraph`).

    ``Â x = s * (A (s * x) - D (s * x)) + c * x`` with ``s`` [n] the per-node scale (``1/sqrt(deg)``
    after the drop, 0 for a node left without neighbours), ``D`` the dropped directed edges
    (``dead_rows``, ``dead_cols``) and ``c`` [n] the diagonal. Equal to the normalised CSR whose values
    are ``s_r s_c`` per live edge (:meth:`DropGraph.adjacency`, :meth:`to_csr`) up to float rounding
    (the scales are applied to the vectors instead of the values), without rebuilding O(edges) values
    each step. ``A`` is its own transpose, so the backward is one more product with ``A``."""

    def __init__(self, a01: torch.Tensor, s: torch.Tensor, diag: torch.Tensor, dead_rows: torch.Tensor | None = None,
                 dead_cols: torch.Tensor | None = None, has_diag: bool | None = None):
        self.a01, self.s, self.diag = a01, s, diag
        # LightGCN's sym norm: only isolated nodes have one (``has_diag``: known by the caller)
        self.has_diag = bool(diag.any()) if has_diag is None else has_diag
        self.dead_rows, self.dead_cols = dead_rows, dead_cols
        self.shape = a01.shape
        # DG-ENN's sampled edge parts (embeddings/dg.py ``edge_parts``): one (crow, col, dead_rows, dead_cols)
        # per LightGCN layer, run by the fused stage only (:func:`lightgcn_layers`); None: ``a01`` every layer
        self.layer_parts: list[tuple] | None = None

    def _whole_graph_only(self) -> None:
        """Products outside the fused LightGCN stage know no per-layer parts: refuse an operator that has them."""
        if self.layer_parts is not None:
            raise RuntimeError("ScaledAdjacency: sampled edge parts run in the fused LightGCN stage only "
                               "(lightgcn_layers with the native kernel)")

    def native(self, x: torch.Tensor) -> bool:
        """Whether the product with ``x`` runs in the native kernel (:func:`ctrgraph.graphs.native.scaled_spmm`:
        a CPU float tensor, the kernel built, not disabled by ``CTRGRAPH_NATIVE=0``)."""
        return (x.device.type == "cpu" and x.dim() == 2 and x.dtype in (torch.float32, torch.float64)
                and self.a01.device.type == "cpu" and _native.spmm_kernel() is not None)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        """Â x; recorded by autograd when ``x`` needs a gradient (the composition :class:`_ScaledMM` fuses;
        in its forward, grad mode is off and ``s * x`` needs none)."""
        self._whole_graph_only()
        if not (x.requires_grad and torch.is_grad_enabled()) and self.native(x):  # e.g. eval's tables
            y = _native.scaled_spmm(self.a01.crow_indices(), self.a01.col_indices(), self.s, x, self.dead_rows,
                                    self.dead_cols, 0)
            return y + self.diag.to(x.dtype)[:, None] * x if self.has_diag else y
        s = self.s.to(x.dtype)[:, None]
        xs = s * x
        y = _SpMM.apply(self.a01, self.a01, xs) if xs.requires_grad else torch.sparse.mm(self.a01, xs)
        if self.dead_rows is not None and self.dead_rows.numel():
            # y - D xs, row by row in the order of the dropped edges; ``+ (-v)`` is ``index_add(alpha=-1)``
            # bit for bit (values and gradients), about 3x faster on CPU (alpha != 1 takes a slow path)
            y = y.index_add(0, self.dead_rows, xs.index_select(0, self.dead_cols).neg())
        return s * y + self.diag.to(x.dtype)[:, None] * x if self.has_diag else s * y

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        """Â x: x [n, d] -> [n, d] (differentiable in x). Without a diagonal term (LightGCN's literal
        isolated nodes) one autograd node (:class:`_ScaledMM`); with one, x would get two gradient
        terms from this product, which autograd sums with x's other gradients in its own order, so
        that case keeps the composition (same gradients bit for bit either way)."""
        self._whole_graph_only()
        if x.requires_grad and torch.is_grad_enabled() and not self.has_diag:
            return _ScaledMM.apply(x, self)
        return self._apply(x)

    def to_csr(self) -> torch.Tensor:
        """The normalised matrix as a torch sparse CSR (values ``s_r s_c``, dropped edges 0, diagonal ``c``)."""
        crow, col = self.a01.crow_indices().long(), self.a01.col_indices().long()
        row = csr_row_ids(crow, col.numel())
        val = self.s[row] * self.s[col]
        if self.dead_rows is not None and self.dead_rows.numel():
            n = self.shape[0]
            keys = row * n + col  # CSR entries are sorted by (row, col)
            val[torch.searchsorted(keys, self.dead_rows * n + self.dead_cols)] = 0.0
        ar = torch.arange(self.shape[0], device=col.device)
        coo = torch.sparse_coo_tensor(torch.stack([torch.cat([row, ar]), torch.cat([col, ar])]),
                                      torch.cat([val, self.diag.to(val.dtype)]), self.shape)
        return coo.coalesce().to_sparse_csr()


class _ScaledMM(torch.autograd.Function):
    """``Â x`` of a :class:`ScaledAdjacency` without a diagonal term as one autograd node. The backward
    is ``Â g``, computed with the operations (and the order of every sum) that autograd's own graph of
    ``s * (A (s x) - D (s x))`` runs: ``g1 = g s``, ``A g1 + (0 - D^T g1)`` (D's dropped edges come in
    both directions, so ``D^T`` is D's index pairs swapped), times ``s``: gradients equal bit for bit
    (tested), without the per-step cost of five autograd nodes."""

    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        if op.native(x):
            return _native.scaled_spmm(op.a01.crow_indices(), op.a01.col_indices(), op.s, x, op.dead_rows,
                                       op.dead_cols, 0)
        s = op.s.to(x.dtype)[:, None]
        xs = s * x
        y = torch.sparse.mm(op.a01, xs)  # a fresh tensor: the steps below may work in place
        if op.dead_rows is not None and op.dead_rows.numel():
            y.index_add_(0, op.dead_rows, xs.index_select(0, op.dead_cols).neg_())
        return y.mul_(s)

    @staticmethod
    def backward(ctx, g):
        op = ctx.op
        if op.native(g):  # D^T: the dropped pairs swapped; their sum from zero, then added (mode 1)
            return _native.scaled_spmm(op.a01.crow_indices(), op.a01.col_indices(), op.s, g.contiguous(),
                                       op.dead_cols, op.dead_rows, 1), None
        s = op.s.to(g.dtype)[:, None]
        g1 = g * s
        gx = torch.sparse.mm(op.a01, g1)
        if op.dead_rows is not None and op.dead_rows.numel():
            gx.add_(torch.zeros_like(g1).index_add_(0, op.dead_cols, g1.index_select(0, op.dead_rows).neg_()))
        return gx.mul_(s), None


class _LightGCNStage(torch.autograd.Function):
    """LightGCN's ``L`` layers and their combination (Eqs. 11, 13) on a :class:`ScaledAdjacency` without a
    diagonal term, in the native kernel, as one autograd node: ``e^(l+1) = Â e^(l)``, Eq. 13 summed in
    the order of :func:`combine_layers` (``((e0 + e1) + e2) ... [/ (L + 1)]``) in the last product's
    pass; the backward is ``g_L = g'``, ``g_l = g' + Â g_(l+1)`` with ``g' = g [/ (L + 1)]`` (Â is
    symmetric), the terms autograd would add (two per node, so their order cannot matter). Equal bit
    for bit to the layer loop over :meth:`ScaledAdjacency.mm` on the native kernel (tested); it saves
    the per-layer sums, the division and their autograd nodes (O(nodes x d) passes)."""

    @staticmethod
    def forward(ctx, x, op, n_layers, mean):
        ctx.op, ctx.n_layers, ctx.mean = op, n_layers, mean
        if op.layer_parts is not None:  # layer l on its own sampled part (drops: those inside the part)
            return _native.lightgcn_parts(op.layer_parts, op.s, x, 0, float(n_layers + 1) if mean else 0.0)
        return _native.lightgcn(op.a01.crow_indices(), op.a01.col_indices(), op.s, x, op.dead_rows, op.dead_cols, 0,
                                n_layers, float(n_layers + 1) if mean else 0.0)

    @staticmethod
    def backward(ctx, g):
        op, n_layers = ctx.op, ctx.n_layers
        if op.layer_parts is not None:  # the products in reverse layer order, each part's drops swapped
            parts = [(c, k, src, tgt) for c, k, tgt, src in reversed(op.layer_parts)]
            gx = _native.lightgcn_parts(parts, op.s, g.contiguous(), 1, float(n_layers + 1) if ctx.mean else 0.0)
            return gx, None, None, None
        gx = _native.lightgcn(op.a01.crow_indices(), op.a01.col_indices(), op.s, g.contiguous(), op.dead_cols,
                              op.dead_rows, 1, n_layers, float(n_layers + 1) if ctx.mean else 0.0)
        return gx, None, None, None


def lightgcn_layers(adj, x: torch.Tensor, n_layers: int, combine: str = "mean") -> torch.Tensor | None:
    """Eq. 13 of LightGCN's ``n_layers`` layers of ``adj`` from ``x`` in one fused node
    (:class:`_LightGCNStage`) where it applies (a :class:`ScaledAdjacency` without a diagonal term, the
    native kernel available for ``x``, at least one layer); None otherwise (callers run the layer loop)."""
    if (not isinstance(adj, ScaledAdjacency) or adj.has_diag or n_layers < 1 or combine not in ("mean", "sum")
            or not adj.native(x)):
        return None
    if adj.layer_parts is not None and len(adj.layer_parts) != n_layers:
        raise ValueError(f"lightgcn_layers: {len(adj.layer_parts)} sampled edge parts for {n_layers} layers")
    return _LightGCNStage.apply(x.contiguous(), adj, n_layers, combine == "mean")


def spmm(adj: torch.Tensor | ScaledAdjacency, x: torch.Tensor, adj_t: torch.Tensor | None = None) -> torch.Tensor:
    """``adj @ x``; with ``adj_t`` (the cached transpose, ``adj`` itself for a symmetric graph) the
    backward reuses it. Differentiable in ``x`` only when ``adj_t`` is given; otherwise torch's
    autograd (also through ``adj``'s values, e.g. attention weights). A :class:`ScaledAdjacency`
    applies itself (symmetric; ``adj_t`` is not needed)."""
    if isinstance(adj, ScaledAdjacency):
        return adj.mm(x)
    if adj_t is None or not x.requires_grad:
        return torch.sparse.mm(adj, x)
    return _SpMM.apply(adj, adj_t, x)




class _Propagator(nn.Module):
    """Shared driver: layers 0..L-1 on the whole graph, layer L only where needed, Eq. 13."""

    def __init__(self, n_layers: int, combine: str = "mean"):
        super().__init__()
        if n_layers < 0:
            raise ValueError("n_layers must be >= 0")
        self.n_layers = n_layers
        self.combine = combine

    def layer(self, l: int, agg: torch.Tensor, x_rows: torch.Tensor) -> torch.Tensor:
        """One aggregation ``e^(l+1)`` from ``agg = (A e^(l))`` at the rows computed and ``x_rows = e^(l)`` there."""
        raise NotImplementedError

    def forward(self, adj: torch.Tensor, x: torch.Tensor, rows: torch.Tensor | None = None,
                adj_t: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 13 of all nodes, or of ``rows`` only. ``adj_t``: cached transpose of ``adj`` (``adj``
        itself for symmetric graphs) for a fast backward; see :func:`spmm`."""
        if rows is None and type(self).layer is LightGCN.layer:
            fused = lightgcn_layers(adj, x, self.n_layers, self.combine)
            if fused is not None:
                return fused
        layers = [x if rows is None else x[rows]]
        h = x
        for l in range(self.n_layers):
            if rows is not None and l == self.n_layers - 1:
                sub = sparse_rows(adj.to_csr() if isinstance(adj, ScaledAdjacency) else adj, rows)
                agg = _RowsSpMM.apply(sub, h) if h.requires_grad else torch.sparse.mm(sub, h)
                layers.append(self.layer(l, agg, h[rows]))
                break
            h = self.layer(l, spmm(adj, h, adj_t), h)
            layers.append(h if rows is None else h[rows])
        return combine_layers(layers, self.combine)


class LightGCN(_Propagator):
    """LightGCN aggregator, DG-ENN Eq. 11: ``e^(l+1) = A_sym e^(l)`` (no weights, no activation)."""

    def layer(self, l, agg, x_rows):
        return agg


class GCN(_Propagator):
    """GCN aggregator, DG-ENN Eq. 9: ``e^(l+1) = sigma(W^(l) sum_{i in {h} U N_h} d(h,i) e_i^(l))``.

    Pass ``gcn_literal_norm(A)`` (centre weight 1/|N_h|) or ``kipf_norm(A)``. ``sigma`` is not
    named by the paper: LeakyReLU(0.2) by default (NGCF's choice), any callable allowed. No bias
    (Eq. 9 has none).
    """

    def __init__(self, dim: int, n_layers: int, combine: str = "mean", activation: nn.Module | None = None):
        super().__init__(n_layers, combine)
        self.w = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))
        self.act = activation if activation is not None else nn.LeakyReLU(0.2)

    def layer(self, l, agg, x_rows):
        return self.act(self.w[l](agg))


class NGCF(_Propagator):
    """NGCF aggregator, DG-ENN Eq. 10 with ``A = sym_norm`` (neighbours only):

    ``e^(l+1)_h = sigma(W1 e_h + sum_{i in N_h} d(h,i) (W1 e_i + W2 (e_h * e_i)))``
    ``        = sigma(W1 (e_h + (A e)_h) + W2 (e_h * (A e)_h))``. LeakyReLU(0.2) by default, no bias.
    """

    def __init__(self, dim: int, n_layers: int, combine: str = "mean", activation: nn.Module | None = None):
        super().__init__(n_layers, combine)
        self.w1 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))
        self.w2 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))
        self.act = activation if activation is not None else nn.LeakyReLU(0.2)

    def layer(self, l, agg, x_rows):
        return self.act(self.w1[l](x_rows + agg) + self.w2[l](x_rows * agg))


AGGREGATORS = {"lightgcn": LightGCN, "gcn": GCN, "ngcf": NGCF}


def make_propagator(kind: str, dim: int, n_layers: int, combine: str = "mean") -> _Propagator:
    """``lightgcn`` | ``gcn`` | ``ngcf`` -> a module owning the parameters of one graph."""
    if kind == "lightgcn":
        return LightGCN(n_layers, combine)
    if kind in AGGREGATORS:
        return AGGREGATORS[kind](dim, n_layers, combine)
    raise ValueError(f"unknown aggregator {kind!r}; known: {sorted(AGGREGATORS)}")


def edge_softmax(rows: torch.Tensor, scores: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Softmax of edge ``scores`` ([E] or [E, H]) over the edges that share a row (destination).

    Used for attention over sparse edges (Res-embedding g_ATT Eq. 8, GAT-style layers). Max-shifted
    for stability; rows without edges simply have no entries.
    """
    shape = (n_rows,) + tuple(scores.shape[1:])
    idx = rows.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    mx = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    mx = mx.scatter_reduce(0, idx, scores, reduce="amax", include_self=True)
    ex = torch.exp(scores - mx.gather(0, idx))
    den = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add_(0, rows, ex)
    return ex / den.gather(0, idx)
