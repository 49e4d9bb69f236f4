"""InterHAt (Li et al., Interpretable Click-Through Rate Prediction through Hierarchical
Attention, WSDM 2020).

Nodes are the F fields (multi-valued fields and behaviour sequences mean-pooled, padding masked).

1. Transformer (Sec. 3.2): multi-head self-attention H_h = softmax(Q_h K_h^T / sqrt(d_K)) V_h,
   heads concatenated, position-wise feed-forward network back to d, residual and LayerNorm:
   X_1 = LayerNorm(X_0 + FFN([H_1 (+) ... (+) H_h])).
2. Hierarchical attention (Sec. 3.3), for orders i = 1..k (a loop over orders, fields batched):
   alpha_i^(j) = softmax_j(c_i^T ReLU(W_i x_i^(j) + b_i)),  u_i = sum_j alpha_i^(j) x_i^(j),
   x_{i+1}^(j) = u_i * x_1^(j) + x_i^(j)    (u_i is the order-i cross feature).
3. The same attention over the orders: u_f = sum_i beta_i u_i, then an MLP -> logit.

Choices: the FFN width (``ffn_dim``), the attention size (``attention_dim``) and the output MLP are
not fixed by the paper; the LayerNorm residual around the FFN follows the transformer the paper
builds on; k = ``order`` = 3, 2 heads of d_K = 16.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.self_attention import MultiHeadSelfAttention
from .base import CTRModel, TowerConfig, tower


class InterHAtConfig(TowerConfig):
    order: int = 3
    heads: int = 2
    head_dim: int = 16
    ffn_dim: int = 64
    attention_dim: int = 32
    hidden: list[int] = [64]
    seq_pool: str = "mean"


class _FieldAttention(nn.Module):
    """Attentional aggregation softmax_j(c^T ReLU(W x_j + b)) over dim 1 of [B, N, d] -> [B, d]."""

    def __init__(self, dim: int, attention_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.context(torch.relu(self.proj(x))), dim=1)  # [B, N, 1]
        return (w * x).sum(dim=1)


class InterHAt(CTRModel):
    name = "interhat"
    Config = InterHAtConfig
    presets = {"paper": {}}
    paper = "Li et al., Interpretable Click-Through Rate Prediction through Hierarchical Attention, WSDM 2020"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.attn = MultiHeadSelfAttention(d, cfg.head_dim, cfg.heads, residual=False, scale=True, relu=False)
        self.ffn = nn.Sequential(nn.Linear(self.attn.out_dim, cfg.ffn_dim), nn.ReLU(), nn.Linear(cfg.ffn_dim, d))
        self.norm = nn.LayerNorm(d)
        self.orders = nn.ModuleList([_FieldAttention(d, cfg.attention_dim) for _ in range(cfg.order)])
        self.final = _FieldAttention(d, cfg.attention_dim)
        self.mlp = tower(cfg, d)

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        x1 = self.norm(E + self.ffn(self.attn(E)))
        x, us = x1, []
        for att in self.orders:
            u = att(x)  # [B, d]
            us.append(u)
            x = u.unsqueeze(1) * x1 + x
        uf = self.final(torch.stack(us, dim=1))
        return self.output(self.mlp(uf).squeeze(-1), eb)
