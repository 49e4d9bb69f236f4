"""NFM, Neural Factorization Machine (He & Chua, SIGIR 2017, Eq. 1-5).

y = w0 + sum_i w_i x_i + h^T sigma_L(... sigma_1(W_1 f_BI + b_1)) (Eq. 5) with the bi-interaction
pooling f_BI(V_x) = sum_{i<j} x_i v_i ⊙ x_j v_j (Eq. 3, computed in O(F d) as Eq. 4) over the field
embeddings (multi-valued fields and sequences mean-pooled into one field: a choice; the paper's
features are one-hot or bag entries, whose within-bag pairs we therefore do not cross).

The paper applies batch norm (Sec. 3.3) and dropout on the bi-interaction output
(``bi_batch_norm``, ``bi_dropout``), off by default. Defaults: the benchmark tower [256, 128]
(the paper's NFM-1 has one hidden layer: preset ``paper`` = [64] with batch norm on f_BI).
"""
from __future__ import annotations

from torch import nn

from ..layers.cross import bi_interaction
from .base import CTRModel, TowerConfig, tower
from .lr import LinearTerm, WithLinearTerm


class NFMConfig(TowerConfig):
    bi_batch_norm: bool = False
    bi_dropout: float = 0.0
    seq_pool: str = "mean"


class NFM(WithLinearTerm, CTRModel):
    name = "nfm"
    Config = NFMConfig
    presets = {"paper": {"hidden": [64], "bi_batch_norm": True}}
    paper = "He & Chua, Neural Factorization Machines for Sparse Predictive Analytics, SIGIR 2017"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.linear = LinearTerm(spec)
        self.bi_norm = nn.BatchNorm1d(d) if cfg.bi_batch_norm else nn.Identity()
        self.bi_drop = nn.Dropout(cfg.bi_dropout)
        self.mlp = tower(cfg, d)
        last = [m for m in self.mlp.modules() if isinstance(m, nn.Linear)][-1]
        last.bias = None  # h^T z_L (Eq. 5): the global bias is w0 of the linear term

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        z = self.bi_drop(self.bi_norm(bi_interaction(E)))
        return self.output(self.linear(batch) + self.mlp(z).squeeze(-1), eb)
