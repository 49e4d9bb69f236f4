"""Cross-batch negative sampling for EGIN's graph loss (Peng et al., §3.2): a FIFO queue of entity
ids per entity type and the sampled-softmax loss of Algorithm 1.

The queue stores ids, not vectors (research notes §3.2 #5): negatives are embedded with the current
table, so they are fresh and receive gradients. Every id pushed is one occurrence of the entity in a
batch, so a uniform draw from the queue approximates the unigram (frequency-proportional) negative
distribution; the queue is capped at the vocabulary size on small data. Before anything was pushed,
negatives are uniform over the vocabulary (ids 2.., past padding 0 and out-of-vocabulary 1). The
buffers are part of the model's state, so a resumed run continues with the same queue.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graphs.native import search_graph_kernel


class IdQueue(nn.Module):
    """A ring buffer of ``size`` entity ids of a vocabulary of ``vocab`` ids."""

    def __init__(self, size: int, vocab: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.vocab = int(vocab)
        self.register_buffer("ids", torch.zeros(int(size), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, ids: torch.Tensor) -> None:
        """Append ``ids`` (any shape; 0 = padding is skipped), overwriting the oldest (CPU integer ids:
        one pass of the native kernel, the same queue)."""
        if ids.device.type == "cpu" and self.ids.device.type == "cpu" and ids.dtype in (torch.int32, torch.int64):
            ext = search_graph_kernel()
            if ext is not None:
                ext.queue_push(self.ids, self.ptr, self.filled, ids)
                return
        ids = ids.reshape(-1)
        ids = ids[ids > 0].long()
        size = self.ids.numel()
        if ids.numel() >= size:
            ids = ids[-size:]
        n = ids.numel()
        if n == 0:
            return
        p = int(self.ptr)
        first = min(n, size - p)
        self.ids[p:p + first] = ids[:first]
        if n > first:
            self.ids[: n - first] = ids[first:]
        self.ptr.fill_((p + n) % size)
        self.filled.fill_(min(size, int(self.filled) + n))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` ids drawn uniformly (with replacement) from the queue [n]."""
        filled = int(self.filled)
        if filled == 0:
            lo = 2 if self.vocab > 2 else 1
            return torch.randint(lo, max(self.vocab, lo + 1), (n,), device=self.ids.device)
        return self.ids[torch.randint(0, filled, (n,), device=self.ids.device)]


def sampled_softmax_loss(anchor: torch.Tensor, positive: torch.Tensor, positive_ids: torch.Tensor,
                         negatives: torch.Tensor, negative_ids: torch.Tensor) -> torch.Tensor:
    """L_G of §3.2, mean over the pairs: -log exp(e_a·e_p) / (exp(e_a·e_p) + Σ_n exp(e_a·e_n)).

    anchor, positive [P, d]; negatives [N, d] shared by the batch's pairs of this entity type (ids
    ``negative_ids`` [N]); a negative whose id equals the pair's positive id (an accidental hit) is
    left out of that pair's denominator. No pairs: a zero that still reaches the tables."""
    if anchor.shape[0] == 0:
        return (anchor.sum() + positive.sum()) * 0.0
    pos = (anchor * positive).sum(-1, keepdim=True)  # [P, 1]
    neg = anchor @ negatives.T  # [P, N]
    neg = neg.masked_fill(negative_ids.unsqueeze(0) == positive_ids.unsqueeze(1), float("-inf"))
    return (torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1) - pos.squeeze(1)).mean()


def _anchor_lse(A: torch.Tensor, a: torch.Tensor, neg_e: torch.Tensor):
    """log Σ_n e^{A[r]·E_n} for the anchor rows: every row of A when most of them are used, else the
    rows some pair uses -> (softmax over the negatives [R, N], lse [R], rows [R] or None, each
    pair's row [P]). The softmax is the backward's d lse / d logits, kept from the forward's exponentials."""
    V = A.shape[0]
    if V <= 4 * a.numel():  # the rows used, found by counting (O(P + V), no sort); sorted as torch.unique's
        used = torch.bincount(a, minlength=V) > 0
        rows = used.nonzero().squeeze(1)
        if 5 * rows.numel() > 4 * V:  # nearly every row used: the whole table, no row gathers
            rows, inv, logits = None, a, A @ neg_e.T
        else:
            inv = torch.cumsum(used, 0).sub_(1).index_select(0, a)  # each id's rank among the used rows
            logits = A.index_select(0, rows) @ neg_e.T
    else:
        rows, inv = torch.unique(a, return_inverse=True)
        logits = A.index_select(0, rows) @ neg_e.T
    m = logits.amax(1, keepdim=True)
    e = logits.sub_(m).exp_()  # in place: the logits themselves are not needed again
    total = e.sum(1, keepdim=True)
    return e.div_(total), (m + total.log()).squeeze(1), rows, inv


