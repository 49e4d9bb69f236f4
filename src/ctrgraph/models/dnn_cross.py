"""DNN-cross: EGIN's reference baseline (Peng et al. 2024, §4.2): the DNN (every embedded field,
behaviour sequences sum-pooled, an MLP) plus the cartesian product of each historical item with
the target item as a second-order feature, sum-pooled into the user-interest representation.

Each (history item j, target item t) pair is one feature value: its id is a hash of the two
encoded ids into ``hash_size`` buckets (``(j * 1_000_003 + t * 999_983) mod hash_size`` on int64, so a
pair keeps its bucket in every batch), embedded in its own table and sum-pooled over the valid
positions [B, d]; with ``hash_size`` at least the number of pairs seen, collisions are rare. The
paper gives no table size; 2**18 by default.
"""
from __future__ import annotations

import torch
from pydantic import Field as PField
from torch import nn

from ..data.schema import Kind, Role
from ..errors import ConfigError
from .base import CTRModel, TowerConfig, tower

P_HIST, P_TARGET = 1_000_003, 999_983


class DNNCrossConfig(TowerConfig):
    hash_size: int = PField(1 << 18, ge=2, description="buckets of the hashed (history item, target) table")
    cross_init_std: float = PField(1e-4, gt=0)


class DNNCross(CTRModel):
    name = "dnn-cross"
    Config = DNNCrossConfig
    presets = {"paper": {}}
    paper = ("Peng et al., Light-weight End-to-End Graph Interest Network for CTR Prediction in E-commerce "
             "Search, 2024 (the DNN-cross baseline)")

    def __init__(self, spec, cfg: DNNCrossConfig, embedding):
        super().__init__(spec, cfg, embedding)
        item = spec.schema.first(Role.ITEM)
        hist = [f for f in spec.schema.fields if f.kind == Kind.SEQUENCE and f.group is None and item is not None
                and f.target == item.name and f.embed]
        if item is None or not hist:
            raise ConfigError("dnn-cross needs an item field and a behaviour sequence targeting it")
        self.item, self.hist = item, hist[0]
        self.fields = spec.features
        self.cross = nn.Embedding(cfg.hash_size, embedding.dim)
        nn.init.normal_(self.cross.weight, std=cfg.cross_init_std)
        self.mlp = tower(cfg, (len(self.fields) + 1) * embedding.dim)

    def cross_ids(self, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hashed ids of the (history item, target item) pairs [B, L]."""
        return (hist.long() * P_HIST + target.long().unsqueeze(1) * P_TARGET) % self.cfg.hash_size

    def forward(self, batch):
        eb = self.embedding(batch)
        hist = batch[self.hist.name]
        mask = (hist > 0).unsqueeze(-1).to(eb.values[self.hist.name].dtype)
        crossed = (self.cross(self.cross_ids(hist, batch[self.item.name])) * mask).sum(1)  # sum pooling [B, d]
        x = torch.cat([eb.matrix(self.fields, seq_pool="sum").flatten(1), crossed], dim=1)
        return self.output(self.mlp(x).squeeze(-1), eb)
