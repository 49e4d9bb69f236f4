"""DMIN (Xiao et al., Deep Multi-Interest Network for Click-through Rate Prediction, CIKM 2020).

Per behaviour group, with behaviour vectors e_t = the concatenation of the group's embedded
sequences that have a ``target`` (item ‖ category, size D) and the candidate's vector x_t (the
concatenation of their ``target`` fields, multi-valued targets mean-pooled):

1. Behaviour Refiner Layer (Sec. 2.2): multi-head self-attention over the behaviours,
   head_h = softmax(Q_h K_h^T / sqrt(d_h)) V_h with ``refiner_heads`` heads, Z = Concat(heads) W^O.
   Keys on padded positions are masked (each position may attend to itself, so an empty history
   stays finite). Not causal by default: the paper's equations have no causal mask.
   ``causal=true`` adds the lower-triangular mask of the authors' code (and FuxiCTR's port) to both
   self-attentions; with post-padding it never lets padding in either.
2. Auxiliary loss (Sec. 2.2, as DIEN's Eq. 1): the refined z_t must tell the next clicked behaviour
   e_{t+1} from a sampled one ê_{t+1}; L_aux = mean over valid pairs of
   -[log σ(z_t, e_{t+1}) + log(1 - σ(z_t, ê_{t+1}))], σ = an MLP ``aux_hidden`` (100-50, sigmoid)
   on [z_t, e] (the authors' code's aux net without its leading BatchNorm). Negatives: uniform over
   item ids >= 2, their attributes from the train split's item -> attribute table (as DIEN here).
   ``aux_loss`` = α, the loss weight of L = L_target + α L_aux; default 0 (off, FuxiCTR's default;
   the authors' code adds it with weight 1, preset ``official``). Returned as ``aux["dmin_aux"]``
   = α L_aux in training when α > 0. Caveat: without ``causal``, z_t has attended to e_{t+1}
   itself, so the auxiliary task sees its own answer; use ``causal=true`` with it (as ``official``).
3. Multi-Interest Extractor Layer (Sec. 2.3): a second multi-head self-attention over Z with
   ``interests`` heads (H_E); head h gives the sequence I_h. ``block="transformer"`` (default,
   both reference codes): I_h = FFN_h(LN_h(Z + head_h W^O_h)) + LN_h(...), i.e. per head an output
   map to D, residual, LayerNorm and a ReLU FFN of width ``ffn_mult`` x D with residual (the refiner
   gets the same block after W^O); ``"attention"``: the bare equations (I_h = head_h, size d_h;
   Z = Concat(heads) W^O).
4. Per head a DIN-style target attention with positions (Sec. 2.3):
   interest_h = sum_j softmax_j(a_h(I_jh, x_t, p_j)) I_jh, a_h = MLP ``attention_hidden`` (80-40,
   ``attention_activation`` sigmoid) on [q_j, I_jh, q_j - I_jh, q_j * I_jh] with
   q_j = W_h [x_t ‖ p_j] (the authors' code projects the target and the position vector p_j to the
   interest size); p_j are learnable vectors of size ``pos_dim`` shared by the heads (authors'
   code), position j counted back from the most recent behaviour (``positions``). Scores are
   computed on valid positions only (Dice batch statistics never see padding).
5. Tower: [non-sequence fields (user, candidate, attributes, context), interest_1 ‖ ... ‖
   interest_{H_E} per group, mean-pooled members without a target] -> MLP -> one logit;
   ``pooled_history=true`` also feeds the sum-pooled history and x_t * history sum (authors' code).

Choices not fixed by the paper (config values, defaults from the authors' code unless said):
H_R = H_E = 4; d_h = D / heads (``head_dim`` overrides); scaling 1/sqrt(d_h) (the authors' code
divides by sqrt(36) = sqrt(D)); Q/K/V and W^O maps with bias; FFN width 2 x D; ``pos_dim`` 2;
softmax over positions in the target attention; tower: the benchmark's [256, 128] ReLU
(``official`` preset: 200-80 Dice, sum-pooled history, causal, α = 1; ``fuxictr``: FuxiCTR's
defaults). Tests: tests/models/test_multi_interest.py.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..layers.mlp import MLP
from ..layers.multi_interest import masked_softmax, positions, target_groups
from .base import CTRModel, TowerConfig, tower


class DMINConfig(TowerConfig):
    refiner_heads: int = Field(4, ge=1)  # H_R
    interests: int = Field(4, ge=1)  # H_E: extractor heads, one interest each
    head_dim: int | None = Field(None, ge=1)  # None: D / heads
    block: Literal["transformer", "attention"] = "transformer"
    ffn_mult: int = Field(2, ge=1)
    causal: bool = False
    attention_hidden: list[int] = [80, 40]
    attention_activation: str = "sigmoid"
    pos_dim: int = Field(2, ge=0)  # 0: no position vectors
    positions: Literal["recent", "start"] = "recent"
    aux_loss: float = Field(0.0, ge=0.0)  # α
    aux_hidden: list[int] = [100, 50]
    aux_activation: str = "sigmoid"
    pooled_history: bool = False


def attention_mask(mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """[B, L, L] allowed (query i, key j): j valid or j == i; and j <= i when ``causal``."""
    L = mask.shape[1]
    pos = torch.arange(L, device=mask.device)
    eye = pos.unsqueeze(1) == pos  # not torch.eye: ONNX Runtime has no boolean EyeLike
    allowed = mask.unsqueeze(1) | eye
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
    return allowed


class MultiHeadSelfAttention(nn.Module):
    """Per-head outputs softmax(Q_h K_h^T / sqrt(d_h)) V_h: x [B, L, D] -> [B, H, L, d_h]."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)

    def weights(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [B, H, L, L]
        return masked_softmax(s, allowed.unsqueeze(1).expand_as(s), dim=-1), v

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape  # the same as weights() @ v, fused (every row allows itself: no empty row)
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1))


