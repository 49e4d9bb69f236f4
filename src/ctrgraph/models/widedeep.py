"""Wide & Deep (Cheng et al., DLRS 2016, Eq. 3): P(y=1|x) = sigmoid(w_wide^T [x, phi(x)] + w_deep^T a^(lf) + b).

Wide part: the linear term over every feature (``LinearTerm``, one weight per id; multi-valued fields
and sequences mean-pooled). The paper's cross-product transformations phi(x) are hand-made
(e.g. AND(installed_app, impression_app)); the benchmark defines none, so the wide part here is
first-order only. Deep part: the concatenated field embeddings (Eq. 2 on [e_1, ..., e_F]) through
a ReLU MLP. Choice: both parts are trained jointly with the one optimiser of the trainer (the paper
uses FTRL + L1 for the wide part and AdaGrad for the deep part). Preset ``paper``: the app-store
model's deep tower, ReLU [1024, 512, 256].
"""
from __future__ import annotations

from .base import CTRModel, TowerConfig, tower
from .lr import LinearTerm, WithLinearTerm


class WideDeepConfig(TowerConfig):
    seq_pool: str = "mean"


class WideDeep(WithLinearTerm, CTRModel):
    name = "widedeep"
    Config = WideDeepConfig
    presets = {"paper": {"hidden": [1024, 512, 256]}}
    paper = "Cheng et al., Wide & Deep Learning for Recommender Systems, DLRS 2016"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)
        self.mlp = tower(cfg, len(spec.features) * embedding.dim)

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        return self.output(self.linear(batch) + self.mlp(E.flatten(1)).squeeze(-1), eb)
