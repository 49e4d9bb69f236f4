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
        """Append ``ids`` (any shape; 0 = padding is skipped), overwriting the oldest."""
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


class _PairSoftplus(torch.autograd.Function):
    """Σ_pairs softplus(lse_n(A[a]·E_n) − A[a]·B[b]) with a hand-written backward (no [P, N] tensor,
    the [P, d] gathers kept once): the non-hit pairs of :func:`table_softmax_loss`."""

    @staticmethod
    def forward(ctx, A, a, B, b, neg_e):
        ae, be = A.index_select(0, a), B.index_select(0, b)
        if A.shape[0] <= a.numel():  # every anchor row once
            rows, inv = None, a
            logits = A @ neg_e.T  # [V_a, N]
        else:  # only the rows some pair uses
            rows, inv = torch.unique(a, return_inverse=True)
            logits = A.index_select(0, rows) @ neg_e.T
        lse = torch.logsumexp(logits, 1)
        z = lse.index_select(0, inv) - (ae * be).sum(1)  # log(Σ_n e^{a·n}) − a·p
        ctx.save_for_backward(A, a, B, b, neg_e, ae, be, logits, lse, z, inv, *([rows] if rows is not None else []))
        return torch.nn.functional.softplus(z).sum()

    @staticmethod
    def backward(ctx, g):
        A, a, B, b, neg_e, ae, be, logits, lse, z, inv, *rows = ctx.saved_tensors
        s = torch.sigmoid(z) * g  # d loss / d z per pair
        gA, gB = torch.zeros_like(A), torch.zeros_like(B)
        gA.index_add_(0, a, be * (-s).unsqueeze(1))  # z = lse - a·p
        gB.index_add_(0, b, ae * (-s).unsqueeze(1))
        glse = torch.zeros_like(lse).index_add_(0, inv, s)
        dlog = torch.softmax(logits, 1).mul_(glse.unsqueeze(1))  # [V_a or U, N]
        ga_rows = dlog @ neg_e
        if rows:
            gA.index_add_(0, rows[0], ga_rows)
        else:
            gA += ga_rows
        g_neg = dlog.T @ (A.index_select(0, rows[0]) if rows else A)
        return gA, None, gB, None, g_neg


def table_softmax_loss(anchor_table: torch.Tensor, anchor_ids: torch.Tensor, pos_table: torch.Tensor,
                       pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """L_G of §3.2 for pairs given by ids, mean over the pairs: anchors ``anchor_table[anchor_ids]``,
    positives ``pos_table[pos_ids]`` [P], negatives ``pos_table[neg_ids]`` [N] (the positive's type).
    Equal to :func:`sampled_softmax_loss` (tested, gradients included): the pairs whose positive is
    not among the negatives run in one fused function (softplus(lse − a·p), a hand-written backward);
    the few with an accidental hit take the masked per-pair path."""
    P = anchor_ids.numel()
    if P == 0:
        return (anchor_table.sum() + pos_table.sum()) * 0.0
    neg_e = pos_table.index_select(0, neg_ids)
    srt = torch.sort(neg_ids).values
    hits = torch.searchsorted(srt, pos_ids, right=True) > torch.searchsorted(srt, pos_ids)
    ok = (~hits).nonzero().squeeze(1)
    total = _PairSoftplus.apply(anchor_table, anchor_ids.index_select(0, ok), pos_table, pos_ids.index_select(0, ok),
                                neg_e)
    if hits.any():  # the masked per-pair form, on the few pairs with an accidental hit
        h = hits.nonzero().squeeze(1)
        total = total + h.numel() * sampled_softmax_loss(anchor_table.index_select(0, anchor_ids[h]),
                                                         pos_table.index_select(0, pos_ids[h]), pos_ids[h],
                                                         neg_e, neg_ids)
    return total / P
