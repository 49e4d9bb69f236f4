"""DeepFM (Guo et al., IJCAI 2017, Eq. 1-5): y = sigmoid(y_FM + y_DNN) on shared embeddings.

y_FM = <w, x> + sum_{i<j} <V_i, V_j> x_i x_j (Eq. 2); y_DNN = MLP over the concatenated field
embeddings (Eq. 3-5). Multi-valued fields and sequences are mean-pooled into one field each.
"""
from __future__ import annotations

from ..layers.interaction import fm_pairwise
from .base import CTRModel, TowerConfig, tower
from .lr import LinearTerm, WithLinearTerm


class DeepFMConfig(TowerConfig):
    seq_pool: str = "mean"


class DeepFM(WithLinearTerm, CTRModel):
    name = "deepfm"
    Config = DeepFMConfig
    presets = {"paper": {"hidden": [400, 400, 400], "dropout": 0.5}}
    paper = "Guo et al., DeepFM: A Factorization-Machine based Neural Network for CTR Prediction, IJCAI 2017"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)
        self.mlp = tower(cfg, len(spec.features) * embedding.dim)

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        return self.output(self.linear(batch) + fm_pairwise(E) + self.mlp(E.flatten(1)).squeeze(-1), eb)
