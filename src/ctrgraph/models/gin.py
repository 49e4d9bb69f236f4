"""GIN (Li et al., Graph Intention Network for Click-through Rate Prediction in Sponsored Search,
SIGIR 2019 short paper; DG-ENN's Table 2 baseline).

No public code exists; the paper describes, without equations: a co-occurrence commodity graph
from user behaviours; for every clicked behaviour a multi-layer neighbour query on that graph;
attention-based neighbour aggregation "according to correlations between the current node and the
neighbour nodes"; the aggregated behaviours plus the other features into the CTR network, trained
end to end. Everything below that is more precise than that sentence is **our choice** (research
notes §6.10 recommend this design):

1. Graph (ours: window co-occurrence, top-N by weight). Built in :meth:`GIN.prepare` from the
   **train split's behaviour sequences only** (``graphs.behaviour_sequences``: each user's
   reconstructed train sequence once, ``count_over="users"``; ``"samples"`` counts every training
   history), never from the instances' targets: w(a, b) = number of position pairs at distance
   1..``window`` holding a and b (a != b), both directions (``graphs.cooccurrence_graph``); each
   item keeps its ``top_n`` heaviest neighbours, ordered by weight, ties by the smaller item id.
   Stored as buffers ``nbr_idx`` / ``nbr_w`` [n_items, top_n] sized from ``spec.vocab_sizes``
   (0 = no neighbour), so checkpoints load without the data.
2. Neighbour query (ours: fixed fan-out per hop): the tree of behaviour b has depth ``hops``; a
   node's children at hop k are its first ``fanouts[k-1]`` table neighbours (the heaviest:
   deterministic). ``sample=true``: in training, each step draws them per distinct item, without
   replacement, with probability proportional to the weight (Gumbel top-k); evaluation stays
   deterministic.
3. Aggregation (ours: scaled bilinear correlation, softmax, sum with the node), bottom-up, hop K
   first: the deepest nodes have h_c = e_c; for a node x at depth k-1 with valid children C(x),

       s(x, c) = e_x^T W_k h_c / sqrt(d),    alpha(x, c) = softmax_{c in C(x)} s(x, c)
       h_x = e_x + sum_{c in C(x)} alpha(x, c) h_c        (h_x = e_x when C(x) is empty)

   e = the provider's item embeddings (so ``dg-gin`` / ``res-gin`` enhance them too), W_k one d x d
   matrix per hop, initialised to the identity (a plain dot-product correlation at the start).
   ``aggregation="mean"`` (switch) replaces alpha by uniform weights. The behaviour's enriched
   vector h_b replaces its item-id embedding in the behaviour group; the group's parallel members
   (e.g. ``hist_genre``) are kept as they are (ours: neighbours carry no attributes).
4. Target attention and tower: exactly DIN (:mod:`ctrgraph.models.din`: local activation unit on
   [q, k, q-k, q*k], unnormalised by default, the same MLP tower over the other fields, the pooled
   interest and the candidate). ``hops=0`` is DIN.

Leakage (ours, ``exclude_target=true``, default): on ml100k-ctr a positive training instance's
target v is the user's *next* behaviour, so the train sequences link v to the instance's last
behaviours (window co-occurrence), while a test target never co-occurs with its own user's
history. The candidate item is therefore masked out of every neighbour tree (hops >= 1; its
subtree with it), in training and evaluation alike, so "the candidate is my behaviours' neighbour"
cannot be learned from the instance's own future. Residual, documented: the other later train
behaviours of the same user still enter the graph.

Cost: the trees and aggregations are computed once per distinct (behaviour item, masked candidate)
pair of the batch (``torch.unique``), not per row and position; no Python loop over rows or items
(loops over hops only).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field as PField
from pydantic import model_validator
from torch import nn

from ..data.schema import Role
from ..embeddings import EmbeddedBatch
from ..errors import ConfigError
from .din import DIN, DINConfig


class GINConfig(DINConfig):
    window: int = PField(2, ge=1, description="co-occurrence window (positions at distance 1..window)")
    top_n: int = PField(10, ge=1, description="neighbours kept per item (table width)")
    fanouts: list[int] = [10, 5]
    hops: int = PField(2, ge=0, description="neighbour-query depth; 0 = DIN")
    aggregation: Literal["attention", "mean"] = "attention"
    sample: bool = False
    exclude_target: bool = True
    count_over: Literal["users", "samples"] = "users"

    @model_validator(mode="after")
    def _check(self) -> GINConfig:
        if self.hops > len(self.fanouts):
            raise ValueError(f"hops={self.hops} needs {self.hops} fanouts, got fanouts={self.fanouts}")
        bad = [f for f in self.fanouts if not 1 <= f <= self.top_n]
        if bad:
            raise ValueError(f"every fanout must be in 1..top_n={self.top_n}, got {bad}")
        return self


def cooccurrence_neighbours(sequences, n_items: int, window: int, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranked neighbour table of the window co-occurrence graph: (idx, weight) [n_items, top_n],
    row i = i's ``top_n`` heaviest co-occurring items by (weight desc, id asc); empty slots (0, 0)."""
    from ..graphs import cooccurrence_graph

    z = sp.csr_matrix(cooccurrence_graph(sequences, n_items, window, top_k=top_n))
    counts = np.diff(z.indptr)
    rows = np.repeat(np.arange(n_items, dtype=np.int64), counts)
    order = np.lexsort((z.indices, -z.data, rows))  # row, then weight desc, then id asc
    pos = np.arange(z.nnz) - np.repeat(z.indptr[:-1], counts)
    idx = np.zeros((n_items, top_n), dtype=np.int64)
    wt = np.zeros((n_items, top_n), dtype=np.float32)
    idx[rows, pos] = z.indices[order]
    wt[rows, pos] = z.data[order]
    return idx, wt


