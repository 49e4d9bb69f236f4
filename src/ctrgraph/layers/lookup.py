"""Embedding-table lookup with a cheaper backward than ``torch.nn.functional.embedding`` on CPU.

``F.embedding``'s CPU backward (``embedding_dense_backward``) sorts the indices of a large batch and
sums each id's rows segment by segment (or, for <= 3000 indices, adds row by row). ``index_add_``
accumulates the same rows in the same order, so the gradient is bit-identical (tested on random
tables, ids and thread counts), in about 40 % of the time for a [1024, 50] history. The forward is
the same gather (``index_select``).
"""
from __future__ import annotations

import torch


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
        flat = ids.reshape(-1)
        ctx.save_for_backward(flat)
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        return weight.index_select(0, flat).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (flat,) = ctx.saved_tensors
        gw = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
        gw.index_add_(0, flat, grad.reshape(-1, ctx.shape[1]))
        if ctx.padding_idx >= 0:
            gw[ctx.padding_idx] = 0  # as nn.Embedding(padding_idx=...): the padding row never learns
        return gw, None, None


def table_lookup(weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """``weight[ids]`` -> ids.shape + [d]; equal to ``F.embedding(ids, weight, padding_idx)``, values and
    gradients. Sparse-gradient tables, scripting and tracing for export keep ``F.embedding``."""
    if weight.is_sparse or not weight.requires_grad or torch.jit.is_scripting() or torch.jit.is_tracing() \
            or not torch.is_grad_enabled():
        return torch.nn.functional.embedding(ids, weight, padding_idx)
    pad = -1 if padding_idx is None else padding_idx
    out = _Lookup.apply(weight, ids, pad)
    if ids.dim() == 2:
        # where the rows came from, for pooling that writes the table's gradient itself
        # (:func:`ctrgraph.layers.pooling.pooled_field`): the table through an identity node made
        # now, so that its gradient reaches the table at the point of the backward where this
        # lookup's own would (the order in which a table's gradients are summed stays the same);
        # the version spots an in-place change of the rows
        out._ctrgraph_rows = (_TableHandle.apply(weight), ids, pad, out._version)
    return out


class _TableHandle(torch.autograd.Function):
    """The table itself (a view), for a gradient computed elsewhere to enter the graph here."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


def lookup_source(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(table, ids, padding_idx or -1) of ``rows`` returned by :func:`table_lookup` through its own
    Function and not modified in place since; None for any other tensor."""
    src = getattr(rows, "_ctrgraph_rows", None)
    if src is None or src[3] != rows._version:
        return None
    return src[0], src[1], src[2]


def unique_rows(flat: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct ids, each id's position among them) of the int64 ids ``flat`` < ``n_rows``,
    as ``torch.unique(flat, sorted=True, return_inverse=True)``. Where the table is small against the
    ids (n_rows <= 8 x their number: a history's items) by marking the rows (a byte per row, no sort);
    otherwise by torch's sort, whose cost follows the ids, not the table."""
    if n_rows <= 8 * flat.numel():
        mark = torch.zeros(n_rows, dtype=torch.bool, device=flat.device).index_fill_(0, flat, True)
        uniq = mark.nonzero().squeeze(1)
        pos = torch.empty(n_rows, dtype=torch.int64, device=flat.device)
        pos.index_copy_(0, uniq, torch.arange(uniq.numel(), device=flat.device))
        return uniq, pos.index_select(0, flat)
    return torch.unique(flat, sorted=True, return_inverse=True)


def row_sparse_grad(flat: torch.Tensor, rows: torch.Tensor, shape: torch.Size, padding_idx: int = -1) -> torch.Tensor:
    """The gradient of a table whose rows ``flat`` received ``rows`` [n, d], as a coalesced sparse COO
    tensor (distinct sorted row ids, each id's rows summed in input order); rows of ``padding_idx`` are
    left out, as ``nn.Embedding(sparse=True)`` leaves them."""
    uniq, inv = unique_rows(flat, shape[0])
    vals = rows.new_zeros((uniq.numel(), *rows.shape[1:])).index_add_(0, inv, rows)
    if padding_idx >= 0:
        keep = uniq != padding_idx
        if not bool(keep.all()):
            uniq, vals = uniq[keep], vals[keep]
    return torch.sparse_coo_tensor(uniq.unsqueeze(0), vals, shape, is_coalesced=True, check_invariants=False)


class _SparseLookup(_Lookup):
    """_Lookup's forward; the backward gives the row-summed sparse gradient."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (flat,) = ctx.saved_tensors
        return row_sparse_grad(flat, grad.reshape(-1, ctx.shape[1]), ctx.shape, ctx.padding_idx), None, None


def embedding_rows(emb: torch.nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``emb(ids)`` through :func:`table_lookup` (the same values and gradients, padding row included,
    with the cheaper CPU backward). A sparse-gradient table (``embedding.sparse``) on CPU gets its
    gradient from :func:`row_sparse_grad` (already coalesced: each used row once), the values of
    ``nn.Embedding(sparse=True)``'s uncoalesced one summed; elsewhere (CUDA, scripting, tracing, no
    gradient) its own lookup."""
    if not emb.sparse:
        return table_lookup(emb.weight, ids, emb.padding_idx)
    if (ids.device.type != "cpu" or not emb.weight.requires_grad or not torch.is_grad_enabled()
            or torch.jit.is_scripting() or torch.jit.is_tracing() or emb.max_norm is not None):
        return emb(ids)
    pad = -1 if emb.padding_idx is None else emb.padding_idx
    return _SparseLookup.apply(emb.weight, ids.long(), pad)


class LazyRows:
    """The rows ``weight[ids]`` of a [B, L] lookup not computed yet: :meth:`rows` computes them (as
    :func:`table_lookup`), :func:`ctrgraph.layers.pooling.pooled_rows` pools them without the
    [B, L, d] gather. The table enters the graph through an identity node made here, so that either
    way its gradient reaches the table where this lookup's own would (the order in which a table's
    gradients are summed stays that of an eager lookup)."""

    __slots__ = ("handle", "ids", "padding_idx", "shape", "sparse", "_rows")

    def __init__(self, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None, sparse: bool = False):
        self.sparse = sparse  # the table's gradient row-sparse (embedding.sparse: :func:`row_sparse_grad`)
        self.handle = _TableHandle.apply(weight)
        self.ids = ids
        self.padding_idx = -1 if padding_idx is None else padding_idx
        self.shape = (*ids.shape, weight.shape[1])
        self._rows: torch.Tensor | None = None

    def dim(self) -> int:
        return len(self.shape)

    def rows(self) -> torch.Tensor:
        if self._rows is None:
            self._rows = (_SparseLookup if self.sparse else _Lookup).apply(self.handle, self.ids, self.padding_idx)
        return self._rows


def lazy_ok(weight: torch.Tensor, ids: torch.Tensor) -> bool:
    """Whether a lookup of ``ids`` in ``weight`` may be left to :class:`LazyRows` (a dense CPU table
    that learns, [B, L] int64 ids, gradients on, not traced or scripted)."""
    return (ids.dim() == 2 and ids.dtype == torch.int64 and weight.device.type == "cpu" and not weight.is_sparse
            and weight.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting())