def _hit_softplus(z: torch.Tensor, hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(z, c) = log(1 - c + e^z) and df/dz per pair (see :class:`_PairSoftplus`): softplus and
    sigmoid without hits; z + log1p((1 - c) e^{-z}) and 1 / (1 + (1 - c) e^{-z}) with c >= 1 hits."""
    f, s = torch.nn.functional.softplus(z), torch.sigmoid(z)
    h = hits.nonzero().squeeze(1)
    if h.numel():
        zh = z.index_select(0, h)
        t = ((1.0 - hits.index_select(0, h).to(z.dtype)) * torch.exp(-zh)).clamp_min(-1.0 + 1e-6)  # >= 1/c - 1
        f = f.index_copy(0, h, zh + torch.log1p(t))
        s = s.index_copy(0, h, 1.0 / (1.0 + t))
    return f, s


def _lse_backward(A, rows, inv, probs, neg_e, s, gA):
    """Adds the gradient of Σ_pairs s·lse[row] to gA (the anchor rows) and returns it for neg_e
    (``probs``: the softmax over the negatives from :func:`_anchor_lse`)."""
    glse = probs.new_zeros(probs.shape[0]).index_add_(0, inv, s)
    dlog = probs * glse.unsqueeze(1)  # [R, N]
    if rows is None:
        gA += dlog @ neg_e
        return dlog.T @ A
    gA.index_add_(0, rows, dlog @ neg_e)
    return dlog.T @ A.index_select(0, rows)


class _PairSoftplus(torch.autograd.Function):
    """Σ_pairs f(z_ab, c_ab) [+ Σ_pairs f(z_ba, c_ba)] with z_ab = lse_n(A[a]·E^B_n) − A[a]·B[b] over
    the N negatives of B's type and c_ab the number of them with the positive's id b (accidental
    hits); with ``negA_e`` also the reverse direction, anchor B[b] against the negatives of A's type,
    which shares the pair's dot product, gathers and scatters (and, when both directions read one
    table and one negative set, ``shared``, the anchors' logits against the negatives). Hand-written
    backward: no [P, N] tensor, the [P, d] gathers kept once. The PyTorch path; on float32 CPU tables
    where the native kernel is built (:func:`ctrgraph.graphs.native.search_graph_kernel`;
    ``CTRGRAPH_NATIVE=0`` turns it off) :class:`_FusedPairSoftmax` computes the same in C++.

    Leaving the c hits out of the denominator: since a hit's vector is the positive's own row,
    -log(e^{a·p} / (e^{a·p} + S - c e^{a·p})) = log(1 - c + e^z) =: f(z, c), S = Σ_n e^{a·e_n};
    f = softplus(z) without hits, z + log1p((1 - c) e^{-z}) with hits (there e^z >= c, so the argument
    stays >= 1/c and nothing cancels catastrophically), and df/dz = 1 / (1 + (1 - c) e^{-z})."""

    @staticmethod
    def forward(ctx, A, a, B, b, negB_e, hits_ab, negA_e, hits_ba, shared):
        ae, be = A.index_select(0, a), B.index_select(0, b)
        dot = (ae * be).sum(1)
        P = a.numel()
        ctx.shared = shared  # one table and one negative set both ways (i2i, q2q): one logits matrix
        probs1, lse1, rows1, inv1 = _anchor_lse(A, torch.cat([a, b]) if shared else a, negB_e)
        f, s1 = _hit_softplus(lse1.index_select(0, inv1[:P]) - dot, hits_ab)
        total, probs2, rows2, inv2, s2 = f.sum(), None, None, None, None
        if shared:
            f2, s2 = _hit_softplus(lse1.index_select(0, inv1[P:]) - dot, hits_ba)
            total = total + f2.sum()
        elif negA_e is not None:
            probs2, lse2, rows2, inv2 = _anchor_lse(B, b, negA_e)
            f2, s2 = _hit_softplus(lse2.index_select(0, inv2) - dot, hits_ba)
            total = total + f2.sum()
        ctx.save_for_backward(A, a, B, b, ae, be, negB_e, probs1, rows1, inv1, s1, negA_e, probs2, rows2, inv2, s2)
        return total

    @staticmethod
    def backward(ctx, g):
        A, a, B, b, ae, be, negB_e, probs1, rows1, inv1, s1, negA_e, probs2, rows2, inv2, s2 = ctx.saved_tensors
        s1 = s1 * g
        sdot, g_negA = s1, None
        if s2 is not None:
            s2 = s2 * g
            sdot = s1 + s2
        gA, gB = torch.zeros_like(A), torch.zeros_like(B)
        if ctx.shared:
            g_negB = _lse_backward(A, rows1, inv1, probs1, negB_e, torch.cat([s1, s2]), gA)
        else:
            g_negB = _lse_backward(A, rows1, inv1, probs1, negB_e, s1, gA)
            if negA_e is not None:
                g_negA = _lse_backward(B, rows2, inv2, probs2, negA_e, s2, gB)
        gA.index_add_(0, a, be * (-sdot).unsqueeze(1))  # z = lse - a·b in both directions
        gB.index_add_(0, b, ae * (-sdot).unsqueeze(1))
        return gA, None, gB, None, g_negB, None, g_negA, None, None


class _FusedPairSoftmax(torch.autograd.Function):
    """The native path of :class:`_PairSoftplus` (``csrc/search_graph.cpp``, float32 CPU tables):
    the same sum Σ_pairs f(z_ab, c_ab) [+ f(z_ba, c_ba)], forward and backward each one C++ call
    that takes the tables and ids (negatives gathered and their gradient scattered inside) and keeps
    only the anchors' softmax over the negatives [R, N] and df/dz [P] for the backward. ``mode`` 0:
    one way; 1: two ways with one table and one negative set (one softmax for the union of a and
    b); 2: two ways, B[b] also against the negatives ``neg_a`` of A's type."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, a: torch.Tensor, B: torch.Tensor, b: torch.Tensor, neg_b: torch.Tensor,
                neg_a: torch.Tensor, mode: int) -> torch.Tensor:
        ext = search_graph_kernel()
        a, b, neg_b, neg_a = (x.long().contiguous() for x in (a, b, neg_b, neg_a))
        total, *state = ext.pair_softmax_forward(A, a, B, b, neg_b, neg_a, mode)
        ctx.mode, ctx.same = mode, A is B
        ctx.save_for_backward(A, a, B, b, neg_b, neg_a, *state)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        A, a, B, b, neg_b, neg_a, *state = ctx.saved_tensors
        gA, gB = search_graph_kernel().pair_softmax_backward(g, A, a, B, b, neg_b, neg_a, ctx.mode, ctx.same, *state)
        return gA, None, (None if ctx.same else gB), None, None, None, None


