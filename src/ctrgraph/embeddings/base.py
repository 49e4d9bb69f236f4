"""The embedding-provider contract and the plain (lookup-table) provider.

A provider owns one table per vocabulary (``hist_item_id`` shares ``item_id``'s table), a vector
per numeric field (e_j = v_j * x_j), and returns an :class:`EmbeddedBatch`. Subclasses may:

- override :meth:`begin` to compute per-step state from the whole batch (e.g. graph propagation
  with the batch's own positive edges removed),
- override :meth:`lookup` to replace how ids of one table become vectors (e.g. Res-embedding's
  W C_b + R for the item table),
- return named auxiliary losses from :meth:`aux_losses` (weighted by the trainer's config).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.schema import Field, Kind, Schema
from ..errors import ConfigError


@dataclass
class FeatureSpec:
    """What a model needs to know about the data: the schema and the size of each vocabulary."""

    schema: Schema
    vocab_sizes: dict[str, int]

    @property
    def features(self) -> list[Field]:
        return self.schema.features

    def group_of(self, f: Field) -> str | None:
        if f.kind == Kind.SEQUENCE:
            return f.group or f.name
        return None

    def behavior_groups(self) -> list[list[Field]]:
        """Embedded behaviour sequence groups: [[main, parallel...], ...] (only fields with embed=True)."""
        out = []
        for main, members in self.schema.sequence_groups().items():
            emb = [m for m in members if m.embed]
            if emb and self.schema[main].embed:
                out.append(emb)
        return out

    def non_sequence_features(self) -> list[Field]:
        return [f for f in self.features if f.kind != Kind.SEQUENCE]


class EmbeddedBatch:
    """Embedded fields of one batch: categorical/numeric -> [B, d]; multi-valued/sequence -> [B, L, d]."""

    def __init__(self, spec: FeatureSpec, values: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        self.spec = spec
        self.values = values
        self.masks = masks

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def sequence(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.values[name], self.masks[name]

    def vector(self, name: str, pool: str = "mean") -> torch.Tensor:
        """One [B, d] vector per field; multi-valued and sequence fields are pooled over valid
        positions (``mean`` or ``sum``; an empty sequence gives the zero vector)."""
        v = self.values[name]
        if v.dim() == 2:
            return v
        m = self.masks[name].to(v.dtype)
        s = torch.bmm(m.unsqueeze(1), v).squeeze(1)
        if pool == "sum":
            return s
        if pool == "mean":
            return s / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        raise ConfigError(f"unknown pooling {pool!r}; use mean or sum")

    def matrix(self, fields: list[Field] | None = None, seq_pool: str = "mean", multi_pool: str = "mean") -> torch.Tensor:
        """Stack fields into the field matrix E [B, F, d] (DG-ENN Eq. 2)."""
        fields = self.spec.features if fields is None else fields
        vecs = [self.vector(f.name, seq_pool if f.kind == Kind.SEQUENCE else multi_pool) for f in fields]
        return torch.stack(vecs, dim=1)


class EmbeddingProvider(nn.Module):
    """Plain lookup tables, N(0, init_std) initialised, row 0 (padding) fixed at zero."""

    name = "plain"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, fields: list[Field] | None = None):
        super().__init__()
        self.spec = spec
        self.dim = dim
        self.fields = spec.features if fields is None else fields
        tables = {}
        for f in self.fields:
            if f.kind != Kind.NUMERIC and f.table not in tables:
                if f.table not in spec.vocab_sizes:
                    raise ConfigError(f"no vocabulary {f.table!r} for field {f.name!r}")
                emb = nn.Embedding(spec.vocab_sizes[f.table], dim, padding_idx=0)
                nn.init.normal_(emb.weight, std=init_std)
                with torch.no_grad():
                    emb.weight[0].zero_()
                tables[f.table] = emb
        self.tables = nn.ModuleDict(tables)
        self.numeric = nn.ParameterDict({
            f.name: nn.Parameter(torch.randn(dim) * init_std) for f in self.fields if f.kind == Kind.NUMERIC
        })
        self._used: list[torch.Tensor] = []

    # ----- hooks for graph-enhanced providers ----------------------------------------------
    def prepare(self, data) -> None:
        """Called once before training with the encoded data set (use its train split only)."""

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        """Called once per forward before any lookup (no-op for plain tables)."""

    def lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of ``ids`` (any shape) in ``table`` -> ids.shape + (dim,)."""
        return self.tables[table](ids)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Named auxiliary losses of the last forward (e.g. Res-embedding's L2 on R)."""
        return {}

    def embedding_penalty(self) -> torch.Tensor:
        """Sum of squares of the embedding vectors used by the last forward (mini-batch-aware L2)."""
        if not self._used:
            return torch.zeros(())
        return sum(v.pow(2).sum() for v in self._used)

    # ----- forward -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> EmbeddedBatch:
        self.begin(batch)
        values: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        self._used = []
        for f in self.fields:
            x = batch[f.name]
            if f.kind == Kind.NUMERIC:
                v = x.to(self.numeric[f.name].dtype).unsqueeze(-1) * self.numeric[f.name]
            else:
                v = self.lookup(f.table, x.long())
                if f.is_sequence_like:
                    src = batch[f.group] if f.group else x
                    masks[f.name] = src != 0
            values[f.name] = v
            self._used.append(v)
        return EmbeddedBatch(self.spec, values, masks)


PROVIDERS: dict[str, Callable[..., EmbeddingProvider]] = {"plain": EmbeddingProvider}


def register_provider(name: str):
    def deco(cls):
        PROVIDERS[name] = cls
        return cls
    return deco


def build_provider(name: str, spec: FeatureSpec, dim: int, init_std: float = 1e-4, **params) -> EmbeddingProvider:
    if name not in PROVIDERS:
        raise ConfigError(f"unknown embedding provider {name!r}; known: {sorted(PROVIDERS)}")
    import inspect

    sig = inspect.signature(PROVIDERS[name].__init__)
    known = [p for p in sig.parameters if p not in ("self", "spec", "dim", "init_std")]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"embedding provider {name!r}: unknown parameter(s) {unknown} "
                          f"(embedding.params); known: {known}")
    return PROVIDERS[name](spec, dim, init_std=init_std, **params)

