"""FmFM (Sun et al., FM^2: Field-matrixed Factorization Machines for Recommender Systems, WWW 2021).

logit = b + sum_i w_i + sum_{i<j} r_ij (Eq. 5), with the field-pair interaction
r_ij = e_i^T M_{F(i),F(j)} e_j (Eq. 4): one learned d x d matrix per field pair (``interaction:
"matrix"``). The paper's unified view gives the special cases as options: ``"vector"`` (FvFM:
a diagonal M, r_ij = <e_i * m_ij, e_j>, Eq. 7) and ``"scalar"`` (FwFM: M = r I, r_ij = r <e_i, e_j>,
Eq. 6). All pairs are computed at once with one einsum over the [P, d, d] pair matrices.

Fields: every embedded field; multi-valued fields and behaviour sequences are mean-pooled (as FM).
Choices: every M starts at the identity (so training starts from FM, whose scale the embedding
initialisation was tuned for); the per-field embedding dimensions of the paper's Sec. 4.3 are not
implemented (one dimension d for all fields). Output bias at the train log-odds, as LR and FM.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import CTRModel, ModelConfig
from .lr import LinearTerm, WithLinearTerm


class FmFMConfig(ModelConfig):
    interaction: str = "matrix"  # matrix (FmFM) | vector (FvFM) | scalar (FwFM)
    seq_pool: str = "mean"


class FmFM(WithLinearTerm, CTRModel):
    name = "fmfm"
    Config = FmFMConfig
    presets = {"paper": {}, "fvfm": {"interaction": "vector"}, "fwfm": {"interaction": "scalar"}}
    paper = "Sun et al., FM^2: Field-matrixed Factorization Machines for Recommender Systems, WWW 2021"
    prior_bias_default = True

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        if cfg.interaction not in ("matrix", "vector", "scalar"):
            raise ConfigError(f"fmfm: interaction must be matrix, vector or scalar, got {cfg.interaction!r}")
        F, d = len(spec.features), embedding.dim
        iu = torch.triu_indices(F, F, offset=1)
        self.register_buffer("left", iu[0], persistent=False)
        self.register_buffer("right", iu[1], persistent=False)
        P = iu.shape[1]
        if cfg.interaction == "matrix":
            init = torch.eye(d).expand(P, d, d).clone()
        elif cfg.interaction == "vector":
            init = torch.ones(P, d)
        else:
            init = torch.ones(P)
        self.M = nn.Parameter(init)
        self.linear = LinearTerm(spec)

    def pair_scores(self, E: torch.Tensor) -> torch.Tensor:
        """r_ij for all field pairs i < j -> [B, P]."""
        ei, ej = E[:, self.left], E[:, self.right]  # [B, P, d]
        if self.cfg.interaction == "matrix":
            return torch.einsum("bpd,pde,bpe->bp", ei, self.M, ej)
        if self.cfg.interaction == "vector":
            return (ei * self.M * ej).sum(-1)
        return (ei * ej).sum(-1) * self.M

    def forward(self, batch):
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=self.cfg.seq_pool)
        return self.output(self.linear(batch) + self.pair_scores(E).sum(dim=1), eb)
