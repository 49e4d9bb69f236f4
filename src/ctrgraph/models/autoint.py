"""AutoInt and AutoInt+ (Song et al., AutoInt: Automatic Feature Interaction Learning via
Self-Attentive Neural Networks, CIKM 2019).

Every field is one node (multi-valued fields and behaviour sequences mean-pooled, padding masked);
``layers`` interacting layers (Eq. 5-9, :class:`~ctrgraph.layers.self_attention.MultiHeadSelfAttention`)
and the output layer y = w^T (e^Res_1 (+) ... (+) e^Res_M) + b (Eq. 10, a logit here).
AutoInt+ adds a feed-forward network over the flattened embeddings whose logit is summed with
AutoInt's (the paper's joint training, Sec. 5.7).

Defaults are the paper's (Sec. 5.1.3): 3 layers, 2 heads, d' = 32 per head, residual on, no
scaling, no LayerNorm, linear Q/K/V without bias, no dropout. Preset ``official``: the authors' TF code
(ReLU dense Q/K/V with bias, 1/sqrt(d') scaling, LayerNorm after the residual ReLU); one known
difference remains: that code's residual is ReLU(W_Res e + b), ours stays linear without bias.

Dropout (paper Sec. 5.1.3: grid-searched in 0.1-0.9 on MovieLens-1M only, not used on the larger
data sets; where it is applied is not said). The authors' MovieLens script
(``featureRec/movielens/do.sh``) runs ``dropout_keep_prob [0.6, 0.9]``: keep 0.6 on the softmax
attention weights alpha (Eq. 5) of every layer, keep 0.9 on the embedded field matrix E before the
interacting layers. ``attention_dropout``
and ``embedding_dropout`` are those two places; preset ``movielens`` sets them to 0.4 / 0.1 on the
paper's layer, ``official_movielens`` on the authors' layer (the script's full setting). In
AutoInt+ the DNN reads the same dropped-out E (as in that code). That script also initialises the
embeddings N(0, 0.01): a run setting here (``embedding.init_std=0.01``), not part of the presets.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.self_attention import MultiHeadSelfAttention
from ..embeddings import EmbeddedBatch
from .base import CTRModel, ModelConfig, TowerConfig, tower


class AutoIntConfig(ModelConfig):
    layers: int = 3
    heads: int = 2
    attention_dim: int = 32  # d' per head
    residual: bool = True
    scale: bool = False
    projection: str = "linear"  # "relu": the TF code's ReLU dense Q/K/V
    layer_norm: bool = False
    attention_dropout: float = 0.0  # on alpha (Eq. 5), as the authors' code
    embedding_dropout: float = 0.0  # on the field matrix E before the first interacting layer
    seq_pool: str = "mean"


class AutoIntPlusConfig(AutoIntConfig, TowerConfig):
    pass


_OFFICIAL = {"projection": "relu", "scale": True, "layer_norm": True}
_MOVIELENS = {"attention_dropout": 0.4, "embedding_dropout": 0.1}  # authors' MovieLens script
_PRESETS = {"paper": {}, "official": _OFFICIAL, "movielens": _MOVIELENS,
            "official_movielens": {**_OFFICIAL, **_MOVIELENS}}


class AutoInt(CTRModel):
    name = "autoint"
    Config = AutoIntConfig
    presets = _PRESETS
    paper = "Song et al., AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks, CIKM 2019"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        dims = [embedding.dim] + [cfg.heads * cfg.attention_dim] * cfg.layers
        self.interacting = nn.ModuleList([
            MultiHeadSelfAttention(dims[i], cfg.attention_dim, cfg.heads, residual=cfg.residual, scale=cfg.scale,
                                   projection=cfg.projection, relu=True, layer_norm=cfg.layer_norm,
                                   dropout=cfg.attention_dropout)
            for i in range(cfg.layers)])
        self.out = nn.Linear(len(spec.features) * dims[-1], 1)  # Eq. 10
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)

    def output_bias(self):
        return self.out.bias

    def interact(self, E: torch.Tensor) -> torch.Tensor:
        """Eq. 5-10 on the field matrix E [B, F, d] -> AutoInt's logit [B]."""
        h = E
        for layer in self.interacting:
            h = layer(h)
        return self.out(h.flatten(1)).squeeze(-1)

    def fields(self, batch) -> tuple[torch.Tensor, EmbeddedBatch]:
        """The field matrix E [B, F, d] (Eq. 1-4; multi-valued fields averaged), embedding dropout
        applied, and the embedded batch it came from."""
        eb = self.embedding(batch)
        return self.embedding_dropout(eb.matrix(seq_pool=self.cfg.seq_pool)), eb

    def forward(self, batch):
        E, eb = self.fields(batch)
        return self.output(self.interact(E), eb)


class AutoIntPlus(AutoInt):
    """AutoInt+: AutoInt's logit + an MLP logit over the flattened field embeddings."""

    name = "autoint+"

    Config = AutoIntPlusConfig
    presets = _PRESETS

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.mlp = tower(cfg, len(spec.features) * embedding.dim)

    def output_bias(self):
        return self.out.bias

    def forward(self, batch):
        E, eb = self.fields(batch)
        return self.output(self.interact(E) + self.mlp(E.flatten(1)).squeeze(-1), eb)
