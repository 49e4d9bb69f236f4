"""DCN-V2 (Wang et al., DCN V2: Improved Deep & Cross Network..., WWW 2021).

Cross layer x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l (Eq. 1, ``CrossNetV2``) on x0 = [e_1, ..., e_F]
(multi-valued fields and sequences mean-pooled); ``low_rank``: the mixture of low-rank experts
(Sec. 5, ``CrossNetMix``: ``n_experts`` experts of rank ``rank`` with a softmax gate and tanh).
``structure`` (Fig. 1): ``stacked`` = deep network on top of the cross network's output x_L,
``parallel`` = cross network and deep network side by side on x0, outputs concatenated
(Eq. 4's logit: sigmoid(w_logit^T x_final)). ``cross_only`` is the paper's CrossNet ablation.

Defaults: parallel (our measurement on ml100k-ctr, see docs/zoo-interaction.md), 3 cross layers,
benchmark tower [256, 128]. Preset ``paper``: stacked, 3 cross layers, deep layers [1024, 1024]
— our pick inside the ranges the paper tuned (cross depth 1-5, deep widths up to 1024; it reports
no single winner for all data sets). ``rank`` defaults to D/4 (the paper: rank ~ D/4 keeps the
full-rank accuracy); 4 experts (preset ``mix``).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..layers.cross import CrossNetMix, CrossNetV2
from ..layers.mlp import MLP
from .base import CTRModel, TowerConfig


class DCNV2Config(TowerConfig):
    structure: Literal["stacked", "parallel", "cross_only"] = "parallel"
    cross_layers: int = 3
    low_rank: bool = False
    rank: int | None = None
    n_experts: int = 4
    expert_activation: str = "tanh"
    seq_pool: str = "mean"


class DCNV2(CTRModel):
    name = "dcnv2"
    Config = DCNV2Config
    presets = {"paper": {"structure": "stacked", "cross_layers": 3, "hidden": [1024, 1024]},
               "mix": {"low_rank": True, "n_experts": 4}}
    paper = "Wang et al., DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank Systems, WWW 2021"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        D = len(spec.features) * embedding.dim
        if cfg.low_rank:
            self.cross = CrossNetMix(D, cfg.cross_layers, cfg.rank or max(1, D // 4), cfg.n_experts,
                                     cfg.expert_activation)
        else:
            self.cross = CrossNetV2(D, cfg.cross_layers)
        head_in = D
        self.deep = None
        if cfg.structure != "cross_only":
            self.deep = MLP(D, cfg.hidden, cfg.activation, cfg.dropout, cfg.batch_norm, out_dim=None)
            head_in = self.deep.out_dim + (D if cfg.structure == "parallel" else 0)
        self.head = nn.Linear(head_in, 1)

    def output_bias(self):
        return self.head.bias

    def forward(self, batch):
        eb = self.embedding(batch)
        x0 = eb.matrix(seq_pool=self.cfg.seq_pool).flatten(1)
        xc, x0 = self.cross.fork(x0)  # x0's gradient from the deep side summed in the plain graph's order
        if self.cfg.structure == "stacked":
            z = self.deep(xc)
        elif self.cfg.structure == "parallel":
            z = torch.cat([xc, self.deep(x0)], dim=1)
        else:
            z = xc
        return self.output(self.head(z).squeeze(-1), eb)
