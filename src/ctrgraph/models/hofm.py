"""HOFM, higher-order factorization machine (Blondel, Fujino, Ueda & Ishihata, NIPS 2016, Eq. 5-7).

y = w0 + <w, x> + sum_{m=2}^{M} sum_{s=1}^{k} A^m(p_s^{(m)}, x) (Eq. 5), where A^m is the ANOVA
kernel of degree m (sum over j1 < ... < jm of prod_t p_{j_t} x_{j_t}), evaluated by the dynamic
programme of Eq. 7 as cumulative sums over fields (``layers.cross.anova_kernels``). The paper learns
separate factors P^(m) per order: order 2 uses the injected provider (so graph-enhanced providers
wrap it), every order m >= 3 gets its own plain table set built like ``LinearTerm`` (choice: the
extra factors are not graph-enhanced). ``shared_factors=True`` uses the provider's table for all
orders (a shortcut some libraries take; not the paper's model, not the default).

Fields: multi-valued fields and sequences mean-pooled into one field (a choice, as in FM), so the
kernel runs over fields, not over the individual ids of a bag. Order 3 by default (the task's
setting); the output bias starts at the train log-odds like FM.
"""
from __future__ import annotations

import torch
from torch import nn

from pydantic import Field

from ..embeddings import EmbeddingProvider
from ..layers.cross import anova_kernels
from .base import CTRModel, ModelConfig
from .lr import LinearTerm, WithLinearTerm


class HOFMConfig(ModelConfig):
    order: int = Field(3, ge=2)
    shared_factors: bool = False
    init_std: float | None = None  # of the extra factors; None: the run's embedding init_std
    seq_pool: str = "mean"


def _table_std(embedding) -> float:
    """The init std of the provider's tables (rows 1..; row 0 is padding), else 1e-4."""
    tables = list(getattr(embedding, "tables", {}).values())
    if tables and tables[0].weight.shape[0] > 2:
        return float(tables[0].weight[1:].detach().std())
    return 1e-4


class HOFM(WithLinearTerm, CTRModel):
    name = "hofm"
    Config = HOFMConfig
    presets = {"paper": {"order": 3}}
    paper = "Blondel et al., Higher-Order Factorization Machines, NIPS 2016"
    prior_bias_default = True

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.linear = LinearTerm(spec)
        n_extra = 0 if cfg.shared_factors else cfg.order - 2
        std = cfg.init_std if cfg.init_std is not None else getattr(embedding, "init_std", None) or _table_std(embedding)
        self.higher = nn.ModuleList(EmbeddingProvider(spec, embedding.dim, init_std=std) for _ in range(n_extra))

    def forward(self, batch):
        pool = self.cfg.seq_pool
        eb = self.embedding(batch)
        E2 = eb.matrix(seq_pool=pool)
        if self.cfg.shared_factors:
            kernels = anova_kernels(E2, self.cfg.order)[1:]
        else:
            kernels = [anova_kernels(E2, 2)[1]]
            for m, prov in enumerate(self.higher, start=3):
                kernels.append(anova_kernels(prov(batch).matrix(seq_pool=pool), m)[m - 1])
        inter = torch.stack(kernels, dim=0).sum(dim=(0, 2))
        return self.output(self.linear(batch) + inter, eb)
