"""DemiNet (Wang, Luo, Ding, Wang, Deng, "DemiNet: Dependency-Aware Multi-Interest Network with
Self-Supervised Graph Learning for Click-Through Rate Prediction", AAAI 2022).

Per instance, the behaviour sequence S_u (post-padded, most recent last) becomes a heterogeneous
graph over its positions (:mod:`ctrgraph.graphs.sequence_graph`: r_in, r_out, r_sim, r_self,
Eqs. 1-5). Node features h_i = the behaviour group's embedded sequences concatenated (item id ‖
category / genre, research notes §4.2 #3), so ``D = n_members * d``.

1. Multi-dependency interaction module (``operator="dha"``), ``gnn_layers`` layers, each:
   per head φ (``heads`` = Φ) the projection h^φ = W^φ h (D/Φ dims, GAT convention, §4.2 #4);
   inter-node attention per relation r, a_(r)ij^φ = LeakyReLU(a^(r)φ · [h_i^φ ‖ h_j^φ]) (Eq. 6, a
   vector per relation and head, §4.2 #5), softmax over i's r-neighbours (Eq. 7), h_(r)i^φ =
   Σ α h_k^φ (Eq. 8); inter-dependency attention e_(r)i^φ = LeakyReLU(w_d^φ · h_(r)i^φ + b_d^φ)
   (Eq. 9), β = softmax over the relations i has neighbours under (Eq. 10, §4.2 #8), h'_i = ‖_φ
   Σ_r β h_(r)i^φ (Eq. 11); ELU after the concatenation, no residual (§4.2 #16). Then H* = H' + E_p
   (Eq. 12), the positional embedding indexed by recency (0 = the most recent behaviour), so that
   padding never shifts a position.
2. Multi-interest extraction (Eq. 13): K heads, each a two-layer feed-forward net with LeakyReLU on
   [h*_i ‖ h_t] (``interest_hidden`` units), masked softmax over the positions (§4.2 #13); v^k =
   Σ_i α_ik h*_i; V = [v^1 .. v^K] [B, K, D].
3. Multi-interest aggregation (Eqs. 14-15): E' = flatten(V) ‖ emb(S_u) ‖ F_i (‖ the profile and
   context fields with ``profile=true``); K interest experts, each its own BatchNorm + MLP
   ``expert_hidden`` (PReLU) -> o^k; a Confi-Net (``confinet_hidden``, shared across k, §4.2 #15) maps
   E^k = v^k ‖ emb(S_u) ‖ F_i (‖ profile) to c^k ∈ R^D, ω^k = softmax_k(c^k · p_k / sqrt(D)) with
   trainable prototypes p_k (Eq. 14); the logit is Σ_k ω^k o^k (Eq. 15 with one logit and a sigmoid,
   equal to the paper's two-way softmax, §4.2 #14). emb(S_u) = the masked mean of the raw behaviour
   vectors; F_i = the target's fields (the sequences' ``target``s).
4. Self-supervised interest learning (Eqs. 16-20): in training, two independent edge-dropout views
   of the graph (``edge_dropout`` = ρ, self loops kept) go through the same GNN and interest
   extractor; per route k a softmax over the D dimensions gives P'_(k), P''_(k); Eq. 18 as printed
   (``ssl_divergence="sym_kl"``: ½ KL(P'‖P'') + ½ KL(P''‖P')) or the true Jensen-Shannon divergence
   (``"js"``), summed over k and averaged over the batch (§4.2 #11); the auxiliary loss
   ``deminet_ssl`` = β · that (``ssl_weight`` = β, Eq. 20). The CTR loss uses the full graph (§4.2 #10):
   three GNN passes per training step, one at inference.

Variants (config values): Group 2 (Table 2) ``aggregation="avg"`` (Multi-Avg: mean of o^k),
``"hard"`` (Hard-Routing: trained as DemiNet, the most confident expert's score at inference),
``"moe"`` (one softmax gate on E' instead of Confi-Net and prototypes); ablations (Table 3) w/o DHA
``operator="none"`` (interests from the initial sequence H + E_p; no graph, so no SSL views), w/o SSL
``ssl_weight=0``, w/o IE ``aggregation="single"`` (one expert on E'); the operator study (Fig. 3b)
``operator="gat"`` (vanilla multi-head GAT on the union of the relations), ``"lightgcn"`` (LGC:
symmetric-normalised union graph without self loops, no weights, mean of layers 0..L), ``"gcmc"``
(one weight matrix per relation, mean over each relation's neighbours, summed, ELU); K = ``interests``
(Fig. 3a: 2 to 16); ``relations`` drops single relations.

Choices the paper leaves open, besides the research notes' §4.2 ones cited above: the profile and
context fields (user attributes, hour ...) enter E' and E^k with ``profile=true`` (default; the paper
lists S_u, P_u and F_i as an instance's input but only S_u and F_i in E'); further behaviour groups
enter as masked means with them.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field as PField
from torch import nn

from ..embeddings import EmbeddedBatch
from ..errors import ConfigError
from ..graphs import edge_softmax, native
from ..graphs.pair_attention import pair_attention
from ..graphs.sequence_graph import RELATIONS, SequenceGraph, band_attention, banded_sum, sequence_graph
from ..layers.mlp import MLP
from .base import CTRModel, ModelConfig

NEG = -1e9  # masked scores (finite: no NaN in the softmax or its gradient on empty rows)


class DemiNetConfig(ModelConfig):
    interests: int = PField(4, ge=1, le=64, description="K interest routes (paper: 4; Taobao 8)")
    eps: int = PField(3, ge=1, description="ε: contextual neighbours before / after a behaviour")
    sim_threshold: float = PField(0.7, ge=-1.0, le=1.0, description="t of r_sim (paper searches 0.6-0.8)")
    relations: list[str] = list(RELATIONS)
    heads: int = PField(2, ge=1, description="Φ attention heads of the GNN")
    gnn_layers: int = PField(2, ge=0)
    operator: Literal["dha", "gat", "lightgcn", "gcmc", "none"] = "dha"
    interest_hidden: int = PField(32, ge=1)
    aggregation: Literal["confinet", "avg", "hard", "moe", "single"] = "confinet"
    expert_hidden: list[int] = [200, 80]
    confinet_hidden: list[int] = [64, 32]
    ssl_weight: float = PField(0.1, ge=0.0, description="β of Eq. 20 (0: w/o SSL)")
    ssl_divergence: Literal["sym_kl", "js"] = "sym_kl"
    edge_dropout: float = PField(0.6, ge=0.0, lt=1.0, description="ρ of the SSL views")
    profile: bool = True
    max_len: int | None = PField(None, ge=1, description="positional embedding size (default: the field's)")


def _edge_attention(hp: torch.Tensor, s_i: torch.Tensor, s_j: torch.Tensor, rows: torch.Tensor,
                    cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 6-8 over an edge list: hp [N, Φ, dh], s_i / s_j [N, Φ] (the h_i / h_j halves of the
    attention), edges (receiver rows, sender cols) -> (aggregated [N, Φ, dh], has a neighbour [N])."""
    n = hp.shape[0]
    if rows.numel() == 0:
        return hp.new_zeros(hp.shape), torch.zeros(n, dtype=torch.bool, device=hp.device)
    alpha = edge_softmax(rows, nn.functional.leaky_relu(s_i[rows] + s_j[cols], 0.2), n)  # [E, Φ]
    out = hp.new_zeros(hp.shape).index_add_(0, rows, alpha.unsqueeze(-1) * hp[cols])
    return out, torch.bincount(rows, minlength=n) > 0


