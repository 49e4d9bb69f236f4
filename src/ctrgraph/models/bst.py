"""BST (Chen et al., Behavior Sequence Transformer for E-commerce Recommendation in Alibaba, 2019).

The candidate item is appended to the user's behaviour sequence; every token is the concatenation
of its embedded features (here: a behaviour group's embedded sequences, e.g. ``hist_item_id`` ‖
``hist_genre``; the candidate's ``target`` fields, multi-valued targets mean-pooled) and of an
embedded position. One transformer block (Sec. 2.2):

    S' = LayerNorm(S + Dropout(MH(S)))                                      (multi-head attention)
    F  = LayerNorm(S' + Dropout(LeakyReLU(S' W1 + b1) W2 + b2))             (point-wise FFN)

The block's outputs are concatenated with the other features' embeddings into an MLP.

Choices (documented):

- ``position="time"`` (paper): pos(v_i) = t(v_t) - t(v_i), the seconds between the instance's
  raw ``timestamp`` and each behaviour's raw ``hist_ts`` (the candidate gets 0), bucketised as
  0 for Δ = 0 and floor(log2 Δ) + 1 for Δ >= 1 (``time_buckets`` buckets, the last one open;
  32 covers 68 years). The paper does not say how the difference is discretised.
  ``position="index"``: steps back from the candidate (candidate 0, most recent behaviour 1, ...),
  counted from the most recent end, so post-padding never moves it. ``none``: no position.
  The position embedding (size = embedding dim) is concatenated to each token, as in the
  paper's Fig. 1; it is a table of the model (positions are not a data field).
- ``pooling="concat"`` (paper: the outputs are concatenated): the outputs of the candidate and
  of the up-to ``max_len`` behaviours, right-aligned (most recent next to the candidate) into
  max_len + 1 slots, padding slots zero. ``target`` (the candidate's output), ``mean`` and ``sum``
  (over valid tokens, FuxiCTR's default is mean) are variants.
- FFN width ``ffn_mult`` x token size (4, as in Vaswani et al.; the paper gives none).
- Dropout 0.2 and 8 heads are the paper's settings; the MLP defaults to the benchmark's [256, 128]
  with ReLU; preset ``paper``: 1024-512-256 with LeakyReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.schema import Kind
from ..errors import ConfigError
from .base import CTRModel, TowerConfig, tower


class BSTConfig(TowerConfig):
    position: str = "time"  # time | index | none
    time_field: str = "hist_ts"  # raw timestamps of the behaviours (parallel to the group)
    now_field: str = "timestamp"  # raw timestamp of the instance
    time_buckets: int = 32
    heads: int = 8
    blocks: int = 1
    ffn_mult: int = 4
    transformer_dropout: float = 0.2
    pooling: str = "concat"  # concat | target | mean | sum


def time_buckets(delta: torch.Tensor, n: int) -> torch.Tensor:
    """Bucket of a non-negative time difference in seconds: 0 if Δ = 0, else floor(log2 Δ) + 1,
    capped at n - 1 (exact integer boundaries 1, 2, 4, ...)."""
    bounds = torch.pow(2, torch.arange(n - 1, device=delta.device, dtype=torch.float64))
    return torch.bucketize(delta.clamp_min(0).to(torch.float64), bounds, right=True)


class TransformerBlock(nn.Module):
    """BST's transformer layer: multi-head self-attention (scaled dot product, Vaswani et al.) and a
    LeakyReLU FFN, each followed by dropout, residual and LayerNorm (post-norm). Padded tokens are
    masked as keys. Dropout is applied where the paper writes it (on MH(S) and on the FFN output),
    not on the attention weights."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.LeakyReLU(), nn.Linear(ffn_mult * dim, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """s [B, T, D], valid [B, T] (False = padding) -> [B, T, D]."""
        B, T, D = s.shape
        q, k, v = self.qkv(s).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        a = self.proj(a.transpose(1, 2).reshape(B, T, D))
        s = self.norm1(s + self.drop1(a))
        return self.norm2(s + self.drop2(self.ffn(s)))


class BST(CTRModel):
    name = "bst"
    Config = BSTConfig
    presets = {"paper": {"hidden": [1024, 512, 256], "activation": "leaky_relu", "heads": 8,
                         "transformer_dropout": 0.2, "blocks": 1}}
    paper = "Chen et al., Behavior Sequence Transformer for E-commerce Recommendation in Alibaba, DLP-KDD 2019"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        group = next((g for g in spec.behavior_groups() if any(m.target for m in g)), None)
        if group is None:
            raise ConfigError("bst needs a behaviour sequence field with a target (e.g. hist_item_id -> item_id)")
        self.seq = [m for m in group if m.target is not None]
        self.targets = [spec.schema[m.target] for m in self.seq]
        self.rest = [m for m in group if m.target is None]  # mean-pooled extra fields
        self.max_len = group[0].max_len
        if cfg.position not in ("time", "index", "none"):
            raise ConfigError(f"bst: position must be time, index or none, got {cfg.position!r}")
        if cfg.pooling not in ("concat", "target", "mean", "sum"):
            raise ConfigError(f"bst: pooling must be concat, target, mean or sum, got {cfg.pooling!r}")
        if cfg.position == "time":
            s = spec.schema
            ok = (cfg.time_field in s and s[cfg.time_field].kind == Kind.SEQUENCE
                  and s[cfg.time_field].group == group[0].name and cfg.now_field in s)
            if not ok:
                raise ConfigError(f"bst: position=time needs a raw sequence {cfg.time_field!r} parallel to "
                                  f"{group[0].name!r} and an instance time {cfg.now_field!r}; use model.position=index")
            self.pos = nn.Embedding(cfg.time_buckets, d)
        elif cfg.position == "index":
            self.pos = nn.Embedding(self.max_len + 1, d)
        else:
            self.pos = None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=1e-4)  # as the provider's tables (docs/models.md)
        D = len(self.seq) * d + (d if self.pos is not None else 0)
        if D % cfg.heads:
            raise ConfigError(f"bst: token size {D} is not divisible by heads={cfg.heads}")
        self.blocks = nn.ModuleList([TransformerBlock(D, cfg.heads, cfg.ffn_mult, cfg.transformer_dropout)
                                     for _ in range(cfg.blocks)])
        self.others = spec.non_sequence_features()
        pooled = D * (self.max_len + 1) if cfg.pooling == "concat" else D
        self.mlp = tower(cfg, len(self.others) * d + pooled + len(self.rest) * d)

    def positions(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Position ids [B, L + 1] of the behaviours and the appended candidate (last column)."""
        B, L = mask.shape
        if self.cfg.position == "time":
            now = batch[self.cfg.now_field].view(B, 1).to(torch.float64)
            delta = now - batch[self.cfg.time_field][:, :L].to(torch.float64)
            ids = time_buckets(delta, self.cfg.time_buckets)
        else:  # steps back from the candidate: most recent behaviour 1
            lens = mask.sum(dim=1, keepdim=True)
            ids = (lens - torch.arange(L, device=mask.device)).clamp(1, self.max_len)
        ids = ids.masked_fill(~mask, 0)
        return torch.cat([ids, ids.new_zeros(B, 1)], dim=1)

    def pool(self, out: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Transformer outputs [B, L + 1, D] (candidate last) -> the MLP's input part."""
        B, T, D = out.shape
        L = T - 1
        p = self.cfg.pooling
        if p == "target":
            return out[:, -1]
        if p in ("mean", "sum"):
            s = (out * valid.unsqueeze(-1).to(out.dtype)).sum(dim=1)
            return s / valid.sum(dim=1, keepdim=True).to(out.dtype) if p == "mean" else s
        M = self.max_len  # concat: right-align the behaviours into M slots, candidate in slot M
        lens = valid[:, :L].sum(dim=1, keepdim=True)
        src = torch.arange(M, device=out.device) - (M - lens)  # [B, M], behaviour index per slot
        ok = src >= 0
        hist = out[:, :L].gather(1, src.clamp(0, max(L - 1, 0)).unsqueeze(-1).expand(-1, -1, D)) if L else \
            out.new_zeros(B, M, D)
        hist = hist * ok.unsqueeze(-1).to(out.dtype)
        return torch.cat([hist, out[:, -1:]], dim=1).flatten(1)

    def forward(self, batch):
        eb = self.embedding(batch)
        mask = eb.masks[self.seq[0].name]
        seq = torch.cat([eb.values[m.name] for m in self.seq], dim=-1)  # [B, L, E]
        cand = torch.cat([eb.vector(t.name) for t in self.targets], dim=-1)  # [B, E]
        s = torch.cat([seq, cand.unsqueeze(1)], dim=1)
        valid = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        if self.pos is not None:
            s = torch.cat([s, self.pos(self.positions(batch, mask))], dim=-1)
        for blk in self.blocks:
            s = blk(s, valid)
        parts = [eb.matrix(self.others).flatten(1), self.pool(s, valid)]
        parts.extend(eb.vector(m.name) for m in self.rest)
        return self.output(self.mlp(torch.cat(parts, dim=1)).squeeze(-1), eb)
