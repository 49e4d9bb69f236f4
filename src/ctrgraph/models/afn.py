"""AFN and AFN+ (Cheng et al., Adaptive Factorization Network: Learning Adaptive-Order Feature
Interactions, AAAI 2020).

Logarithmic transformation layer (Eq. 4-6): each of N logarithmic neurons computes, per embedding
dimension, y_j = exp(sum_i w_ij ln|e_i|) = prod_i |e_i|^{w_ij}, an interaction of adaptive
(learned, possibly fractional) order; |e| is clamped at ``eps`` so ln is finite (a zero vector from
an empty history maps to ln(eps)). The N x d outputs are flattened into an MLP (Eq. 7-8).
AFN+ (``ensemble=true``, Sec. 3.4) adds a DNN over the flattened embeddings and combines the two
logits with learned weights: y = w_1 y_AFN + w_2 y_DNN + b.

Choices: BatchNorm on the log-embeddings and on the exponentiated neurons (``batch_norm``, the
authors' code does this; it keeps exp() in range), neuron weights N(0, 0.1). The AFN+ DNN shares
the model's embeddings (the authors' code gives it its own table; here the provider owns all
feature embeddings, so that graph providers can wrap AFN). ``log_neurons`` defaults to 400 (cheap
on 2 cores; the paper tunes it per data set), MLP [400, 400, 400].
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.mlp import MLP
from .base import CTRModel, TowerConfig, tower


class AFNConfig(TowerConfig):
    log_neurons: int = 400
    hidden: list[int] = [400, 400, 400]
    batch_norm_log: bool = True
    eps: float = 1e-7
    ensemble: bool = False  # AFN+
    dnn_hidden: list[int] = [400, 400, 400]
    seq_pool: str = "mean"


class AFN(CTRModel):
    name = "afn"
    Config = AFNConfig
    presets = {"paper": {}, "plus": {"ensemble": True}}
    paper = "Cheng et al., Adaptive Factorization Network: Learning Adaptive-Order Feature Interactions, AAAI 2020"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        F, d = len(spec.features), embedding.dim
        self.log_weight = nn.Parameter(torch.randn(F, cfg.log_neurons) * 0.1)
        self.log_bias = nn.Parameter(torch.zeros(cfg.log_neurons, 1))
        self.bn_in = nn.BatchNorm1d(F) if cfg.batch_norm_log else None
        self.bn_out = nn.BatchNorm1d(cfg.log_neurons) if cfg.batch_norm_log else None
        self.mlp = tower(cfg, cfg.log_neurons * d)
        if cfg.ensemble:
            self.dnn = MLP(F * d, cfg.dnn_hidden, cfg.activation, cfg.dropout, cfg.batch_norm)
            self.combine = nn.Linear(2, 1)

    def output_bias(self):
        return self.combine.bias if self.cfg.ensemble else super().output_bias()

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)  # [B, F, d]
        L = torch.log(E.abs().clamp_min(self.cfg.eps))
        if self.bn_in is not None:
            L = self.bn_in(L)
        Y = torch.exp(torch.einsum("bfd,fn->bnd", L, self.log_weight) + self.log_bias)  # [B, N, d]
        if self.bn_out is not None:
            Y = self.bn_out(Y)
        y = self.mlp(Y.flatten(1)).squeeze(-1)
        if self.cfg.ensemble:
            y = self.combine(torch.stack([y, self.dnn(E.flatten(1)).squeeze(-1)], dim=-1)).squeeze(-1)
        return self.output(y, eb)


class AFNPlusConfig(AFNConfig):
    ensemble: bool = True


class AFNPlus(AFN):
    """AFN+ (Sec. 3.4): ``afn`` with ``ensemble=true`` by default."""

    name = "afn+"

    Config = AFNPlusConfig
    presets = {"paper": {}}