def _sim_attention(g: SequenceGraph, hp: torch.Tensor, z: torch.Tensor, s_i: torch.Tensor,
                   s_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eqs. 6-8 for ``sim``: (h_(sim) [N, Φ, dh], w_d · h_(sim) [N, Φ], has a neighbour [N]) from the
    packed hp [N, Φ, dh], z = w_d · hp [N, Φ] and the attention halves s_i, s_j [N, Φ]. On the CPU the
    fused edge-list kernel (:mod:`ctrgraph.graphs.native`, CSR of the graph's sim edges); elsewhere, or
    where it cannot be built, dense per-instance [L, L] attention in length buckets
    (:func:`~ctrgraph.graphs.pair_attention.pair_attention`). Both are tested against the dense
    formulation."""
    P = hp.shape[1]
    if hp.device.type == "cpu" and native.kernel() is not None:
        rowptr, col, inst = g.sim_csr()
        hr, e_r = native.csr_pair_attention(s_i, s_j, hp, rowptr, col, inst, z=z)
        return hr, e_r, rowptr[1:] > rowptr[:-1]
    vals = torch.cat([hp, z.unsqueeze(-1), s_i.unsqueeze(-1), s_j.unsqueeze(-1)], dim=-1)  # [N, Φ, dh + 3]
    x = g.unpack(vals).transpose(1, 2)  # [B, Φ, L, dh + 3]
    length = torch.arange(1, g.mask.shape[1] + 1, device=g.mask.device)
    lengths = torch.where(g.mask, length, 0).amax(1)  # last valid position + 1
    agg = pair_attention(x[..., -2], x[..., -1], x[..., :-2], g.sim, lengths)  # Eqs. 6-8, on w_d · h too
    agg = g.pack(agg.transpose(1, 2))  # [N, Φ, dh + 1]
    return agg[..., :-1], agg[..., -1].reshape(-1, P), g.pack(g.sim.any(-1))


class DHALayer(nn.Module):
    """One layer of dependency-aware hierarchical attention (Eqs. 6-11) over ``n_rel`` relations, on
    the packed nodes of :class:`~ctrgraph.graphs.sequence_graph.SequenceGraph`; with
    ``vanilla=True`` a multi-head GAT layer over the union of the relations (no inter-dependency
    step)."""

    def __init__(self, dim: int, heads: int, n_rel: int, vanilla: bool = False):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"deminet: the node dimension {dim} must be divisible by heads={heads}")
        self.heads, self.dh, self.vanilla = heads, dim // heads, vanilla
        n_att = 1 if vanilla else n_rel
        self.proj = nn.Linear(dim, dim, bias=False)  # W^φ of every head, stacked
        b = math.sqrt(6.0 / (2 * self.dh + 1))
        self.att_i = nn.Parameter(torch.empty(n_att, heads, self.dh).uniform_(-b, b))  # a^(r)φ, h_i half
        self.att_j = nn.Parameter(torch.empty(n_att, heads, self.dh).uniform_(-b, b))  # a^(r)φ, h_j half
        self.w_d = nn.Parameter(torch.empty(heads, self.dh).uniform_(-b, b))  # Eq. 9's W_d^φ
        self.b_d = nn.Parameter(torch.zeros(heads))

    def forward(self, x: torch.Tensor, g: SequenceGraph) -> torch.Tensor:
        """x [N, D] (the packed nodes of the batch's graphs) -> x' [N, D].

        Computed without materialising the per-relation h_(r)i: Eq. 8 is linear in the messages, so
        Eq. 9's w_d^φ · h_(r)i^φ = Σ_k α_(r)ik^φ (w_d^φ · h_k^φ) is taken on the scalars w_d · h_k,
        and Eq. 11's Σ_r β_(r)i h_(r)i = Σ_k (Σ_r β_(r)i α_(r)ik) h_k: one weighted sum of the
        (shifted) messages per offset of the banded relations plus the ``sim`` edges. Equal to the
        equations (tested against loops); the softmaxes run on [N, Φ]-sized tensors."""
        N, D = x.shape
        hp = self.proj(x).view(N, self.heads, self.dh)  # per-head W^φ h [N, Φ, dh]
        # every per-head score of a node in one matmul: a^(r)φ's two halves (Eq. 6) and w_d^φ (Eq. 9)
        vecs = torch.cat([self.att_i, self.att_j, self.w_d.unsqueeze(0)])  # [Q = 2 n_att + 1, Φ, dh]
        eye = torch.eye(self.heads, dtype=vecs.dtype, device=vecs.device)
        block = torch.einsum("qpd,pr->pdqr", vecs, eye).reshape(D, -1)  # block-diagonal over heads [D, Q Φ]
        parts = (hp.reshape(N, D) @ block).view(N, vecs.shape[0], self.heads).unbind(1)  # Q x [N, Φ]
        n_att = self.att_i.shape[0]
        s_i, s_j, z = parts[:n_att], parts[n_att: 2 * n_att], parts[-1]  # per relation [N, Φ]; w_d^φ · h^φ
        if self.vanilla:  # one attention over the union of the relations' neighbours
            out, _ = _edge_attention(hp, s_i[0], s_j[0], *g.union_edges())
            return nn.functional.elu(out.reshape(N, D))
        es, has, coef, sim = [], [], [], None
        for k, r in enumerate(g.relations):  # at most four relations
            if r == "sim":  # CSR / dense per instance (research: a quarter of the pairs after a few steps)
                hr, e_r, has_r = _sim_attention(g, hp, z, s_i[k], s_j[k])  # Eqs. 6-8; w_d · h_(sim)i
                es.append(e_r)
                has.append(has_r)
                sim = (len(es) - 1, hr)
                continue
            m = g.band[r]  # [N, O]
            if r == "self":  # one neighbour: α = 1 (Eq. 7)
                alpha = m.T.unsqueeze(-1).to(z.dtype)  # [1, N, 1]
                es.append(z * alpha[0])  # w_d · h_(self)i (Eqs. 8-9)
            else:  # Eqs. 6-7 (α [O, N, Φ]) and w_d · h_(r)i (Eqs. 8-9)
                alpha, e_r = band_attention(s_i[k], s_j[k], z, m, g.offsets[r], 0.2, NEG)
                es.append(e_r)
            has.append(m.any(-1))
            coef.append((len(es) - 1, g.offsets[r], alpha))
        e = nn.functional.leaky_relu(torch.stack(es) + self.b_d, 0.2)  # Eq. 9 [R, N, Φ]
        hm = torch.stack(has).unsqueeze(-1)  # [R, N, 1]: n has neighbours under r
        beta = torch.softmax(e.masked_fill(~hm, NEG), dim=0) * hm  # Eq. 10
        out = None
        if coef:  # Eqs. 8 and 11 over the banded relations: one weighted sum of shifted messages
            weight = torch.cat([beta[k] * alpha for k, _, alpha in coef])  # Σ_r β_r α_(r),offset [O_all, N, Φ]
            out = banded_sum(hp, weight.unsqueeze(-1), [o for _, offs, _ in coef for o in offs])
        if sim is not None:
            k, hr = sim
            out = beta[k].unsqueeze(-1) * hr if out is None else torch.addcmul(out, beta[k].unsqueeze(-1), hr)
        return nn.functional.elu(out.reshape(N, D))  # heads concatenated


class GCMCLayer(nn.Module):
    """GCMC-style relational convolution: Σ_r mean over i's r-neighbours of W_r h_j, then ELU."""

    def __init__(self, dim: int, n_rel: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_rel, dim, dim))
        nn.init.xavier_uniform_(self.w)

    def forward(self, x: torch.Tensor, g: SequenceGraph) -> torch.Tensor:
        out = x.new_zeros(x.shape)
        for k, r in enumerate(g.relations):  # at most four relations
            rows, cols = g.edges(r)
            deg = torch.bincount(rows, minlength=x.shape[0]).clamp_min(1).to(x.dtype)
            out = out.index_add(0, rows, (x[cols] @ self.w[k]) / deg[rows].unsqueeze(-1))
        return nn.functional.elu(out)


def lightgcn(x: torch.Tensor, g: SequenceGraph, layers: int) -> torch.Tensor:
    """LGC on the union of the relations without self loops: mean of D^-1/2 A D^-1/2 powers applied
    to the packed nodes x [N, D]."""
    rows, cols = g.union_edges(without_self=True)
    deg = torch.bincount(rows, minlength=x.shape[0]).clamp_min(1).to(x.dtype)
    w = (deg[rows] * deg[cols]).rsqrt().unsqueeze(-1)
    out = [x]
    for _ in range(layers):
        x = x.new_zeros(x.shape).index_add(0, rows, w * x[cols])
        out.append(x)
    return torch.stack(out).mean(0)


class InterestHeads(nn.Module):
    """Eq. 13: K target-aware attention heads, each a two-layer FFN (LeakyReLU) on [h*_i ‖ h_t]; the
    hidden layer is computed for the valid positions only."""

    def __init__(self, dim: int, k: int, hidden: int):
        super().__init__()
        b1 = math.sqrt(6.0 / (2 * dim + hidden))
        self.w_seq = nn.Parameter(torch.empty(k, dim, hidden).uniform_(-b1, b1))
        self.w_tgt = nn.Parameter(torch.empty(k, dim, hidden).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.zeros(k, hidden))
        b2 = math.sqrt(6.0 / (hidden + 1))
        self.w2 = nn.Parameter(torch.empty(k, hidden).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.zeros(k))

    def forward(self, hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hs [B, L, D], ht [B, D], mask [B, L] -> (V [B, K, D], attention [B, K, L])."""
        flat = mask.reshape(-1).nonzero().squeeze(1)  # the valid positions b * L + i
        k, hid = self.w2.shape
        B, L, d = hs.shape
        t = ht @ self.w_tgt.permute(1, 0, 2).reshape(d, k * hid) + self.b1.reshape(-1)  # [B, K*H]
        x = torch.addmm(t.index_select(0, flat // L), hs.reshape(B * L, d).index_select(0, flat),
                        self.w_seq.permute(1, 0, 2).reshape(d, k * hid))  # first layer, valid positions [N, K*H]
        s = native.head_scores(x, self.w2, self.b2, 0.2)  # LeakyReLU, second layer [N, K]
        s = hs.new_full((B * L, k), NEG).index_copy(0, flat, s).view(B, L, k)
        a = torch.softmax(s.transpose(1, 2), dim=-1) * mask.unsqueeze(1)  # [B, K, L], masked
        return torch.bmm(a, hs), a


class DemiNet(CTRModel):
    """Dependency-aware multi-interest network (see the module docstring)."""

    name = "deminet"
    Config = DemiNetConfig
    presets = {"paper": {}, "taobao": {"interests": 8}}
    paper = ("Wang et al., DemiNet: Dependency-Aware Multi-Interest Network with Self-Supervised Graph "
             "Learning for Click-Through Rate Prediction, AAAI 2022")

    def __init__(self, spec, cfg: DemiNetConfig, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        groups = [(g, [m for m in g if m.target is not None]) for g in spec.behavior_groups()]
        main = next(((g, att) for g, att in groups if att), None)
        if main is None:
            raise ConfigError("deminet needs a behaviour sequence field with a target (e.g. hist_item_id -> item_id)")
        members, self.att = main
        self.rest = [m for m in members if m.target is None]
        self.targets = [spec.schema[m.target] for m in self.att]
        self.extra_seqs = [m for g, _ in groups if g is not members for m in g]
        bad = [r for r in cfg.relations if r not in RELATIONS]
        if bad or not cfg.relations or len(set(cfg.relations)) != len(cfg.relations):
            raise ConfigError(f"deminet: relations must be distinct names of {list(RELATIONS)}, got {cfg.relations}")
        self.relations = tuple(cfg.relations)
        target_names = {t.name for t in self.targets}
        self.profile = [f for f in spec.non_sequence_features() if f.name not in target_names] if cfg.profile else []
        n_prof = len(self.profile) + len(self.rest) + (len(self.extra_seqs) if cfg.profile else 0)
        D = self.dim = len(self.att) * d
        K = cfg.interests
        if cfg.operator in ("dha", "gat"):
            n_rel = len(self.relations) if cfg.operator == "dha" else 1
            self.gnn = nn.ModuleList(DHALayer(D, cfg.heads, n_rel, vanilla=cfg.operator == "gat")
                                     for _ in range(cfg.gnn_layers))
        elif cfg.operator == "gcmc":
            self.gnn = nn.ModuleList(GCMCLayer(D, len(self.relations)) for _ in range(cfg.gnn_layers))
        else:
            self.gnn = nn.ModuleList()
        self.max_len = cfg.max_len or members[0].max_len
        self.pos = nn.Embedding(self.max_len, D)  # E_p of Eq. 12, by recency
        nn.init.normal_(self.pos.weight, std=0.01)
        self.extract = InterestHeads(D, K, cfg.interest_hidden)
        e_dim = K * D + 2 * D + n_prof * d  # E' = flatten(V) ‖ emb(S_u) ‖ F_i ‖ profile
        n_experts = 1 if cfg.aggregation == "single" else K
        self.experts = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(e_dim), MLP(e_dim, cfg.expert_hidden, act="prelu", out_dim=1))
            for _ in range(n_experts))
        if cfg.aggregation in ("confinet", "hard"):
            self.confinet = MLP(3 * D + n_prof * d, cfg.confinet_hidden, act="prelu", out_dim=D)  # E^k -> c^k
            self.prototypes = nn.Parameter(torch.randn(K, D) / math.sqrt(D))  # p_k
        elif cfg.aggregation == "moe":
            self.gate = nn.Linear(e_dim, K)

    # ----- the graph side ------------------------------------------------------------------------
    def graph(self, h: torch.Tensor, mask: torch.Tensor) -> SequenceGraph:
        """The batch's sequence graphs (Eqs. 1-5)."""
        return sequence_graph(mask, h, self.cfg.eps, self.cfg.sim_threshold, self.relations)

    def refine(self, h: torch.Tensor, g: SequenceGraph | None) -> torch.Tensor:
        """H' of the interaction module (operator), [B, L, D]."""
        op = self.cfg.operator
        if op == "none" or g is None:
            return h
        x = g.pack(h)
        if op == "lightgcn":
            x = lightgcn(x, g, self.cfg.gnn_layers)
        for layer in self.gnn:
            x = layer(x, g)
        return g.unpack(x)

    def positions(self, mask: torch.Tensor) -> torch.Tensor:
        """E_p rows [B, L, D] by recency (0 = the most recent valid behaviour); zero on padding."""
        n = mask.sum(1, keepdim=True)
        idx = (n - 1 - torch.arange(mask.shape[1], device=mask.device)).clamp(0, self.max_len - 1)
        return self.pos(idx) * mask.unsqueeze(-1).to(self.pos.weight.dtype)

    def interests(self, h: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor, g: SequenceGraph | None,
                  pos: torch.Tensor | None = None):
        """Eqs. 6-13: (V [B, K, D], attention over positions [B, K, L])."""
        hs = self.refine(h, g) + (self.positions(mask) if pos is None else pos)  # Eq. 12 (pos: E_p rows, given)
        return self.extract(hs, ht, mask)

    # ----- forward ---------------------------------------------------------------------------
    def encode(self, batch) -> dict:
        """Everything of one forward: embedded batch, node features, graph, interests, expert scores,
        confidences and the logit (also used by the case studies: interests and confidences)."""
        cfg = self.cfg
        eb: EmbeddedBatch = self.embedding(batch)
        h = torch.cat([eb.values[m.name] for m in self.att], dim=-1)  # [B, L, D] node features
        mask = eb.masks[self.att[0].name]
        ht = torch.cat([eb.vector(t.name) for t in self.targets], dim=-1)  # F_i [B, D]
        mf = mask.unsqueeze(-1).to(h.dtype)
        su = (h * mf).sum(1) / mf.sum(1).clamp_min(1.0)  # emb(S_u): masked mean of the raw behaviours
        prof = [eb.vector(f.name) for f in self.profile] + [eb.vector(m.name) for m in self.rest]
        if cfg.profile:
            prof += [eb.vector(m.name) for m in self.extra_seqs]
        g = self.graph(h, mask) if cfg.operator != "none" else None
        pos = self.positions(mask)  # E_p rows [B, L, D]
        V, att = self.interests(h, ht, mask, g, pos)
        ctx = torch.cat([su, ht] + prof, dim=1)
        e_all = torch.cat([V.flatten(1), ctx], dim=1)  # E'
        o = torch.cat([ex(e_all) for ex in self.experts], dim=1)  # o^k [B, K] (or [B, 1])
        omega = None
        if cfg.aggregation in ("confinet", "hard"):
            K = V.shape[1]
            e_k = torch.cat([V, ctx.unsqueeze(1).expand(-1, K, -1)], dim=-1)  # E^k [B, K, 3D + profile]
            c = self.confinet(e_k.flatten(0, 1)).view(V.shape)  # c^k [B, K, D]
            omega = torch.softmax((c * self.prototypes).sum(-1) / math.sqrt(self.dim), dim=1)  # Eq. 14
            if cfg.aggregation == "hard" and not self.training:
                logit = o.gather(1, omega.argmax(1, keepdim=True)).squeeze(1)
            else:
                logit = (omega * o).sum(1)  # Eq. 15
        elif cfg.aggregation == "moe":
            omega = torch.softmax(self.gate(e_all), dim=1)
            logit = (omega * o).sum(1)
        elif cfg.aggregation == "avg":
            logit = o.mean(1)
        else:
            logit = o.squeeze(1)
        return {"eb": eb, "h": h, "ht": ht, "mask": mask, "pos": pos, "graph": g, "interests": V, "attention": att,
                "scores": o, "confidence": omega, "logit": logit}

    def ssl_loss(self, h: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor, g: SequenceGraph,
                 pos: torch.Tensor | None = None) -> torch.Tensor:
        """Eqs. 16-18: divergence between the interests of two edge-dropout views, summed over the
        routes, averaged over the batch (both views in one pass over the batch stacked twice)."""
        views = g.stack_views(self.cfg.edge_dropout, 2)
        v, _ = self.interests(h.repeat(2, 1, 1), ht.repeat(2, 1), mask.repeat(2, 1), views,
                              None if pos is None else pos.repeat(2, 1, 1))
        v1, v2 = v.chunk(2)
        return interest_divergence(v1, v2, self.cfg.ssl_divergence)

    def forward(self, batch):
        r = self.encode(batch)
        aux = {}
        if self.training and self.cfg.ssl_weight > 0 and r["graph"] is not None:
            aux["deminet_ssl"] = self.cfg.ssl_weight * self.ssl_loss(r["h"], r["ht"], r["mask"], r["graph"],
                                                                    r["pos"])
        return self.output(r["logit"], r["eb"], aux=aux)


def interest_divergence(v1: torch.Tensor, v2: torch.Tensor, kind: str = "sym_kl") -> torch.Tensor:
    """Σ_k divergence of the dimension distributions softmax(v1_k), softmax(v2_k) (Eq. 18), mean
    over the batch: ``sym_kl`` = ½ KL(P'‖P'') + ½ KL(P''‖P') as printed, ``js`` = the true
    Jensen-Shannon divergence (KL of each to their mixture, halved and summed)."""
    lp1, lp2 = torch.log_softmax(v1, dim=-1), torch.log_softmax(v2, dim=-1)
    p1, p2 = lp1.exp(), lp2.exp()
    if kind == "sym_kl":
        d = 0.5 * (p1 * (lp1 - lp2)).sum(-1) + 0.5 * (p2 * (lp2 - lp1)).sum(-1)
    elif kind == "js":
        lm = torch.log(0.5 * (p1 + p2))
        d = 0.5 * (p1 * (lp1 - lm)).sum(-1) + 0.5 * (p2 * (lp2 - lm)).sum(-1)
    else:
        raise ConfigError(f"deminet: ssl_divergence must be sym_kl or js, got {kind!r}")
    return d.sum(1).mean()
