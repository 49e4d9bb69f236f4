"""EGIN: light-weight end-to-end graph interest network for search CTR (Peng et al., 2024).

One forward = the CTR network of §3.3 and, while training, the graph losses of §3.2 on the same
batch (Eq. 1: L = L_CTR + α L_i2i + β L_q2q + γ L_q2i, the three as named auxiliary losses
``egin_i2i``, ``egin_q2q``, ``egin_q2i``, each already weighted).

Graph side (no stored graph): the edges of each instance's own heterogeneous graph are sampled from
its padded click and query sequences by :mod:`ctrgraph.graphs.search_pairs` (i2i within window
``window`` of the clicks; q2q within query sessions cut by ``session_gap`` seconds, by the
queries' categories and, on real logs, by a similarity sequence (``query_similarity_field``); q2i between a query and the clicks ``0 < Δt < span`` after it whose category
it shares). Each edge is a softmax of the pair against ``negatives`` ids drawn from a cross-batch
queue of the positive's type (:class:`~ctrgraph.layers.negative_queue.IdQueue`), accidental hits
masked; every edge is used in both directions (i2i and q2q edges are symmetric; q2i by the paper), so
each pair is sampled once and both directions are computed in one pass
(:func:`~ctrgraph.layers.negative_queue.two_way_softmax_loss`: one dot product, gather and scatter
per pair; the same loss as the mean over the directed edges, tested). The graph embeddings are their own item and query
tables of dimension ``graph_dim`` (research notes §3.2 #1), separate from the CTR provider's.

CTR side: SimExtract(target, sequence) (§3.3): the cosine of the target's and every behaviour's
graph embedding [B, L], the top ``top_k``, each similarity put in one of ``bins`` equal-width bins
over [-1, 1] and embedded, plus a positional embedding of the behaviour's original index (1 = the
most recent; research §3.2 #9), concatenated [B, k d]; fewer than k behaviours leave zero slots
(index 0 of both tables).
f_i2i = SimExtract(i_t, I), f_q2q = SimExtract(q_t, Q), f_q2i = SimExtract(q_t, I); f_o = the DNN
baseline's input (every embedded field, sequences sum-pooled); pctr = σ(MLP([f_i2i, f_q2q, f_q2i,
f_o])).

**Where the CTR gradient stops**: top-k and binning are piecewise constant, so L_CTR does not reach
the graph embeddings through SimExtract (research §3.2 #2); as printed, the graph tables learn from
the graph losses only, and L_CTR trains the bin and position embeddings, f_o and the MLP.
``sim_value=True`` (not the paper's) also feeds the k raw cosines, through which L_CTR does reach
the graph tables.

Variants (config values): ``graph=False`` is the paper's "w/o graph" (SimExtract on the CTR
network's own embeddings, no graph losses); ``query=False`` "w/o query" (the graph limited to the
click sequence: no q2q / q2i edges; the query features stay); ``pos_emb=False`` "w/o pos_emb";
``subsample`` / ``subsample_target`` §4.6.1's frequency subsampling; ``seeds_mix`` §4.6.2's seeds
sequence share (Fig. 3); ``max_pairs`` (not the paper's) caps the pairs per relation and batch.
Item-only mode (the paper's Taobao setting): a data set without query fields has only f_i2i and
L_i2i. Query fields are found by role: a categorical ``query`` field (the current query), a
``query_behavior`` sequence targeting it with parallel raw timestamps (``embed=False``) and
categories in the clicks' category vocabulary, and the query's own category field of that vocabulary.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field as PField
from torch import nn

from ..data.schema import Field, Kind, Role
from ..errors import ConfigError
from ..graphs.search_pairs import (
    query_session_pairs,
    span_pairs,
    window_pairs,
)
from ..layers.negative_queue import IdQueue, two_way_softmax_loss
from .base import CTRModel, TowerConfig, tower


class EGINConfig(TowerConfig):
    hidden: list[int] = [200, 80]  # not given by the paper (research §3.2 #12)
    window: int = PField(2, ge=1, description="w of Algorithm 1 (paper: 2)")
    top_k: int = PField(10, ge=1, description="k of SimExtract's top-k retrieval (paper: 10)")
    bins: int = PField(20, ge=2, description="equal-width similarity bins over [-1, 1] (not given; research #8)")
    negatives: int = PField(100, ge=1, description="negatives per pair (paper: 100), shared by a batch's pairs")
    queue_size: int = PField(1_000_000, ge=1, description="cross-batch id queue per entity type (paper: 1M), "
                                                             "capped at the vocabulary size")
    alpha: float = PField(1.0, ge=0, description="α of Eq. 1 (L_i2i); not given by the paper")
    beta: float = PField(1.0, ge=0, description="β of Eq. 1 (L_q2q)")
    gamma: float = PField(1.0, ge=0, description="γ of Eq. 1 (L_q2i)")
    graph: bool = PField(True, description="False: 'w/o graph' (SimExtract on the CTR embeddings, no graph loss)")
    query: bool = PField(True, description="False: 'w/o query' (no q2q / q2i edges)")
    pos_emb: bool = PField(True, description="False: 'w/o pos_emb'")
    session_gap: float = PField(1800.0, gt=0, description="q2q: a gap above this many seconds starts a session")
    span: float = PField(3600.0, gt=0, description="T of Algorithm 2 in seconds (q2i)")
    query_similarity_field: str | None = PField(None, description="a raw sequence of the query history holding each "
                                                                  "query's similarity to the previous one (e.g. "
                                                                  "hist_query_sim of search_log / jdsearch): sessions "
                                                                  "are also cut below min_query_similarity")
    min_query_similarity: float = PField(0.1, ge=0, le=1)
    span_direction: Literal["after", "both"] = "after"
    graph_dim: int | None = PField(None, ge=1, description="graph embedding size (default: the embedding size)")
    graph_init_std: float = PField(0.1, gt=0)
    subsample: float | None = PField(None, gt=0, description="§4.6.1: word2vec subsampling threshold t (keep an "
                                                                "occurrence of an entity of train frequency f with "
                                                                "probability min(1, sqrt(t / f))); None: off")
    subsample_target: Literal["sequence", "negatives"] = PField(
        "sequence", description="§4.6.1: subsample the sequences the edges come from, or the negative queues' input")
    seeds_mix: float = PField(0.0, ge=0, le=1, description="§4.6.2 / Fig. 3: share of instances whose i2i edges come "
                                                            "from the seeds sequence (clicks of the current query's "
                                                            "category); the paper's best 0.2; query mode only")
    max_pairs: int | None = PField(None, ge=1, description="not the paper's: at most this many pairs per relation "
                                                           "and batch (each used in both directions), a uniform "
                                                           "subset (graph-loss cost)")
    sim_value: bool = PField(False, description="not the paper's: also feed the raw cosines (L_CTR then "
                                                "reaches the graph tables)")


class SimExtract(nn.Module):
    """SimExtract(target, sequence) of §3.3: target [B, d], sequence [B, L, d], mask [B, L] ->
    [B, k d] (+ [B, k] raw cosines with ``sim_value``)."""

    def __init__(self, dim: int, k: int, bins: int, max_len: int, pos_emb: bool, sim_value: bool):
        super().__init__()
        self.k, self.bins, self.sim_value = k, bins, sim_value
        self.bin_emb = nn.Embedding(bins + 1, dim, padding_idx=0)  # 0: an empty slot
        self.pos_emb = nn.Embedding(max_len + 1, dim, padding_idx=0) if pos_emb else None
        nn.init.normal_(self.bin_emb.weight, std=0.01)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, std=0.01)
        with torch.no_grad():
            self.bin_emb.weight[0].zero_()
            if self.pos_emb is not None:
                self.pos_emb.weight[0].zero_()

    @property
    def out_dim(self) -> int:
        return self.k * self.bin_emb.embedding_dim + (self.k if self.sim_value else 0)

    def forward(self, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L = mask.shape
        cos = nn.functional.cosine_similarity(target.unsqueeze(1), seq, dim=-1, eps=1e-8)  # [B, L]
        k = min(self.k, L)
        with torch.no_grad():  # top-k and binning: piecewise constant, no gradient (module docstring)
            c = cos.masked_fill(~mask, float("-inf"))
            if torch.onnx.is_in_onnx_export():  # ONNX TopK puts the lower index first among ties, as below
                top, idx = c.topk(k, dim=1)  # [B, k]
            else:  # ties (a repeated behaviour) go to the older position, whatever the backend
                top, idx = c.sort(dim=1, descending=True, stable=True)
                top, idx = top[:, :k], idx[:, :k]
            valid = torch.isfinite(top)
            b = torch.floor((top.clamp(-1.0, 1.0) + 1.0) * (self.bins / 2.0)).clamp(0, self.bins - 1).long() + 1
            b = torch.where(valid, b, torch.zeros_like(b))
            n = mask.sum(1, keepdim=True)
            pos = torch.where(valid, n - idx, torch.zeros_like(idx))  # 1 = the most recent, 0 = empty
        e = self.bin_emb(b)
        if self.pos_emb is not None:
            e = e + self.pos_emb(pos)
        out = e.flatten(1)
        if self.sim_value:
            out = torch.cat([out, torch.where(valid, cos.gather(1, idx), torch.zeros_like(top))], dim=1)
        if k < self.k:  # a sequence shorter than k: zero slots
            out = torch.cat([out, out.new_zeros(B, self.out_dim - out.shape[1])], dim=1)
        return out


class EGIN(CTRModel):
    """EGIN (see the module docstring)."""

    name = "egin"
    Config = EGINConfig
    presets = {"paper": {}}
    paper = ("Peng et al., Light-weight End-to-End Graph Interest Network for CTR Prediction in E-commerce "
             "Search, 2024")

    def __init__(self, spec, cfg: EGINConfig, embedding):
        super().__init__(spec, cfg, embedding)
        s = spec.schema
        d = embedding.dim
        gd = cfg.graph_dim or d
        if not cfg.graph and gd != d:
            raise ConfigError("egin: graph=False reads the CTR embeddings, so graph_dim must equal the embedding size")
        self.item = s.first(Role.ITEM)
        clicks = [f for f in s.fields if f.kind == Kind.SEQUENCE and f.group is None and f.role == Role.BEHAVIOR
                  and self.item is not None and f.target == self.item.name]
        if self.item is None or not clicks:
            raise ConfigError("egin needs an item field and a click sequence targeting it (e.g. hist_item_id -> item_id)")
        self.click = clicks[0]
        groups = s.sequence_groups()
        self.click_ts = _raw_member(groups[self.click.name])
        self.click_cat = _category_member(groups[self.click.name])
        self.query_mode = False
        self.query_cat = None
        queries = [f for f in s.by_role(Role.QUERY) if f.kind == Kind.CATEGORICAL and f.embed]
        qhist = [f for f in s.fields if f.kind == Kind.SEQUENCE and f.group is None
                 and f.role == Role.QUERY_BEHAVIOR and queries and f.target == queries[0].name]
        if queries and qhist:
            self.query, self.qhist = queries[0], qhist[0]
            self.qhist_ts = _raw_member(groups[self.qhist.name])
            self.qhist_cat = _category_member(groups[self.qhist.name])
            missing = [n for n, v in (("timestamps of the query history", self.qhist_ts),
                                      ("categories of the query history", self.qhist_cat),
                                      ("timestamps of the clicks", self.click_ts),
                                      ("categories of the clicks", self.click_cat)) if v is None]
            if missing:
                raise ConfigError(f"egin: query mode needs {missing} (parallel sequences of the query / click history)")
            if self.qhist_cat.table != self.click_cat.table:
                raise ConfigError(f"egin: query categories ({self.qhist_cat.table}) and click categories "
                                  f"({self.click_cat.table}) must share one vocabulary (Algorithm 2's CAT())")
            self.query_mode = True
            self.query_cat = next((f for f in s.by_role(Role.QUERY) if f.kind == Kind.CATEGORICAL and f is not self.query
                                   and f.table == self.click_cat.table), None)
        qsf = cfg.query_similarity_field
        if qsf is not None and (not self.query_mode or qsf not in [m.name for m in groups[self.qhist.name]]):
            raise ConfigError(f"egin: query_similarity_field {qsf!r} is not a sequence of the query history")
        if cfg.seeds_mix > 0 and (not self.query_mode or self.query_cat is None):
            raise ConfigError("egin: seeds_mix needs query mode with the current query's category in the clicks' "
                              "category vocabulary (e.g. query_category)")
        self.fields = spec.features  # f_o: the DNN baseline's input
        max_len = self.click.max_len
        self.sx_i2i = SimExtract(gd, cfg.top_k, cfg.bins, max_len, cfg.pos_emb, cfg.sim_value)
        width = len(self.fields) * d + self.sx_i2i.out_dim
        vi = spec.vocab_sizes[self.item.table]
        if cfg.graph:
            self.g_item = nn.Embedding(vi, gd, padding_idx=0)
            nn.init.normal_(self.g_item.weight, std=cfg.graph_init_std)
            self.item_queue = IdQueue(min(cfg.queue_size, vi), vi)
        if self.query_mode:
            self.sx_q2q = SimExtract(gd, cfg.top_k, cfg.bins, self.qhist.max_len, cfg.pos_emb, cfg.sim_value)
            self.sx_q2i = SimExtract(gd, cfg.top_k, cfg.bins, max_len, cfg.pos_emb, cfg.sim_value)
            width += self.sx_q2q.out_dim + self.sx_q2i.out_dim
            if cfg.graph:
                vq = spec.vocab_sizes[self.query.table]
                self.g_query = nn.Embedding(vq, gd, padding_idx=0)
                nn.init.normal_(self.g_query.weight, std=cfg.graph_init_std)
                self.query_queue = IdQueue(min(cfg.queue_size, vq), vq)
        self.mlp = tower(cfg, width)
        if cfg.graph:  # §4.6.1 keep probabilities, from the train split in prepare() (training only)
            self.register_buffer("keep_item", torch.ones(vi), persistent=False)
            if self.query_mode:
                self.register_buffer("keep_query", torch.ones(spec.vocab_sizes[self.query.table]), persistent=False)

    def prepare(self, data) -> None:
        """§4.6.1: the keep probability of every item / query id, from its frequency among the train
        split's behaviour sequences (the graph's input); nothing without ``subsample``."""
        super().prepare(data)
        if not (self.cfg.graph and self.cfg.subsample):
            return
        train = data.split("train")
        pairs = [(self.keep_item, self.click.name)] + ([(self.keep_query, self.qhist.name)] if self.query_mode else [])
        for buf, name in pairs:
            ids = np.asarray(train[name]).ravel()
            cnt = np.bincount(ids[ids > 0], minlength=buf.numel()).astype(np.float64)[: buf.numel()]
            f = cnt / max(cnt.sum(), 1.0)
            keep = np.minimum(1.0, np.sqrt(self.cfg.subsample / np.maximum(f, 1e-300)))
            buf.copy_(torch.from_numpy(keep).to(buf.dtype))

    # ----- embeddings the similarities read --------------------------------------------------
    def _vectors(self, graph_table: str, batch, eb, name: str) -> torch.Tensor:
        """The vectors SimExtract compares for field ``name``: its ids in EGIN's graph table
        ``graph_table`` (``g_item`` / ``g_query``), or with ``graph=False`` the CTR embeddings."""
        if self.cfg.graph:
            return getattr(self, graph_table)(batch[name].long())
        return eb.values[name] if batch[name].dim() == 2 else eb.vector(name)

    def forward(self, batch):
        eb = self.embedding(batch)
        hist = batch[self.click.name]
        mask = hist > 0
        parts = [eb.matrix(self.fields, seq_pool="sum").flatten(1),
                 self.sx_i2i(self._vectors("g_item", batch, eb, self.item.name),
                             self._vectors("g_item", batch, eb, self.click.name), mask)]
        if self.query_mode:
            q = self._vectors("g_query", batch, eb, self.query.name)
            qh = batch[self.qhist.name]
            parts.append(self.sx_q2q(q, self._vectors("g_query", batch, eb, self.qhist.name), qh > 0))  # f_q2q
            parts.append(self.sx_q2i(q, self._vectors("g_item", batch, eb, self.click.name), mask))  # f_q2i
        logit = self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
        aux = self.graph_losses(batch) if self.training and self.cfg.graph else {}
        return self.output(logit, eb, aux=aux)

    # ----- §3.2: the graph losses of this batch ---------------------------------------------
    def graph_losses(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        hist = batch[self.click.name].long()
        mask = hist > 0
        B = hist.shape[0]
        sub = cfg.subsample is not None
        kept = mask & (torch.rand(hist.shape, device=hist.device) < self.keep_item[hist]) if sub else mask
        gmask = kept if sub and cfg.subsample_target == "sequence" else mask  # positions the edges use
        Wi = self.g_item.weight  # anchors by id: a·e_n depends on the anchor's id only
        item_neg = self.item_queue.sample(cfg.negatives)
        out = {}
        if cfg.alpha > 0:
            ih, im, order = hist, gmask, None
            if cfg.seeds_mix > 0:  # §4.6.2: some instances' i2i edges from their seeds sequence, compacted
                seeds = gmask & (batch[self.click_cat.name] == batch[self.query_cat.name].unsqueeze(1))
                use = torch.rand(B, device=hist.device) < cfg.seeds_mix
                im = torch.where(use.unsqueeze(1), seeds, gmask)
                order = torch.sort((~im).to(torch.int8), dim=1, stable=True).indices  # kept positions first
                im = torch.gather(im, 1, order)
                ih = torch.gather(hist, 1, order)
            pr = window_pairs(im, cfg.window, both=False).sample(cfg.max_pairs)  # each edge once, both directions
            a, p = pr.ids(ih, ih)
            out["egin_i2i"] = cfg.alpha * two_way_softmax_loss(Wi, a, Wi, p, item_neg, item_neg)
        if self.query_mode and cfg.query:
            qh = batch[self.qhist.name].long()
            qmask = qh > 0
            qkept = qmask & (torch.rand(qh.shape, device=qh.device) < self.keep_query[qh]) if sub else qmask
            if sub and cfg.subsample_target == "sequence":
                qmask = qkept
            Wq = self.g_query.weight
            query_neg = self.query_queue.sample(cfg.negatives)
            qts, qcat = batch[self.qhist_ts.name], batch[self.qhist_cat.name].long()
            if cfg.beta > 0:
                sim = batch[cfg.query_similarity_field] if cfg.query_similarity_field else None
                pr = query_session_pairs(qts, qmask, cfg.session_gap, cats=qcat, similarity=sim,
                                         min_similarity=cfg.min_query_similarity, both=False).sample(cfg.max_pairs)
                a, p = pr.ids(qh, qh)
                out["egin_q2q"] = cfg.beta * two_way_softmax_loss(Wq, a, Wq, p, query_neg, query_neg)
            if cfg.gamma > 0:
                pr = span_pairs(qts, qmask, qcat, batch[self.click_ts.name], gmask,
                                batch[self.click_cat.name].long(), cfg.span, cfg.span_direction).sample(cfg.max_pairs)
                q, i = pr.ids(qh, hist)
                # query -> item against item negatives, item -> query against query negatives, halved
                out["egin_q2i"] = cfg.gamma * two_way_softmax_loss(Wq, q, Wi, i, query_neg, item_neg)
            self.query_queue.push(qh[qkept] if sub and cfg.subsample_target == "negatives" else qh)  # push skips 0
        self.item_queue.push(hist[kept] if sub and cfg.subsample_target == "negatives" else hist)
        return out

    def item_vectors(self) -> torch.Tensor | None:
        """The item embeddings SimExtract compares [n_items, d] (EGIN's Table 5 / Fig. 4): the graph
        table; None with ``graph=False`` (then the provider's item table, read as for any model)."""
        return self.g_item.weight if self.cfg.graph else None

    def diagnostics(self) -> dict[str, float]:
        """The provider's figures and the filled sizes of the negative queues."""
        out = dict(super().diagnostics())
        if self.cfg.graph:
            out["egin_item_queue"] = float(self.item_queue.filled)
            if self.query_mode:
                out["egin_query_queue"] = float(self.query_queue.filled)
        return out


def _raw_member(members: list[Field]) -> Field | None:
    """The group's raw timestamps: the first parallel sequence that is not embedded."""
    return next((m for m in members[1:] if not m.embed), None)


def _category_member(members: list[Field]) -> Field | None:
    """The group's categories: the first embedded parallel sequence (hist_category, hist_genre)."""
    return next((m for m in members[1:] if m.embed), None)