def _native(*tables: torch.Tensor) -> object | None:
    """The compiled kernel where the fused loss applies (float32 CPU tables), else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tables):
        return search_graph_kernel()
    return None


def _hits(neg_ids: torch.Tensor, vocab: int, pos_ids: torch.Tensor) -> torch.Tensor:
    """How many of the negatives carry each pair's positive id [P] (one bincount)."""
    return torch.bincount(neg_ids, minlength=vocab).index_select(0, pos_ids)


def table_softmax_loss(anchor_table: torch.Tensor, anchor_ids: torch.Tensor, pos_table: torch.Tensor,
                       pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """L_G of §3.2 for pairs given by ids, mean over the pairs: anchors ``anchor_table[anchor_ids]``,
    positives ``pos_table[pos_ids]`` [P], negatives ``pos_table[neg_ids]`` [N] (the positive's type).
    Equal to :func:`sampled_softmax_loss` (tested, gradients included) in one fused function: each
    pair's accidental hits (negatives with its positive's id, counted by one ``bincount``) are taken
    out of its denominator in closed form (see :class:`_PairSoftplus`)."""
    P = anchor_ids.numel()
    if P == 0:
        return (anchor_table.sum() + pos_table.sum()) * 0.0
    if _native(anchor_table, pos_table) is not None:
        return _FusedPairSoftmax.apply(anchor_table, anchor_ids, pos_table, pos_ids, neg_ids, neg_ids, 0) / P
    neg_e = pos_table.index_select(0, neg_ids)
    return _PairSoftplus.apply(anchor_table, anchor_ids, pos_table, pos_ids, neg_e,
                               _hits(neg_ids, pos_table.shape[0], pos_ids), None, None, False) / P


def two_way_softmax_loss(A: torch.Tensor, a: torch.Tensor, B: torch.Tensor, b: torch.Tensor,
                         neg_a: torch.Tensor, neg_b: torch.Tensor) -> torch.Tensor:
    """Both directions of each pair (``A[a]``, ``B[b]``) [P]: ``0.5 (table_softmax_loss(A, a, B, b,
    neg_b) + table_softmax_loss(B, b, A, a, neg_a))`` (tested), in one pass that computes each pair's
    dot product, gathers and gradient scatters once. An undirected edge set given once per edge (i2i
    windows, q2q sessions: :mod:`ctrgraph.graphs.search_pairs` with ``both=False``) gives exactly the
    mean over its directed edges; EGIN's q2i term is this by definition."""
    P = a.numel()
    if P == 0:
        return (A.sum() + B.sum()) * 0.0
    shared = A is B and neg_a is neg_b
    if _native(A, B) is not None:
        return _FusedPairSoftmax.apply(A, a, B, b, neg_b, neg_a, 1 if shared else 2) / (2 * P)
    negB_e = B.index_select(0, neg_b)
    negA_e = None if shared else A.index_select(0, neg_a)
    total = _PairSoftplus.apply(A, a, B, b, negB_e, _hits(neg_b, B.shape[0], b), negA_e, _hits(neg_a, A.shape[0], a),
                                shared)
    return total / (2 * P)
