"""LR: logistic regression, logit = b + sum_f w_f (multi-valued and sequence fields mean-pooled)."""
from __future__ import annotations

import torch
from torch import nn

from ..embeddings import EmbeddingProvider
from .base import CTRModel, ModelConfig


class LinearTerm(nn.Module):
    """First-order term sum_f w_{x_f} + b from 1-dimensional plain tables (shared by LR/FM/DeepFM)."""

    def __init__(self, spec, init_std: float = 1e-4):
        super().__init__()
        self.weights = EmbeddingProvider(spec, 1, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch) -> torch.Tensor:
        return self.weights(batch).matrix().sum(dim=(1, 2)) + self.bias


class WithLinearTerm:
    """Mixin of models with a first-order term ``self.linear`` whose bias is the output bias; LR and
    FM start it at the train log-odds (see ``CTRModel.prior_bias_default``)."""

    def output_bias(self):
        return self.linear.bias


class LRConfig(ModelConfig):
    pass


class LR(WithLinearTerm, CTRModel):
    """Logistic regression on one-hot features (the first-order term of FM, Rendle 2010 Eq. 1)."""

    name = "lr"

    Config = LRConfig
    paper = "logistic regression"
    uses_embedding = False  # only the 1-d weights of LinearTerm

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)

    prior_bias_default = True

    def forward(self, batch):
        return self.output(self.linear(batch))
