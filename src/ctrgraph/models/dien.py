"""DIEN (Zhou et al., Deep Interest Evolution Network for Click-Through Rate Prediction, AAAI 2019).

Per behaviour group (e.g. ``hist_item_id`` ‖ ``hist_genre``), with behaviour vectors
e_t = concatenation of the group's embedded sequences:

1. Interest extractor (Sec. 4.2): a GRU over e_1..e_T gives h_1..h_T (Eq. 2-5).
2. Auxiliary loss (Eq. 1): h_t must tell the next clicked behaviour e_{t+1} from a sampled
   non-clicked one ê_{t+1}; L_aux = mean over valid pairs of
   -[log σ(h_t, e_{t+1}) + log(1 - σ(h_t, ê_{t+1}))]. σ(·,·) is the authors' code's aux net:
   an MLP 100-50-1 with sigmoid activations on [h_t, e] (the code's BatchNorm in front is left
   out). Negatives are drawn per position, at train time, uniformly over the item ids >= 2 of the
   group's main table; their parallel attributes (genre ...) come from an item -> attribute table
   built from the train split in :meth:`prepare` (``data.lookups.attribute_table``). Pairs are
   (t, t+1) with t+1 valid (post-padding: this masks padding and the last valid step). Returned as
   ``aux["dien_aux"]``, weight 1 as in the authors' code (``self.loss += self.aux_loss``); the
   trainer multiplies it by ``train.aux_weights.dien_aux``; ``aux_loss=false`` turns it off.
   The loss is averaged over valid pairs (the authors' code averages over all B x T slots, padding
   included as zeros; ours does not depend on the batch's padded length).
3. Attention (Eq. 6): a_t = softmax over valid t of h_t^T W e_a, e_a the candidate's vector (the
   concatenation of the group members' ``target`` fields, multi-valued targets mean-pooled, as in
   DIN here). ``attention="din"`` is the authors' code's alternative (an MLP 80-40 sigmoid on
   [q, h, q - h, q * h] with a projected query, then the same masked softmax).
4. Interest evolving layer (Sec. 4.3): ``gru_type`` = ``augru`` (Eq. 7-8, default), ``agru``,
   ``aigru`` or ``gru`` (no attention), see :mod:`ctrgraph.layers.recurrent`.
5. MLP over [other fields (incl. the candidate), final evolved interest h'_T, sum-pooled history]
   (``target_product=true`` adds e_a * sum-pooled history, as the authors' code does;
   ``pooled_history=false`` leaves the pooled history out, so the evolved interest is the only
   behaviour input, as in FuxiCTR's DIEN).

GRU hidden size defaults to the behaviour vector size (authors' code: 36 = 2 x 18 embedding).

Tower: the benchmark's [256, 128] ReLU; ``batch_norm=true`` (a TowerConfig field) puts BatchNorm
after every hidden Linear, as FuxiCTR's DIEN does by default; the authors' code has one BatchNorm on
the MLP input instead. Preset ``fuxictr``: FuxiCTR's DIEN defaults (evolved interest without the
pooled history, BatchNorm, no aux loss, DNN 200-80 ReLU). Which of these the paper itself implies:
its overview and Fig. 3 feed the MLP with the final interest state and the ad / user profile / context
embeddings only (our reading), i.e. ``pooled_history=false``; the sum-pooled history and the
e_a * history product come from the authors' code.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..layers.attention import TargetAttention
from ..layers.mlp import MLP, in_place_activation, run_layers
from ..layers.recurrent import InterestEvolution
from .base import CTRModel, TowerConfig, tower


class DIENConfig(TowerConfig):
    gru_type: str = "augru"
    gru_hidden: int | None = None  # None: the behaviour vector size
    attention: str = "bilinear"  # paper Eq. 6; "din": the authors' code's MLP attention
    attention_hidden: list[int] = [80, 40]  # only for attention="din"
    aux_loss: bool = True
    aux_hidden: list[int] = [100, 50]
    aux_activation: str = "sigmoid"
    seq_pool: str = "sum"  # pooling of the history fed to the MLP (authors' code: sum)
    target_product: bool = False  # authors' code: also feed e_a * (pooled history)
    pooled_history: bool = True  # False: the evolved interest replaces the pooled history (FuxiCTR's layout)
    # False: each behaviour group keeps its main sequence only (hist_item_id without hist_genre) and its
    # target (item_id): DeepCTR-Torch's DIEN layout, whose GRUs and aux net are then as wide as ours
    behavior_attributes: bool = True


def masked_softmax(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of s [B, L] over valid positions; 0 on padding and for empty rows."""
    s = s.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, dim=1), nan=0.0)


