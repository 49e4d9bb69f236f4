"""xDeepFM (Lian et al., KDD 2018, Eq. 6-9): linear + CIN + DNN on shared field embeddings.

y = sigmoid(w_linear^T a + w_dnn^T x_dnn^k + w_cin^T p+ + b) (Eq. 9): a = the raw features (the
``LinearTerm``), x_dnn = a plain MLP over [e_1, ..., e_m], p+ = the sum-pooled feature maps of the
Compressed Interaction Network (Eq. 6-7, ``layers.cross.CIN``). Multi-valued fields and sequences
are mean-pooled into one field (m = number of fields).

Choices: Eq. 6 has no bias and no activation (``cin_activation='none'``); ``split_half`` (the
official code's default: half of each hidden layer's maps go to the output, half to the next
layer) is off by default because the paper's equations do not split. Defaults: CIN [100, 100],
tower [256, 128]. Preset ``paper`` (Sec. 4.1): CIN 3 layers of 200 feature maps, DNN 2 layers of
400 (the paper also used L2 1e-4 on the networks, ``train.weight_decay``, not set by the preset).
"""
from __future__ import annotations

from torch import nn

from ..layers.cross import CIN
from .base import CTRModel, TowerConfig, tower
from .lr import LinearTerm, WithLinearTerm


class XDeepFMConfig(TowerConfig):
    cin_layers: list[int] = [100, 100]
    split_half: bool = False
    cin_activation: str = "none"
    seq_pool: str = "mean"


class XDeepFM(WithLinearTerm, CTRModel):
    name = "xdeepfm"
    Config = XDeepFMConfig
    presets = {"paper": {"cin_layers": [200, 200, 200], "hidden": [400, 400]},
               "official": {"cin_layers": [200, 200, 200], "hidden": [400, 400], "split_half": True}}
    paper = "Lian et al., xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems, KDD 2018"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        m = len(spec.features)
        self.linear = LinearTerm(spec)
        self.cin = CIN(m, cfg.cin_layers, cfg.split_half, cfg.cin_activation)
        self.cin_out = nn.Linear(self.cin.out_dim, 1, bias=False)
        self.mlp = tower(cfg, m * embedding.dim)

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        logit = self.linear(batch) + self.cin_out(self.cin(E)).squeeze(-1) + self.mlp(E.flatten(1)).squeeze(-1)
        return self.output(logit, eb)
