"""PNN, inner-product variant (Qu et al., ICDM 2016), exactly DG-ENN's base model (Eq. 4-6):

P = [E_1, ..., E_F, <E_1, E_2>, ..., <E_{F-1}, E_F>] (Eq. 4), then a ReLU MLP (Eq. 5) and a
sigmoid output (Eq. 6). Multi-valued fields and behaviour sequences are mean-pooled into one field.
DG-ENN's setting: MLP [400, 400, 400] (preset ``paper``); the benchmark default is [256, 128].
"""
from __future__ import annotations

import torch

from ..layers.interaction import inner_products
from .base import CTRModel, TowerConfig, tower


class PNNConfig(TowerConfig):
    seq_pool: str = "mean"


class PNN(CTRModel):
    name = "pnn"
    Config = PNNConfig
    presets = {"paper": {"hidden": [400, 400, 400]}}
    paper = "Qu et al., Product-based Neural Networks for User Response Prediction, ICDM 2016 (IPNN)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        F = len(spec.features)
        self.mlp = tower(cfg, F * embedding.dim + F * (F - 1) // 2)

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        P = torch.cat([E.flatten(1), inner_products(E)], dim=1)
        return self.output(self.mlp(P).squeeze(-1), eb)