class _InterestGroup(nn.Module):
    """Extractor GRU, attention and evolving GRU of one behaviour group."""

    def __init__(self, e_dim: int, q_dim: int, cfg: DIENConfig):
        super().__init__()
        H = cfg.gru_hidden or e_dim
        self.extractor = nn.GRU(e_dim, H, batch_first=True)
        self.evolution = InterestEvolution(H, H, cfg.gru_type)
        self.attention = cfg.attention
        if cfg.attention == "bilinear":
            self.W = nn.Parameter(torch.randn(H, q_dim) * (1.0 / (H * q_dim) ** 0.25))
        elif cfg.attention == "din":
            self.q_proj = nn.Linear(q_dim, H)
            self.unit = TargetAttention(H, cfg.attention_hidden, act="sigmoid", use_softmax=True)
        else:
            raise ConfigError(f"dien: attention must be bilinear or din, got {cfg.attention!r}")
        self.aux_net = MLP(H + e_dim, cfg.aux_hidden, cfg.aux_activation) if cfg.aux_loss else None
        self.out_dim = H

    def scores(self, h: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.attention == "bilinear":
            return masked_softmax(torch.einsum("blh,hq,bq->bl", h, self.W, q), mask)
        return self.unit.scores(self.q_proj(q), h, mask)


class DIEN(CTRModel):
    name = "dien"
    Config = DIENConfig
    presets = {"paper": {"hidden": [200, 80], "activation": "dice"},
               "official": {"hidden": [200, 80], "activation": "dice", "attention": "din"},
               # FuxiCTR's DIEN defaults: no pooled history, BatchNorm in the tower, no aux loss, DNN 200-80 ReLU
               "fuxictr": {"pooled_history": False, "batch_norm": True, "aux_loss": False, "hidden": [200, 80]}}
    paper = "Zhou et al., Deep Interest Evolution Network for Click-Through Rate Prediction, AAAI 2019"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.groups = []  # (members, targets of the members that have one)
        for members in spec.behavior_groups():
            if not cfg.behavior_attributes:
                members = members[:1]  # the group's main sequence
            targets = [spec.schema[m.target] for m in members if m.target is not None]
            if targets:
                self.groups.append((members, targets))
        if not self.groups:
            raise ConfigError("dien needs a behaviour sequence field with a target (e.g. hist_item_id -> item_id)")
        self.units = nn.ModuleList([_InterestGroup(len(m) * d, len(t) * d, cfg) for m, t in self.groups])
        # item -> attribute tables for the auxiliary loss's negatives (filled in prepare)
        self._attr: list[list[str | None]] = []
        for gi, (members, _) in enumerate(self.groups):
            key = members[0].table
            names: list[str | None] = []
            for m in members:
                if m.table == key:
                    names.append(None)
                    continue
                name = f"attr_{gi}_{m.name}"
                t = torch.ones(spec.vocab_sizes[key], dtype=torch.long)
                t[0] = 0
                self.register_buffer(name, t)
                names.append(name)
            self._attr.append(names)
        self.others = spec.non_sequence_features()
        n_in = len(self.others) * d + sum(u.out_dim + len(m) * d * cfg.pooled_history
                                          for u, (m, _) in zip(self.units, self.groups))
        if cfg.target_product and not cfg.pooled_history:
            raise ConfigError("dien: target_product multiplies the pooled history; it needs pooled_history=true")
        if cfg.target_product:
            if any(len(m) != len(t) for m, t in self.groups):  # e_a and the history must align
                raise ConfigError("dien: target_product needs a target field for every behaviour member")
            n_in += sum(len(t) * d for _, t in self.groups)
        self.mlp = tower(cfg, n_in)

    def prepare(self, data) -> None:
        from ..data.lookups import attribute_table

        super().prepare(data)
        for (members, _), names in zip(self.groups, self._attr):
            for m, name in zip(members, names):
                if name is not None:
                    t = torch.from_numpy(attribute_table(data, members[0].table, m.table))
                    getattr(self, name).copy_(t.to(getattr(self, name).device))

    def _aux_loss(self, unit: _InterestGroup, h: torch.Tensor, e: torch.Tensor, mask: torch.Tensor,
                  members, names, eb) -> torch.Tensor:
        """Eq. (1) on pairs (h_t, e_{t+1}) with t+1 valid, one uniform negative per pair.

        Evaluation: the pairs are gathered by flat row index (``index_select``: its gradient is one
        index_add, no boolean-mask index_put into a zero-filled [B, L-1, .] slice gradient), and the
        aux net's first layer W [h; e] + b is split as (W_h h + b) + W_e e: W_h h is computed once
        for the positive and the negative of a pair (the same sums as the concatenated input)."""
        B, L, H = h.shape
        rows = mask[:, 1:].reshape(-1).nonzero().squeeze(1)  # pairs (b, t), as b (L-1) + t, row-major
        n = rows.shape[0]
        if n == 0:
            return h.sum() * 0.0
        t_rows = rows + rows // (L - 1)  # b L + t: the flat row of h_t in [B L, .]
        hs = h.reshape(B * L, H).index_select(0, t_rows)  # [n, H]
        pos = e.reshape(B * L, -1).index_select(0, t_rows + 1)  # [n, E]: e_{t+1}
        key = members[0].table
        ids = torch.randint(2, self.spec.vocab_sizes[key], (n,), device=h.device)
        neg = torch.cat([eb.lookup(m.table, ids if name is None else getattr(self, name)[ids])
                         for m, name in zip(members, names)], dim=-1)
        first, rest = unit.aux_net.net[0], unit.aux_net.net[1:]
        w_h, w_e = first.weight.split((H, first.weight.shape[1] - H), dim=1)
        z = nn.functional.linear(torch.cat([pos, neg], 0), w_e).view(2, n, -1) + \
            nn.functional.linear(hs, w_h, first.bias)  # [2, n, hidden]: rows [h_t, e_{t+1}] then [h_t, neg]
        act = in_place_activation(rest[0]) if len(rest) else None
        if act is not None:  # the sum is fresh and not a view: activated in place
            z, rest = act(z), rest[1:]
        logits = run_layers(rest, z.view(2 * n, -1)).squeeze(-1)
        pos_l, neg_l = logits[:n], logits[n:]
        f = nn.functional.softplus  # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
        return (f(-pos_l) + f(neg_l)).mean()

    def forward(self, batch):
        eb = self.embedding(batch)
        parts = [eb.matrix(self.others).flatten(1)]
        aux = {}
        for (members, targets), unit, names in zip(self.groups, self.units, self._attr):
            e = torch.cat([eb.values[m.name] for m in members], dim=-1)  # [B, L, E]
            mask = eb.masks[members[0].name]
            h, _ = unit.extractor(e)  # causal: valid states never see the post-padding
            q = torch.cat([eb.vector(t.name) for t in targets], dim=-1)
            a = unit.scores(h, q, mask)
            parts.append(unit.evolution(h, a, mask))
            if self.cfg.pooled_history:
                pooled = [eb.vector(m.name, self.cfg.seq_pool) for m in members]
                parts.extend(pooled)
            if self.cfg.target_product:
                parts.append(q * torch.cat(pooled, dim=-1))
            if self.training and unit.aux_net is not None:
                loss = self._aux_loss(unit, h, e, mask, members, names, eb)
                aux["dien_aux"] = aux["dien_aux"] + loss if "dien_aux" in aux else loss
        return self.output(self.mlp(torch.cat(parts, dim=1)).squeeze(-1), eb, aux=aux)
