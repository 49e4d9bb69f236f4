"""ComiRec-SA (Cen et al., Controllable Multi-Interest Framework for Recommendation, KDD 2020),
the self-attentive variant of ComiRec's multi-interest extraction module (Sec. 3.3).

ComiRec is a retrieval model (sampled softmax over all items); DemiNet (Wang et al., AAAI 2022)
compares with it as a CTR model without saying how. Our adaptation keeps the interest extraction
and replaces the retrieval head by the CTR tower:

1. Behaviour vectors: per behaviour group, H = [e_1 .. e_n], e_i the concatenation of the group's
   embedded sequences that have a ``target`` (item ‖ category), size D.
2. Trainable positional embeddings are added to H (Sec. 3.3, ``add_pos``).
3. K attention distributions over the behaviours (Eq. 6):
   A = softmax(W_2^T tanh(W_1 H))^T, W_1 of width ``attention_mult`` x D (4 x, the authors' code's
   ``hidden_size * 4``), W_2 with K outputs, softmax over the valid positions (padding masked).
4. Interests V_u = H A (Eq. 7): K vectors of size D.
5. Target-aware readout: ``readout="argmax"`` (default) = ComiRec's training readout (Eq. 8),
   v_u = V_u[:, argmax_k(V_u^T e_t)] with the candidate's vector e_t (concatenation of the
   sequences' ``target`` fields, multi-valued targets mean-pooled) in the role of the target item;
   ``"attention"`` = softmax_k(pow(V_u^T e_t, p)) weighting (MIND's label-aware attention).
6. Tower: [non-sequence fields' embeddings (user, candidate, attributes, context), v_u per group,
   mean-pooled group members without a target] -> MLP -> one logit.

Choices the paper leaves open (config values): the positional embedding enters the attention
logits only and V_u = H A uses the behaviour vectors without it, as the authors' code
(``position_in_interests=true`` uses H + P in Eq. 7 too); positions count back from the most
recent behaviour (``positions="recent"``; ``"start"`` = column index as the authors' code on its
post-padded sequences), one embedding per position up to the field's ``max_len``, initialised
N(0, 1e-4) as the embedding tables (docs/models.md); W_1 has a bias (authors' code), W_2 none (a
bias per head cancels in the softmax over positions). An empty history gives zero interests.
Tests: tests/models/test_multi_interest.py.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..layers.multi_interest import (
    align,
    masked_softmax,
)
from .base import TowerConfig
from .interest_tower import InterestTowerModel


class ComiRecSAConfig(TowerConfig):
    interests: int = Field(4, ge=1)  # K
    attention_mult: int = Field(4, ge=1)  # width of W_1 = attention_mult x D
    add_pos: bool = True
    position_in_interests: bool = False
    readout: Literal["argmax", "attention"] = "argmax"
    pow_p: float = Field(1.0, ge=0.0)
    positions: Literal["recent", "start"] = "recent"


class SelfAttentiveInterests(nn.Module):
    """Eq. 6-7 on one behaviour group: e [B, L, D], mask [B, L] -> V_u [B, K, D]."""

    def __init__(self, dim: int, max_len: int, cfg: ComiRecSAConfig):
        super().__init__()
        self.max_len, self.origin = max_len, cfg.positions
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 1e-4) if cfg.add_pos else None
        self.w1 = nn.Linear(dim, cfg.attention_mult * dim)
        self.w2 = nn.Linear(cfg.attention_mult * dim, cfg.interests, bias=False)
        self.pos_in_values = cfg.position_in_interests

    def forward(self, e: torch.Tensor, mask: torch.Tensor, return_weights: bool = False):
        h, m = align(e, mask, self.origin, self.max_len)  # column p = position p
        hp = h if self.pos is None else h + self.pos[: h.shape[1]]
        logits = self.w2(torch.tanh(self.w1(hp))).transpose(1, 2)  # [B, K, P]
        A = masked_softmax(logits, m.unsqueeze(1).expand_as(logits), dim=2)
        V = A @ (hp if self.pos_in_values else h)
        return (V, A) if return_weights else V


class ComiRecSA(InterestTowerModel):
    name = "comirec-sa"
    Config = ComiRecSAConfig
    presets = {}
    paper = "Cen et al., Controllable Multi-Interest Framework for Recommendation, KDD 2020 (ComiRec-SA)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.build_tower(spec, cfg, d, lambda att: SelfAttentiveInterests(len(att) * d, att[0].max_len, cfg))
