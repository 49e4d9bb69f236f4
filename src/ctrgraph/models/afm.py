"""AFM, Attentional Factorization Machine (Xiao et al., IJCAI 2017, Eq. 3-5).

y = w0 + sum_i w_i x_i + p^T sum_{i<j} a_ij (v_i ⊙ v_j) x_i x_j (Eq. 5), with
a'_ij = h^T ReLU(W (v_i ⊙ v_j) x_i x_j + b) and a_ij = softmax over pairs (Eq. 4)
(``layers.cross.PairwiseAttention``). Fields: all embedded fields, multi-valued fields and
sequences mean-pooled into one field (a choice, as in FM).

``attention_size`` t (paper Fig. 5 varies it; default 16 here); ``dropout`` acts on the pair-wise
interacted vectors (the paper's dropout on that layer); the paper's L2 on the attention network W
is the trainer's ``train.weight_decay`` (global, not per-layer). ``use_attention=False`` gives the
paper's ablation with uniform weights a_ij = 1 (FM with the projection p). Preset ``paper``:
attention size 256 with dropout 0.5 on the interaction layer (our reading of the paper's tuned
settings; the paper tunes dropout per data set). p starts at ones, so the untrained model is FM
with averaged pairs. The output bias starts at the train log-odds like FM (shallow model).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.cross import PairwiseAttention
from .base import CTRModel, ModelConfig
from .lr import LinearTerm, WithLinearTerm


class AFMConfig(ModelConfig):
    attention_size: int = 16
    dropout: float = 0.0
    use_attention: bool = True
    seq_pool: str = "mean"


class AFM(WithLinearTerm, CTRModel):
    name = "afm"
    Config = AFMConfig
    presets = {"paper": {"attention_size": 256, "dropout": 0.5}}
    paper = "Xiao et al., Attentional Factorization Machines, IJCAI 2017"
    prior_bias_default = True

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)
        self.att = PairwiseAttention(embedding.dim, cfg.attention_size, cfg.dropout)
        self.p = nn.Parameter(torch.ones(embedding.dim))

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        if self.cfg.use_attention:
            pooled = self.att(E)
        else:
            pooled = self.att.dropout(self.att.pairs(E)).sum(dim=1)
        return self.output(self.linear(batch) + pooled @ self.p, eb)