class GIN(DIN):
    name = "gin"
    Config = GINConfig
    presets = {}
    paper = "Li et al., Graph Intention Network for Click-through Rate Prediction in Sponsored Search, SIGIR 2019"

    def __init__(self, spec, cfg: GINConfig, embedding):
        super().__init__(spec, cfg, embedding)
        item = spec.schema.first(Role.ITEM)
        self.graph_group: int | None = None
        self.graph_member = self.cand_field = None
        for gi, (att, targets, _) in enumerate(self.groups):
            for m, t in zip(att, targets):
                if item is not None and t.name == item.name and m.group is None and self.graph_group is None:
                    self.graph_group, self.graph_member, self.cand_field = gi, m, t
        if self.graph_member is None:
            raise ConfigError("gin needs a behaviour sequence whose target is the item field (e.g. hist_item_id -> item_id)")
        self.table = self.graph_member.table
        n, d = spec.vocab_sizes[self.table], embedding.dim
        self.register_buffer("nbr_idx", torch.zeros(n, cfg.top_n, dtype=torch.long))
        self.register_buffer("nbr_w", torch.zeros(n, cfg.top_n))
        self.hop_query = nn.ParameterList([nn.Parameter(torch.eye(d)) for _ in range(cfg.hops)])

    # ----- graph (train behaviours only) -----------------------------------------------------
    def prepare(self, data) -> None:
        from ..graphs import behaviour_sequences

        super().prepare(data)
        idx, wt = cooccurrence_neighbours(behaviour_sequences(data, self.cfg.count_over),
                                          self.nbr_idx.shape[0], self.cfg.window, self.cfg.top_n)
        self.set_graph(torch.from_numpy(idx), torch.from_numpy(wt))

    def set_graph(self, idx: torch.Tensor, weight: torch.Tensor) -> None:
        """Install a ranked neighbour table ([n_items, top_n] ids, weights; 0 = no neighbour)."""
        self.nbr_idx.copy_(idx)
        self.nbr_w.copy_(weight)

    # ----- neighbour query and aggregation ---------------------------------------------------
    def tree(self, roots: torch.Tensor) -> list[torch.Tensor]:
        """Neighbour trees of distinct item ids ``roots`` [U]: level k is [U, prod(fanouts[:k])]
        (children of a node are contiguous; 0 = no node). Level 0 = the roots."""
        levels = [roots.long().unsqueeze(1)]
        for f in self.cfg.fanouts[:self.cfg.hops]:
            parent = levels[-1]
            nb = self.nbr_idx[parent]  # [U, n, top_n]
            if self.training and self.cfg.sample:  # Gumbel top-k: without replacement, p ~ weight
                w = self.nbr_w[parent]
                g = -torch.log(-torch.log(torch.rand_like(w).clamp_min(1e-20)))
                key = torch.where(w > 0, w.clamp_min(1e-20).log() + g, torch.full_like(w, float("-inf")))
                sel = key.topk(f, dim=-1).indices
                child = torch.where(w.gather(-1, sel) > 0, nb.gather(-1, sel), 0)
            else:
                child = nb[..., :f]
            levels.append(child.flatten(1))
        return levels

    def aggregate(self, levels: list[torch.Tensor], exclude: torch.Tensor, eb: EmbeddedBatch) -> torch.Tensor:
        """h of each tree's root (bottom-up, module docstring item 3); ``exclude`` [P]: an item id
        masked out of levels >= 1 (with its subtree), 0 for none. Returns [P, d]."""
        fan = self.cfg.fanouts[:self.cfg.hops]
        valid = [levels[0] > 0]
        for k, f in enumerate(fan, start=1):
            valid.append((levels[k] > 0) & (levels[k] != exclude.unsqueeze(1))
                         & valid[k - 1].repeat_interleave(f, dim=1))
        emb = [eb.lookup(self.table, lv) for lv in levels]
        h = emb[-1] * valid[-1].unsqueeze(-1).to(emb[-1].dtype)
        p, d = h.shape[0], h.shape[-1]
        for k in range(len(fan), 0, -1):
            e_par = emb[k - 1]  # [P, n, d]
            hc = h.view(p, e_par.shape[1], fan[k - 1], d)
            m = valid[k].view(p, e_par.shape[1], fan[k - 1])
            if self.cfg.aggregation == "attention":
                s = torch.einsum("pnd,de,pnfe->pnf", e_par, self.hop_query[k - 1], hc) / math.sqrt(d)
                a = torch.nan_to_num(torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1), nan=0.0)
            else:
                mf = m.to(hc.dtype)
                a = mf / mf.sum(-1, keepdim=True).clamp_min(1.0)
            h = (e_par + torch.einsum("pnf,pnfd->pnd", a, hc)) * valid[k - 1].unsqueeze(-1).to(hc.dtype)
        return h[:, 0]

    def enrich(self, hist: torch.Tensor, cand: torch.Tensor, eb: EmbeddedBatch) -> torch.Tensor:
        """Enriched behaviour vectors [B, L, d] of item ids ``hist`` [B, L] for candidates ``cand`` [B]."""
        hist = hist.long()
        tracing = torch.jit.is_tracing()  # export (inference): every position its own row, no unique
        if tracing:
            uniq = hist.reshape(-1)
            inv = torch.arange(uniq.numel(), device=hist.device).view(hist.shape)
        else:
            uniq, inv = torch.unique(hist, return_inverse=True)
        levels = self.tree(uniq)
        if self.cfg.exclude_target and len(levels) > 1:
            cand = cand.long().view(-1, 1)
            deep = torch.cat(levels[1:], dim=1)  # [U, T]
            hit = (deep[inv] == cand.unsqueeze(-1)).any(-1) & (hist > 0)  # [B, L]
            excl = torch.where(hit, cand, 0)
            n = self.nbr_idx.shape[0]
            if tracing:
                rows, exclude, kinv = inv.reshape(-1), excl.reshape(-1), inv
            else:
                ukey, kinv = torch.unique(inv * n + excl, return_inverse=True)
                rows, exclude = ukey // n, ukey % n
        else:
            rows, kinv = torch.arange(uniq.numel(), device=hist.device), inv
            exclude = torch.zeros_like(uniq)
        h = self.aggregate([lv[rows] for lv in levels], exclude, eb)
        return h[kinv]

    # ----- DIN with enriched behaviours ------------------------------------------------------
    def forward(self, batch):
        eb = self.embedding(batch)
        parts = [eb.matrix(self.others).flatten(1)]
        for gi, ((att, targets, rest), unit) in enumerate(zip(self.groups, self.attn)):
            vals = [eb.values[m.name] for m in att]
            if gi == self.graph_group and self.cfg.hops > 0:
                j = [m.name for m in att].index(self.graph_member.name)
                vals[j] = self.enrich(batch[self.graph_member.name], batch[self.cand_field.name], eb)
            keys = torch.cat(vals, dim=-1)
            mask = eb.masks[att[0].name]
            q = torch.cat([eb.vector(t.name) for t in targets], dim=-1)
            parts.append(unit(q, keys, mask))
            parts.extend(eb.vector(m.name) for m in rest)
        return self.output(self.mlp(torch.cat(parts, dim=1)).squeeze(-1), eb)
