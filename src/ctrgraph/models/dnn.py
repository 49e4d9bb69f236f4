"""DNN: embeddings of all fields (behaviour history sum-pooled) concatenated into an MLP.

The "DNN" baseline of EGIN and Res-embedding (Res-embedding's "MLP": target item || sum-pooled
history): Embedding & MLP, the base of DIN's comparison (Zhou et al. 2018, Sec. 4.2).
"""
from __future__ import annotations

from .base import CTRModel, TowerConfig, register_model, tower


class DNNConfig(TowerConfig):
    seq_pool: str = "sum"


@register_model("dnn")
class DNN(CTRModel):
    Config = DNNConfig
    paper = "Embedding&MLP base model (Zhou et al., DIN, KDD 2018, Sec. 4.2)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        n = len(spec.features)
        self.mlp = tower(cfg, n * embedding.dim)

    def forward(self, batch):
        E = self.embedding(batch).matrix(seq_pool=self.cfg.seq_pool)
        return self.output(self.mlp(E.flatten(1)).squeeze(-1))
