"""The CTR adaptation shared by the retrieval multi-interest baselines of DemiNet's Group 1 (MIND,
ComiRec-DR, ComiRec-SA; docs/zoo-sequence.md, "Multi-interest baselines"): per behaviour group with a
target, K interest vectors V [B, K, D] from the model's own extractor, read out against the candidate
(``interest_readout``: attention or argmax, power p), concatenated with the other fields into an MLP
tower. A subclass builds ``self.units`` (one extractor per group: ``unit(e [B, L, D], mask [B, L])``
-> V, or (V, capsule mask [B, K])) and calls :meth:`build_tower`."""
from __future__ import annotations

import torch

from ..layers.multi_interest import interest_readout, target_groups
from .base import CTRModel, tower


class InterestTowerModel(CTRModel):
    """Base of MIND / ComiRec-DR / ComiRec-SA: groups, readout and tower (see the module docstring)."""

    def build_tower(self, spec, cfg, d: int, units) -> None:
        """``units``: a callable (attended members of a group) -> that group's extractor."""
        self.groups = target_groups(spec, self.name)
        self.units = torch.nn.ModuleList([units(att) for att, _, _ in self.groups])
        self.others = spec.non_sequence_features()
        n_in = len(self.others) * d + sum((len(att) + len(rest)) * d for att, _, rest in self.groups)
        self.mlp = tower(cfg, n_in)

    def interests(self, eb, group: int):
        """(interests [B, K, D], capsule mask [B, K] or None, candidate vector [B, D]) of a group."""
        att, targets, _ = self.groups[group]
        e = torch.cat([eb.values[m.name] for m in att], dim=-1)
        out = self.units[group](e, eb.masks[att[0].name])
        V, cap = out if isinstance(out, tuple) else (out, None)
        q = torch.cat([eb.vector(t.name) for t in targets], dim=-1)
        return V, cap, q

    def forward(self, batch):
        eb = self.embedding(batch)
        parts = [eb.matrix(self.others).flatten(1)]
        for g, (_, _, rest) in enumerate(self.groups):
            V, cap, q = self.interests(eb, g)
            parts.append(interest_readout(V, q, self.cfg.readout, self.cfg.pow_p, cap))
            parts.extend(eb.vector(m.name) for m in rest)
        return self.output(self.mlp(torch.cat(parts, dim=1)).squeeze(-1), eb)