class HeadwiseBlock(nn.Module):
    """Per head h: W^O_h (d_h -> D), residual to the layer's input, LayerNorm_h, ReLU FFN_h with
    residual; batched over heads: [B, H, L, d_h] and x [B, L, D] -> [B, H, L, D]."""

    def __init__(self, heads: int, head_dim: int, dim: int, ffn_mult: int):
        super().__init__()
        f = ffn_mult * dim
        self.wo = nn.Parameter(torch.randn(heads, head_dim, dim) * head_dim ** -0.5)
        self.bo = nn.Parameter(torch.zeros(heads, 1, dim))
        self.gamma = nn.Parameter(torch.ones(heads, 1, dim))
        self.beta = nn.Parameter(torch.zeros(heads, 1, dim))
        self.w1 = nn.Parameter(torch.randn(heads, dim, f) * dim ** -0.5)
        self.b1 = nn.Parameter(torch.zeros(heads, 1, f))
        self.w2 = nn.Parameter(torch.randn(heads, f, dim) * f ** -0.5)
        self.b2 = nn.Parameter(torch.zeros(heads, 1, dim))

    def forward(self, heads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        o = torch.matmul(heads, self.wo) + self.bo  # [B, H, L, d_h] @ [H, d_h, D], broadcast over B
        s = F.layer_norm(x.unsqueeze(1) + o, self.gamma.shape[-1:]) * self.gamma + self.beta
        h = torch.relu(torch.matmul(s, self.w1) + self.b1)
        return s + torch.matmul(h, self.w2) + self.b2


class BehaviorRefiner(nn.Module):
    """Sec. 2.2: Z = Concat(heads) W^O, in ``block="transformer"`` followed by residual, LayerNorm
    and a residual ReLU FFN (the authors' code)."""

    def __init__(self, dim: int, heads: int, head_dim: int, cfg: DMINConfig):
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, heads, head_dim)
        self.wo = nn.Linear(heads * head_dim, dim)
        self.transformer = cfg.block == "transformer"
        if self.transformer:
            self.norm = nn.LayerNorm(dim)
            self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_mult * dim), nn.ReLU(), nn.Linear(cfg.ffn_mult * dim, dim))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        z = self.wo(self.attn(x, allowed).transpose(1, 2).reshape(B, L, -1))
        if self.transformer:
            z = self.norm(x + z)
            z = z + self.ffn(z)
        return z


