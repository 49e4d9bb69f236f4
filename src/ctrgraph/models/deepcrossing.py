"""Deep Crossing (Shan et al., Deep Crossing: Web-Scale Modeling without Manually Crafted
Combinatorial Features, KDD 2016).

Stacking layer (Sec. 3): the field embeddings concatenated (multi-valued fields and behaviour
sequences mean-pooled, numeric fields as v_j x_j). Residual units (Eq. 2, Fig. 2):
X^O = ReLU(X^I + W_1 ReLU(W_0 X^I + b_0) + b_1), each unit keeping the stack's width and with its
own inner width; scoring layer: a linear logit (sigmoid in the loss).

Choices: the paper's embedding layer (ReLU(W X + b) per feature, Eq. 1) is the provider's lookup
here (so graph providers can wrap the model), i.e. without the ReLU projection; the inner widths
default to the paper's five units [512, 512, 256, 128, 64] (Sec. 5).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import CTRModel, ModelConfig


class DeepCrossingConfig(ModelConfig):
    residual_units: list[int] = [512, 512, 256, 128, 64]
    dropout: float = 0.0
    seq_pool: str = "mean"


class ResidualUnit(nn.Module):
    """X^O = ReLU(X^I + W_1 ReLU(W_0 X^I + b_0) + b_1) (Deep Crossing Eq. 2)."""

    def __init__(self, dim: int, inner: int, dropout: float = 0.0):
        super().__init__()
        self.inner = nn.Linear(dim, inner)
        self.outer = nn.Linear(inner, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(x + self.outer(torch.relu(self.inner(x)))))


class DeepCrossing(CTRModel):
    name = "deepcrossing"
    Config = DeepCrossingConfig
    presets = {"paper": {}}
    paper = "Shan et al., Deep Crossing: Web-Scale Modeling without Manually Crafted Combinatorial Features, KDD 2016"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        dim = len(spec.features) * embedding.dim
        self.units = nn.Sequential(*[ResidualUnit(dim, h, cfg.dropout) for h in cfg.residual_units])
        self.score = nn.Linear(dim, 1)

    def output_bias(self):
        return self.score.bias

    def forward(self, batch):
        eb = self.embedding(batch)
        x = eb.matrix(seq_pool=self.cfg.seq_pool).flatten(1)
        return self.output(self.score(self.units(x)).squeeze(-1), eb)
