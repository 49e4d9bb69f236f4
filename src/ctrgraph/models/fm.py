"""FM (Rendle, ICDM 2010, Eq. 1): y = b + sum_i w_i + sum_{i<j} <v_i, v_j>.

Fields: every embedded field; multi-valued fields and behaviour sequences are mean-pooled into one
vector each (the common convention for bags in field-aware FMs).
"""
from __future__ import annotations

from ..layers.interaction import fm_pairwise
from .base import CTRModel, ModelConfig
from .lr import LinearTerm, WithLinearTerm


class FMConfig(ModelConfig):
    seq_pool: str = "mean"


class FM(WithLinearTerm, CTRModel):
    name = "fm"
    Config = FMConfig
    paper = "Rendle, Factorization Machines, ICDM 2010"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)

    prior_bias_default = True

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        return self.output(self.linear(batch) + fm_pairwise(E), eb)