class PositionalTargetAttention(nn.Module):
    """One head's DIN-style unit: weights softmax_j MLP([q_j, k_j, q_j - k_j, q_j * k_j]) over valid j,
    q_j = W [x_t ‖ p_j] + b; returns (sum_j w_j k_j [B, dim], w [B, L])."""

    def __init__(self, q_dim: int, pos_dim: int, dim: int, hidden: list[int], act: str):
        super().__init__()
        self.proj = nn.Linear(q_dim + pos_dim, dim)
        self.mlp = MLP(4 * dim, hidden, act=act, out_dim=1)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, pos: torch.Tensor | None, mask: torch.Tensor):
        b_idx, l_idx = mask.nonzero(as_tuple=True)
        qq = q[b_idx] if pos is None else torch.cat([q[b_idx], pos[b_idx, l_idx]], dim=-1)
        qq = self.proj(qq)
        k = keys[b_idx, l_idx]
        s = self.mlp(torch.cat([qq, k, qq - k, qq * k], dim=-1)).squeeze(-1)
        full = keys.new_full(mask.shape, float("-inf"))
        full[b_idx, l_idx] = s.to(full.dtype)
        w = torch.nan_to_num(torch.softmax(full, dim=1), nan=0.0)
        return torch.bmm(w.unsqueeze(1), keys).squeeze(1), w


