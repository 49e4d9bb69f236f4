"""DNN: embeddings of the fields (behaviour history sum-pooled) concatenated into an MLP.

The "DNN" baseline of EGIN and Res-embedding: Embedding & MLP, the base of DIN's comparison
(Zhou et al. 2018, Sec. 4.2). Options give Res-embedding's own base networks (Sec. 5.1):
``fields`` restricts the input (its MLP reads only the target item and the sum-pooled history:
preset ``res_mlp``, 36 x 400 x 120), and ``target_product`` appends, per behaviour sequence with a
target, the element-wise product of the target vector and the pooled history (its "PNN", which is
not the inner-product PNN: preset ``res_pnn``, 54 x 400 x 120).
"""
from __future__ import annotations

import torch

from ..data.schema import Kind
from ..errors import ConfigError
from .base import CTRModel, TowerConfig, tower


class DNNConfig(TowerConfig):
    seq_pool: str = "sum"
    fields: list[str] | None = None
    target_product: bool = False


class DNN(CTRModel):
    name = "dnn"
    Config = DNNConfig
    presets = {
        "res_mlp": {"fields": ["item_id", "hist_item_id"], "hidden": [400, 120]},
        "res_pnn": {"fields": ["item_id", "hist_item_id"], "hidden": [400, 120], "target_product": True},
    }
    paper = "Embedding&MLP base model (Zhou et al., DIN, KDD 2018, Sec. 4.2)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        feats = spec.features
        if cfg.fields is not None:
            names = {f.name for f in feats}
            bad = [n for n in cfg.fields if n not in names]
            if bad:
                raise ConfigError(f"dnn: fields {bad} are not embedded fields of this data set; known: {sorted(names)}")
            feats = [f for f in feats if f.name in cfg.fields]
        self.fields = feats
        chosen = {f.name for f in feats}
        self.products = [(f.name, f.target) for f in feats
                         if cfg.target_product and f.kind == Kind.SEQUENCE and f.target in chosen]
        self.mlp = tower(cfg, (len(feats) + len(self.products)) * embedding.dim)

    def forward(self, batch):
        eb = self.embedding(batch)
        x = eb.matrix(self.fields, seq_pool=self.cfg.seq_pool).flatten(1)
        if self.products:
            x = torch.cat([x] + [eb.vector(t) * eb.vector(s, self.cfg.seq_pool) for s, t in self.products], dim=1)
        return self.output(self.mlp(x).squeeze(-1), eb)
