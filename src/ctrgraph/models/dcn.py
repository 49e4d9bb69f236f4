"""DCN, Deep & Cross Network (Wang, Fu, Fu & Wang, ADKDD 2017), and its cross network alone.

x0 = [e_1, ..., e_F] (Eq. 1; multi-valued fields and sequences mean-pooled, numeric fields as
v_j x_j), cross layers x_{l+1} = x0 x_l^T w_l + b_l + x_l (Eq. 3, ``layers.cross.CrossNet``), a
ReLU deep network in parallel (Eq. 4), and the combination layer p = sigmoid(w^T [x_L1, h_L2] + b)
(Eq. 5). ``crossnet`` is the paper's "cross network only" ablation: p = sigmoid(w^T x_L1 + b).

Defaults: 3 cross layers and the benchmark tower [256, 128]. Preset ``paper``: the Criteo setting
reported best in Sec. 4 (6 cross layers, 2 deep layers of 1024); the paper also used batch norm in
the deep network (``batch_norm``), off by default here.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.cross import CrossNet
from ..layers.mlp import MLP
from .base import CTRModel, ModelConfig, TowerConfig


class DCNConfig(TowerConfig):
    cross_layers: int = 3
    seq_pool: str = "mean"


class CrossNetConfig(ModelConfig):
    cross_layers: int = 3
    seq_pool: str = "mean"


class DCN(CTRModel):
    name = "dcn"
    Config = DCNConfig
    presets = {"paper": {"cross_layers": 6, "hidden": [1024, 1024], "batch_norm": True}}
    paper = "Wang et al., Deep & Cross Network for Ad Click Predictions, ADKDD 2017"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        D = len(spec.features) * embedding.dim
        self.cross = CrossNet(D, cfg.cross_layers)
        self.deep = MLP(D, cfg.hidden, cfg.activation, cfg.dropout, cfg.batch_norm, out_dim=None)
        self.head = nn.Linear(D + self.deep.out_dim, 1)

    def output_bias(self):
        return self.head.bias

    def forward(self, batch):
        eb = self.embedding(batch)
        x0 = eb.matrix(seq_pool=self.cfg.seq_pool).flatten(1)
        z = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return self.output(self.head(z).squeeze(-1), eb)


class CrossNetwork(CTRModel):
    """DCN's cross network only (Wang et al. 2017, Sec. 4 ablation): sigmoid(w^T x_L1 + b)."""

    name = "crossnet"

    Config = CrossNetConfig
    presets = {"paper": {"cross_layers": 6}}
    paper = "Wang et al., Deep & Cross Network for Ad Click Predictions, ADKDD 2017 (cross network only)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        D = len(spec.features) * embedding.dim
        self.cross = CrossNet(D, cfg.cross_layers)
        self.head = nn.Linear(D, 1)

    def output_bias(self):
        return self.head.bias

    def forward(self, batch):
        eb = self.embedding(batch)
        x0 = eb.matrix(seq_pool=self.cfg.seq_pool).flatten(1)
        return self.output(self.head(self.cross(x0)).squeeze(-1), eb)