class _Group(nn.Module):
    """Refiner, extractor, per-head target attentions and aux net of one behaviour group."""

    def __init__(self, dim: int, max_len: int, cfg: DMINConfig):
        super().__init__()
        def hd(heads: int) -> int:
            if cfg.head_dim is not None:
                return cfg.head_dim
            if dim % heads:
                raise ConfigError(f"dmin: behaviour vector size {dim} is not divisible by {heads} heads; "
                                  f"set model.head_dim")
            return dim // heads
        self.max_len = max_len
        self.refiner = BehaviorRefiner(dim, cfg.refiner_heads, hd(cfg.refiner_heads), cfg)
        dh = hd(cfg.interests)
        self.extractor = MultiHeadSelfAttention(dim, cfg.interests, dh)
        self.block = HeadwiseBlock(cfg.interests, dh, dim, cfg.ffn_mult) if cfg.block == "transformer" else None
        self.interest_dim = dim if self.block is not None else dh
        self.pos = nn.Parameter(torch.randn(max_len, cfg.pos_dim) * 1e-4) if cfg.pos_dim else None
        self.units = nn.ModuleList([
            PositionalTargetAttention(dim, cfg.pos_dim, self.interest_dim, cfg.attention_hidden,
                                      cfg.attention_activation) for _ in range(cfg.interests)])
        self.aux_net = MLP(2 * dim, cfg.aux_hidden, cfg.aux_activation) if cfg.aux_loss > 0 else None

    def interest_sequences(self, z: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """I [B, H_E, L, interest_dim] from the refined sequence z."""
        heads = self.extractor(z, allowed)
        return heads if self.block is None else self.block(heads, z)


class DMIN(CTRModel):
    name = "dmin"
    Config = DMINConfig
    presets = {
        "official": {"hidden": [200, 80], "activation": "dice", "causal": True, "pooled_history": True,
                     "aux_loss": 1.0},
        # FuxiCTR's DMIN defaults (its position vectors are per head, ours shared)
        "fuxictr": {"hidden": [512, 128, 64], "activation": "dice", "batch_norm": True, "causal": True,
                    "attention_activation": "relu", "pos_dim": 8, "aux_activation": "relu"},
    }
    paper = "Xiao et al., Deep Multi-Interest Network for Click-through Rate Prediction, CIKM 2020"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.groups = target_groups(spec, "dmin")
        self.units = nn.ModuleList([_Group(len(att) * d, att[0].max_len, cfg) for att, _, _ in self.groups])
        # item -> attribute tables for the auxiliary loss's negatives (filled in prepare)
        self._attr: list[list[str | None]] = []
        for gi, (att, _, _) in enumerate(self.groups):
            key = att[0].table
            names: list[str | None] = []
            for m in att:
                if m.table == key or cfg.aux_loss == 0:
                    names.append(None)
                    continue
                name = f"attr_{gi}_{m.name}"
                t = torch.ones(spec.vocab_sizes[key], dtype=torch.long)
                t[0] = 0
                self.register_buffer(name, t)
                names.append(name)
            self._attr.append(names)
        self.others = spec.non_sequence_features()
        n_in = len(self.others) * d
        for (att, _, rest), unit in zip(self.groups, self.units):
            n_in += cfg.interests * unit.interest_dim + len(rest) * d + 2 * len(att) * d * cfg.pooled_history
        self.mlp = tower(cfg, n_in)

    def prepare(self, data) -> None:
        from ..data.lookups import attribute_table

        super().prepare(data)
        for (att, _, _), names in zip(self.groups, self._attr):
            for m, name in zip(att, names):
                if name is not None:
                    t = torch.from_numpy(attribute_table(data, att[0].table, m.table))
                    getattr(self, name).copy_(t.to(getattr(self, name).device))

    def _aux_loss(self, unit: _Group, z, e, mask, att, names, eb) -> torch.Tensor:
        """DIEN-style Eq. on pairs (z_t, e_{t+1}), both valid, one uniform negative per pair."""
        pair = mask[:, :-1] & mask[:, 1:]
        zs, pos = z[:, :-1][pair], e[:, 1:][pair]
        n = zs.shape[0]
        if n == 0:
            return z.sum() * 0.0
        ids = torch.randint(2, self.spec.vocab_sizes[att[0].table], (n,), device=z.device)
        neg = torch.cat([eb.lookup(m.table, ids if name is None else getattr(self, name)[ids])
                         for m, name in zip(att, names)], dim=-1)
        logits = unit.aux_net(torch.cat([torch.cat([zs, pos], -1), torch.cat([zs, neg], -1)], 0)).squeeze(-1)
        f = F.softplus  # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
        return (f(-logits[:n]) + f(logits[n:])).mean()

    def group_forward(self, eb, g: int):
        """(interests [B, H_E, interest_dim], target-attention weights [B, H_E, L], refined z, e, mask)."""
        att, targets, _ = self.groups[g]
        unit = self.units[g]
        e = torch.cat([eb.values[m.name] for m in att], dim=-1)
        mask = eb.masks[att[0].name]
        allowed = attention_mask(mask, self.cfg.causal)
        z = unit.refiner(e, allowed)
        I = unit.interest_sequences(z, allowed)
        q = torch.cat([eb.vector(t.name) for t in targets], dim=-1)
        pos = None if unit.pos is None else unit.pos[positions(mask, self.cfg.positions, unit.max_len)]
        outs = [ta(q, I[:, h], pos, mask) for h, ta in enumerate(unit.units)]
        return torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1), z, e, mask

    def forward(self, batch):
        eb = self.embedding(batch)
        parts = [eb.matrix(self.others).flatten(1)]
        aux = {}
        for g, (att, targets, rest) in enumerate(self.groups):
            interests, _, z, e, mask = self.group_forward(eb, g)
            parts.append(interests.flatten(1))
            parts.extend(eb.vector(m.name) for m in rest)
            if self.cfg.pooled_history:
                s = torch.cat([eb.vector(m.name, "sum") for m in att], dim=-1)
                q = torch.cat([eb.vector(t.name) for t in targets], dim=-1)
                parts.extend([s, q * s])
            unit = self.units[g]
            if self.training and unit.aux_net is not None:
                loss = self.cfg.aux_loss * self._aux_loss(unit, z, e, mask, att, self._attr[g], eb)
                aux["dmin_aux"] = aux["dmin_aux"] + loss if "dmin_aux" in aux else loss
        return self.output(self.mlp(torch.cat(parts, dim=1)).squeeze(-1), eb, aux=aux)
