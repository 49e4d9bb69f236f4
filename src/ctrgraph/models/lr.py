"""LR: logistic regression, logit = b + sum_f w_f (multi-valued and sequence fields mean-pooled)."""
from __future__ import annotations

import torch
from torch import nn

from ..data.schema import Kind
from ..embeddings import EmbeddingProvider
from .base import CTRModel, ModelConfig


class LinearTerm(nn.Module):
    """First-order term sum_f w_{x_f} + b from 1-dimensional plain tables (shared by LR/FM/DeepFM)."""

    def __init__(self, spec, init_std: float = 1e-4):
        super().__init__()
        self.weights = EmbeddingProvider(spec, 1, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1))
        # the fused path: every field's ids offset into the tables' rows laid end to end
        names = list(self.weights.tables)
        sizes = [self.weights.tables[t].num_embeddings for t in names]
        starts = dict(zip(names, [sum(sizes[:i]) for i in range(len(sizes))]))
        cat = [f for f in self.weights.fields if f.kind != Kind.NUMERIC]
        self._fusable = len(cat) == len(self.weights.fields)
        self._single = [f.name for f in cat if not f.is_sequence_like]
        self.register_buffer("_single_starts", torch.tensor([starts[f.table] for f in cat if not f.is_sequence_like]),
                             persistent=False)
        self._pooled = [(f.name, f.group, starts[f.table]) for f in cat if f.is_sequence_like]

    def forward(self, batch) -> torch.Tensor:
        tables = self.weights.tables.values()
        if (not self._fusable or type(self.weights) is not EmbeddingProvider or torch.jit.is_tracing()
                or torch.jit.is_scripting() or any(t.sparse for t in tables)):
            return self.weights(batch).matrix().sum(dim=(1, 2)) + self.bias
        return self._fused_forward(batch, tables)

    def _fused_forward(self, batch, tables) -> torch.Tensor:
        """sum_f w_{x_f} with every field's lookup in one gather: the ids of all fields (offset into
        the tables concatenated) [B, W] and a coefficient per id (1 for one-valued fields, mask /
        count for multi-valued and sequence fields, 0 on padding ids, whose weight is zero and
        never learns) -> sum_j c_j w[id_j]. The same function as the per-field mean pooling; the
        sums run in another order (tested in float64)."""
        w = torch.cat([t.weight for t in tables]).view(-1)
        ids, coef = [], []
        if self._single:
            x = torch.stack([batch[n] for n in self._single], dim=1)
            ids.append(x + self._single_starts.to(x.dtype))
            coef.append((x != 0).to(w.dtype))
        for name, group, start in self._pooled:
            x = batch[name]
            m = (batch[group] != 0 if group else x != 0).to(w.dtype)
            ids.append(x + start)
            coef.append((x != 0) * m / m.sum(dim=1, keepdim=True).clamp_min(1.0))
        ids = torch.cat(ids, dim=1)
        coef = torch.cat(coef, dim=1)
        return (w.index_select(0, ids.reshape(-1)).view(ids.shape) * coef).sum(dim=1) + self.bias


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
