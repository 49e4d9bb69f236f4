"""Dual Graph enhanced Embedding (Guo et al., "Dual Graph enhanced Embedding Neural Network for
CTR Prediction", KDD 2021) as an embedding provider: any model becomes ``dg-<model>``
(``dg-pnn`` is the paper's DG-ENN, Eqs. 4-6 with the enhanced embeddings of Eq. 22).

Per forward (whole-graph propagation; ml100k-sized graphs are small):

1. Attribute stage (§4.2). ``attr_mode="field"`` is the paper's divide-and-conquer: for each
   user-attribute field t, the bipartite graph G_ua^(t) over users and the values of t
   (:func:`~ctrgraph.graphs.attribute_incidence`); propagation from ``[E_user; E_t]`` with the
   field's own aggregator parameters (Eq. 12, aggregators Eqs. 9-11), layer combination Eq. 13,
   then ``z_u = mean_t ê_u^(t)`` (Eq. 14); attribute values ``z_a = ê_a^(t)`` (their own Eq. 13
   output). Items likewise; context fields keep plain embeddings (Eq. 15).
   **Default ``attr_mode="linear"``** (the paper's Fig. 4 alternative (i)): ``z_u = W [e_u;
   mean embedding of u's values in each field]``, attribute value tables plain. Our choice, from
   measurement: on ml100k-ctr every field-graph configuration tried lowered the full model's test
   AUC (0.8374-0.8409 with field / mixed graphs, LightGCN or GCN, 1 or 2 attribute layers, against
   0.8448 for the collaborative graphs alone and 0.8453 / 0.8480 with the linear transform; see
   docs/dg-enn.md), while the attribute graph alone still beats PNN. The paper's own method is
   the preset ``paper`` (``embedding.params.preset: paper``, :data:`PAPER`: ``attr_mode="field"``
   and the paper's literal choices below); the study's ablations run on it.
2. Collaborative graph convolution with organised learning (§4.3): ``ẑ_U = prop_uu(z_U)``,
   ``ẑ_V = prop_vv(z_V)`` (Eqs. 16-18), then ``[p̂_U; p̂_V] = prop_uv([ẑ_U; ẑ_V])`` (Eqs. 19-21),
   whose layer 0 is ``ẑ`` itself as the paper notes.
3. Eq. 22: the user table becomes p̂_U, the item table p̂_V (so behaviour sequences, which share
   the item table, use enhanced item embeddings), attribute tables z_A / z_B (``hist_genre``, which
   shares the ``genres`` table, too), context plain.

Leakage guard (research notes §2.3): in training, for every positive (u, v) of the batch, the uv
edge (u, v) and the user's own transitions (prev -> v, v -> next in u's train sequence) are
removed from that step's uv and vv graphs before propagation (degrees recomputed), so a
training instance's own target edge cannot reach its prediction (tested). The uu kNN graph
(Eq. 8) is computed once from Y, which contains the targets, so a target can shape which users are
its user's neighbours; ``knn_leave_out=True`` rebuilds Eq. 8 per step from Y without the batch's
positive pairs (exact, tested; one kNN build per step; measured no AUC change on ml100k-ctr,
docs/dg-enn.md), ``knn_alpha=0`` makes it attribute-only. At ``eval()`` the enhanced tables are
computed once without drops and cached until ``train()`` or a state-dict load.

Choices the paper leaves open (research notes §2.2), each a parameter:
- ``combine="mean"``: Eqs. 13/14/17/18/20/21 say "average" but print Σ: the mean over layers
  (1/(L+1)) and over fields (1/J); ``"sum"`` gives the printed sums.
- ``isolated="zero"`` (the literal formulas): a node with no neighbour (an item without train
  clicks or transitions, a user whose edges are all dropped this step) has zero layers >= 1, so
  its layer mean is its embedding / (L+1). ``"keep"`` gives it a unit self-loop instead (its
  embedding unshrunk). Measured: zero 0.8480 vs keep 0.8453 (linear attributes; 0.8388 vs 0.8374
  with field graphs): the shrinkage marks items the graph knows nothing about.
- GCN (Eq. 9) uses the literal centre weight ``1/|N_h|``; sigma = LeakyReLU(0.2), no bias
  (:class:`ctrgraph.graphs.GCN` / :class:`~ctrgraph.graphs.NGCF`). Separate parameters per
  attribute field and per collaborative stage (uu, vv, uv).
- Graphs: uu = Eq. 8 kNN with k = ``knn_k`` (10), α = (``knn_alpha``, 1 - ``knn_alpha``), Y = train
  positives, A = all user-attribute values, symmetrised; vv = undirected, unweighted transitions
  of each user's time-ordered train sequence; uv = train positives plus the (user, history item)
  pairs of training rows (``uv_histories``; needed under the paper's protocol, a no-op on ml100k-ctr).
  ``uv_targets=False`` builds Y (uv and Eq. 8) from the histories only, as the paper's protocol does
  (the training targets are then in no graph at all). With one positive per user the per-step drop
  is itself label-correlated (a user's negatives in other batches see the target edge, its
  positive never does), so this is the cleaner choice there (it is not what inverted dg-pnn there,
  see below).

Output bias (``prior_bias_default``; our choice, measured): a dg model should start its output bias
(Eq. 6's b) at the train log-odds. Otherwise the base rate is first learned through the embeddings,
and the propagation turns a shift shared by all nodes into a popularity score: with
``d(h,i) = 1/sqrt(|N_h||N_i|)``, ``(Â 1)_v = sqrt(|N_v|) mean_{u in N_v} 1/sqrt(|N_u|)`` grows with the
degree, so lowering every logit lowers popular items most. On ``ml100k-dgenn`` (1 positive per
10 sampled, mostly unpopular, negatives; base rate 1/11) this ranked positives last
(valid AUC 0.22-0.30 after epoch 1; one epoch of label-blind "lower every logit" training gives
the same inversion) and early stopping kept it; on ml100k-ctr (base rate 0.76) the same shift
happens to go the right way. With the prior bias:
dg-pnn 0.7964 vs 0.4533 on ml100k-dgenn, 0.8466 vs 0.8471 (seed 1) on ml100k-ctr (docs/dg-enn.md).
``train.prior_bias: auto`` (the default) reads this flag.

Neighbour sampling (§4.4, ``fanouts``; default None = the whole-graph step above): a training step
computes Eq. 22 only for the user / item ids the batch looks up, on sampled multi-hop blocks (uv
stage from those ids, uu/vv stage from the uv stage's input frontier, attribute stage on the rows
of the uu/vv frontier); see :mod:`ctrgraph.embeddings.dg_sampled`, :mod:`ctrgraph.graphs.drop_sampling` and docs/dg-enn.md.
Sampled edge parts (``edge_parts`` = K > 1; not the paper's, default 1): each LightGCN layer of a training
step on one of K fixed hash parts of the edges, scaled by K (unbiased; :meth:`DualGraphEmbedding._edge_sampled`).

Ablation switches (paper §5.3-5.4): ``graphs`` (Table 5: ``attr`` | ``uu,vv`` | ``uv`` | ``all``),
``aggregator`` (Fig. 3), ``attr_mode`` (Fig. 4: ``field`` divide-and-conquer, ``mixed`` one graph
over all fields, ``linear`` W [e_id; mean attribute embedding per field]), ``collab`` (Fig. 5:
``organized``, or the parallel ``sum`` / ``mean`` / ``attention`` of the uu/vv and uv stage
outputs, both stages then starting from Z), ``layers`` / ``attr_layers``.
"""
from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..data.schema import FeatureSpec, Field, Role
from ..errors import ConfigError
from ..graphs import dg as graph_dg
from ..graphs.dg import DGGraphData, DropGraph, build_graph_data
from ..layers.lookup import table_lookup
from .base import EmbeddingProvider, Step
from .dg_sampled import SampledSteps, parse_fanouts
from .served import ServedTables, cached_eval_tables

GRAPHS = ("attr", "uu", "vv", "uv")
GRAPH_ALIASES = {"all": GRAPHS, "none": (), "attribute": ("attr",), "uu&vv": ("uu", "vv"), "uu_vv": ("uu", "vv")}
AGGREGATORS = ("lightgcn", "gcn", "ngcf")
ATTR_MODES = ("field", "mixed", "linear")
COLLAB_MODES = ("organized", "sum", "mean", "attention")
#: the paper's method (preset ``paper``): divide-and-conquer field graphs (§4.2, Eqs. 9-14), LightGCN
#: (Eq. 11, the best aggregator of Fig. 3), layer / field averages (Eqs. 13-14, 17-21), organised
#: learning (§4.3), all four graphs, enhanced attribute values (Eq. 15), Eq. 8 with α1 = α2 = 0.5,
#: literal isolated nodes. Not in the paper, kept: the target-edge drop (R2.3) and ``layers=2`` (the
#: paper tunes 1-4 per data set without reporting the choice).
PAPER = {"attr_mode": "field", "aggregator": "lightgcn", "collab": "organized", "combine": "mean", "graphs": "all",
         "attr_values": "enhanced", "knn_alpha": 0.5, "isolated": "zero"}


def parse_graphs(graphs: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"all"``, ``"uu,vv"``, ``["attr", "uv"]`` ... -> a tuple of graph names (validated)."""
    items = [graphs] if isinstance(graphs, str) else list(graphs)
    out: list[str] = []
    for it in items:
        if not isinstance(it, str):
            raise ConfigError(f"dg embedding: graphs must be names, got {it!r}")
        for g in (s.strip().lower() for s in it.split(",") if s.strip()):
            names = GRAPH_ALIASES.get(g, (g,))
            for n in names:
                if n not in GRAPHS:
                    raise ConfigError(f"dg embedding: unknown graph {g!r}; use a comma list of {list(GRAPHS)} "
                                      f"or one of {sorted(GRAPH_ALIASES)}")
                if n not in out:
                    out.append(n)
    return tuple(out)


class StageAttention(nn.Module):
    """Fig. 5 "attention": per node, softmax over candidate vectors c_k of ``a^T tanh(W c_k + b)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, 1, bias=False)

    def forward(self, cands: list[torch.Tensor]) -> torch.Tensor:
        c = torch.stack(cands, 1)  # [n, K, d]
        w = torch.softmax(self.query(torch.tanh(self.proj(c))), dim=1)
        return (w * c).sum(1)


def _one_hot_rows(r: torch.Tensor) -> torch.Tensor | None:
    """For a CSR matrix whose rows hold at most one stored entry, each equal to 1 (a row-normalised
    categorical incidence), the column of every row, ``r.shape[1]`` for an empty row: ``r @ x`` is then
    ``cat([x, 0]).index_select(0, sel)``, the same values (one term times 1; tested); None otherwise."""
    crow, val = r.crow_indices(), r.values()
    counts = crow.diff()
    if r.layout != torch.sparse_csr or counts.numel() == 0 or bool((counts > 1).any()) or bool((val != 1).any()):
        return None
    sel = torch.full((r.shape[0],), r.shape[1], dtype=torch.int64, device=crow.device)
    sel[counts == 1] = r.col_indices().long()
    return sel


def _mm_grads(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``a.mm(b)`` for the output gradient ``g`` as autograd's ``MmBackward0`` computes
    them (``mm_mat1_backward`` / ``mm_mat2_backward``: the same products on the same strides)."""
    if a.stride(0) == 1 and a.stride(1) == a.shape[0]:
        ga = b.mm(g.t()).t()
    else:
        ga = g.mm(b.t())
    if b.stride(0) == 1 and b.stride(1) == b.shape[0]:
        gb = g.t().mm(a).t()
    else:
        gb = a.t().mm(g)
    return ga, gb


_NO_SEL = torch.zeros(0, dtype=torch.int64)


class _LinearAttributes(torch.autograd.Function):
    """Fig. 4 (i)'s ``e W_0^T + sum_f R_f (T_f W_f^T)`` (``W``'s column blocks ``W_f``, CSR ``R_f`` with
    their transposes) as one autograd node. Forward and backward run the operations autograd runs for
    the composition (``mm``, ``sparse.mm``, the split's concatenation), so values and gradients are the
    same bit for bit (tested), without about 30 autograd nodes per step. Each input gets one gradient
    from here, so the order in which autograd adds a table's other gradients is unchanged. A one-hot
    ``R_f`` (``mats``' third item, :func:`_one_hot_rows`) is applied as a gather in the forward. On CPU
    float tensors with the native kernel built, forward and backward run those operations in C++
    (``csrc/scaled_spmm.cpp``: ``linear_attr_forward`` / ``linear_attr_backward``), one call each
    instead of about 20 Python calls (bit for bit the same, tested)."""

    @staticmethod
    def forward(ctx, e, weight, mats, *tables):
        from ..graphs import native

        # the sum's additions in one kernel pass (the same, in the same order) where it is built
        fused = e.device.type == "cpu" and e.dtype in (torch.float32, torch.float64) and native.spmm_kernel() is not None
        ctx.save_for_backward(e, weight, *tables)
        ctx.mats, ctx.fused = mats, fused
        if fused:  # the operations below in C++ (csrc/scaled_spmm.cpp: linear_attr_forward), the sum's
            # additions in one pass (ordered_sum: the same, in the same order; a one-hot R_f's rows gathered there)
            return native.spmm_kernel().linear_attr_forward(e, weight, list(tables),
                                                            [_NO_SEL if sel is None else sel for *_, sel in mats],
                                                            [r for r, *_ in mats])
        w = weight.split(e.shape[1], dim=1)
        out = e.mm(w[0].t())
        for (r, _, sel), t, wf in zip(mats, tables, w[1:]):
            p = t.mm(wf.t())
            if sel is None:
                out = out + torch.sparse.mm(r, p)
            else:  # [p; 0] gathered: r @ p without the sparse product's per-call cost
                out = out + torch.cat([p, p.new_zeros(1, p.shape[1])]).index_select(0, sel)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        e, weight, *tables = ctx.saved_tensors
        if ctx.fused:  # the operations below in C++ (linear_attr_backward)
            from ..graphs import native

            ge, gw, *gts = native.spmm_kernel().linear_attr_backward(g, e, weight, tables, [r_t for _, r_t, _ in ctx.mats])
            return (ge, gw, None, *gts)
        w = weight.split(e.shape[1], dim=1)
        ge, gw0 = _mm_grads(g, e, w[0].t())
        gws, gts = [gw0.t()], []
        for (_, r_t, _), t, wf in zip(ctx.mats, tables, w[1:]):
            gt, gwf = _mm_grads(torch.sparse.mm(r_t, g), t, wf.t())
            gts.append(gt)
            gws.append(gwf.t())
        return (ge, torch.cat(gws, dim=1), None, *gts)


class _GraphState(dict):
    """The normalised graphs (read-only after :meth:`DualGraphEmbedding.install`); copies of the
    provider share it (torch sparse CSR tensors cannot be deep-copied)."""

    def __deepcopy__(self, memo):
        return self


def _side_fields(spec: FeatureSpec, role: Role) -> list[Field]:
    return [f for f in spec.schema.by_role(role) if f.encoded]


class DualGraphEmbedding(SampledSteps, ServedTables, EmbeddingProvider):
    """Enhanced user / item / attribute tables (Eq. 22) from attribute and collaborative graphs."""

    name = "dg"
    #: start the model's output bias at the train log-odds (``train.prior_bias: auto``); see the
    #: module docstring: without it a rare-positive protocol inverts the ranking in the first epochs
    prior_bias_default: bool = True
    presets: ClassVar[dict[str, dict]] = {"paper": PAPER}

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4,
                 graphs: str | list[str] = "all", aggregator: str = "lightgcn", layers: int = 2,
                 attr_layers: int | None = None, attr_mode: str = "linear", collab: str = "organized",
                 combine: str = "mean", knn_k: int = 10, knn_alpha: float = 0.5, drop_target_edges: bool = True,
                 isolated: str = "zero", uv_histories: bool = True, uv_targets: bool = True,
                 attr_values: str = "enhanced", fanouts: str | list[int] | None = None,
                 cf_fanouts: str | list[int] | None = None, knn_leave_out: bool = False, edge_parts: int = 1):
        super().__init__(spec, dim, init_std=init_std)
        self.graphs = parse_graphs(graphs)
        checks = [("aggregator", aggregator, AGGREGATORS), ("attr_mode", attr_mode, ATTR_MODES),
                  ("collab", collab, COLLAB_MODES), ("combine", combine, ("mean", "sum")),
                  ("isolated", isolated, ("keep", "zero")), ("attr_values", attr_values, ("enhanced", "plain"))]
        for key, val, ok in checks:
            if val not in ok:
                raise ConfigError(f"dg embedding: {key} must be one of {list(ok)}, got {val!r}")
        attr_layers = layers if attr_layers is None else attr_layers
        for key, val in (("layers", layers), ("attr_layers", attr_layers), ("knn_k", knn_k)):
            if not isinstance(val, int) or isinstance(val, bool) or val < (1 if key == "knn_k" else 0):
                raise ConfigError(f"dg embedding: {key} must be an integer >= {1 if key == 'knn_k' else 0}, got {val!r}")
        if not 0.0 <= float(knn_alpha) <= 1.0:
            raise ConfigError(f"dg embedding: knn_alpha must be in [0, 1], got {knn_alpha!r}")
        user, item = spec.schema.first(Role.USER), spec.schema.first(Role.ITEM)
        if user is None or item is None or user.table not in self.tables or item.table not in self.tables:
            raise ConfigError("dg embedding: the schema needs an embedded user field and an embedded item field")
        self.user_field, self.item_field = user, item
        self.uattr, self.iattr = _side_fields(spec, Role.USER_ATTR), _side_fields(spec, Role.ITEM_ATTR)
        self.aggregator, self.layers, self.attr_layers = aggregator, layers, attr_layers
        self.attr_mode, self.collab, self.combine = attr_mode, collab, combine
        self.knn_k, self.knn_alpha, self.drop_target_edges = knn_k, float(knn_alpha), bool(drop_target_edges)
        self.isolated, self.uv_histories, self.attr_values = isolated, bool(uv_histories), attr_values
        self.uv_targets = bool(uv_targets)
        self.fanouts = parse_fanouts(fanouts, layers)
        self.cf_fanouts = parse_fanouts(cf_fanouts, layers, "cf_fanouts")  # the uu / vv stage's own; None: ``fanouts``
        if self.cf_fanouts is not None and self.fanouts is None:
            raise ConfigError("dg embedding: cf_fanouts (the uu/vv stage's fan-outs) needs fanouts (sampled steps)")
        self.knn_leave_out = bool(knn_leave_out)
        if self.knn_leave_out and "uu" not in self.graphs:
            raise ConfigError("dg embedding: knn_leave_out rebuilds the uu kNN graph per step; graphs has no uu")
        if self.knn_leave_out and self.fanouts is not None:
            raise ConfigError("dg embedding: knn_leave_out works with whole-graph steps only (fanouts=None)")
        if not isinstance(edge_parts, int) or isinstance(edge_parts, bool) or edge_parts < 1:
            raise ConfigError(f"dg embedding: edge_parts must be an integer >= 1 (1: every edge), got {edge_parts!r}")
        self.edge_parts = edge_parts
        if edge_parts > 1 and (aggregator != "lightgcn" or self.fanouts is not None or self.knn_leave_out):
            raise ConfigError("dg embedding: edge_parts > 1 samples LightGCN's whole-graph steps: it needs "
                              "aggregator=lightgcn, no fanouts and no knn_leave_out")
        from ..graphs import make_propagator

        def prop(n):
            return make_propagator(aggregator, dim, n, combine)

        self.attr_prop = nn.ModuleDict()
        self.attr_lin = nn.ModuleDict()
        if "attr" in self.graphs:
            for side, fields in (("u", self.uattr), ("i", self.iattr)):
                if not fields:
                    continue
                if attr_mode == "field":  # divide-and-conquer: one propagator (parameters) per field
                    for f in fields:
                        self.attr_prop[f"{side}_{f.name}"] = prop(attr_layers)
                elif attr_mode == "mixed":
                    self.attr_prop[side] = prop(attr_layers)
                else:
                    self.attr_lin[side] = nn.Linear((len(fields) + 1) * dim, dim, bias=False)
        self.cf_prop = nn.ModuleDict({g: prop(layers) for g in ("uu", "vv", "uv") if g in self.graphs})
        self.stage_att = nn.ModuleDict({"u": StageAttention(dim), "i": StageAttention(dim)}) \
            if collab == "attention" else nn.ModuleDict()
        # the served tables (Eq. 22) of the last evaluation, saved with checkpoints so that a loaded
        # run evaluates / predicts without the graphs (which are rebuilt only by prepare(data))
        value_tables = [f.table for f in self.uattr + self.iattr] \
            if "attr" in self.graphs and attr_mode != "linear" and attr_values == "enhanced" else []
        self.init_served(list(dict.fromkeys([user.table, item.table] + value_tables)), spec.vocab_sizes, dim)

    # ----- graphs (train split only) ----------------------------------------------------------
    def prepare(self, data) -> None:
        self.install(build_graph_data(data, self.knn_k, (self.knn_alpha, 1.0 - self.knn_alpha), self.uv_histories,
                                      self.uv_targets))

    def install(self, g: DGGraphData) -> None:
        """Normalise and store the graphs. Graphs that propagate side by side (the attribute field
        graphs of both sides; uu and vv) are stored as one block-diagonal matrix, so a layer is one
        sparse product for all of them (the parameters stay separate per block)."""
        from ..graphs import (
            bipartite_adjacency,
            csr_int32,
            mixed_incidence,
            row_norm,
            to_torch_sparse,
            transpose_csr,
        )

        norm = "gcn" if self.aggregator == "gcn" else "sym"
        iso = 1.0 if self.isolated == "keep" else 0.0
        n_u, n_i = self.spec.vocab_sizes[self.user_field.table], self.spec.vocab_sizes[self.item_field.table]
        if (g.n_users, g.n_items) != (n_u, n_i):
            raise ConfigError(f"dg embedding: graphs have {g.n_users} users / {g.n_items} items, "
                              f"the vocabularies {n_u} / {n_i}")
        st = _GraphState(lin={}, lin_t={}, attr_blocks=[])
        owner = {"u": self.user_field.table, "i": self.item_field.table}
        if "attr" in self.graphs:
            mats_all = []
            for side, fields, inc in (("u", self.uattr, g.user_attr), ("i", self.iattr, g.item_attr)):
                mats = [inc[f.name] for f in fields]
                if not mats:
                    continue
                if self.attr_mode == "field":  # block: (parameters, side, owner table, value tables)
                    for f, b in zip(fields, mats):
                        st["attr_blocks"].append((f"{side}_{f.name}", side, owner[side], [f.table]))
                        mats_all.append(bipartite_adjacency(b))
                elif self.attr_mode == "mixed":
                    st["attr_blocks"].append((side, side, owner[side], [f.table for f in fields]))
                    mats_all.append(bipartite_adjacency(mixed_incidence(mats)[0]))
                else:
                    st["lin"][side] = [to_torch_sparse(row_norm(b)) for b in mats]
                    # int32 copies and their transposes for the whole-table step (:meth:`_attribute_stage`):
                    # the backward reuses the transpose, where torch's own rebuilds it (a sort) every step
                    st["lin_t"][side] = [(csr_int32(r), csr_int32(transpose_csr(r)), _one_hot_rows(r))
                                         for r in st["lin"][side]]
            if mats_all:
                st["attr"] = DropGraph(sp.block_diag(mats_all, format="csr"), norm, iso).adjacency()
        cf = [(k, m) for k, m in (("uu", g.uu), ("vv", g.vv)) if k in self.graphs]
        if cf:  # uu (never dropped, 0/1) and vv (transition counts) side by side
            st["cf1"] = DropGraph(sp.block_diag([m for _, m in cf], format="csr"), norm, iso)
            st["cf1_keys"] = [k for k, _ in cf]
            st["vv_offset"] = n_u if "uu" in self.graphs else 0
            if self.knn_leave_out:  # what a per-step Eq. 8 rebuild needs (host side)
                st["knn"] = (g.knn_y, g.knn_attr, [m for k, m in cf if k != "uu"], norm, iso)
        if "uv" in self.graphs:
            st["uv"] = DropGraph(bipartite_adjacency(g.uv), norm, iso)
        st["seq"] = tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (g.seq_keys, g.seq_prev, g.seq_next))
        st["n"] = (n_u, n_i)
        self._g = st
        self._device = torch.device("cpu")
        self._cache = None

    def _to_device(self, dev: torch.device) -> None:
        if self._g is None or dev == self._device:
            return
        st = self._g
        st["lin"] = {s: [a.to(dev) for a in v] for s, v in st["lin"].items()}
        st["lin_t"] = {s: [tuple(None if a is None else a.to(dev) for a in m) for m in v] for s, v in st["lin_t"].items()}
        if "attr" in st:
            st["attr"] = st["attr"].to(dev)
        for k in ("cf1", "uv"):
            if k in st:
                st[k].to(dev)
        for v in st.get("views", {}).values():
            v.to(dev)
        st["seq"] = tuple(a.to(dev) for a in st["seq"])
        self._device = dev

    # ----- the enhanced tables ----------------------------------------------------------------
    def _mean(self, xs: list[torch.Tensor]) -> torch.Tensor:
        s = torch.stack(xs, 0).sum(0)
        return s / len(xs) if self.combine == "mean" else s

    def _block_propagate(self, adj: torch.Tensor, xs: list[torch.Tensor], mods: list[nn.Module],
                         n_layers: int, split: bool = True) -> list[torch.Tensor] | torch.Tensor:
        """Eqs. 12-13 on a block-diagonal graph: one sparse product per layer for all blocks, then
        each block's own aggregator (its parameters) on its rows; returns each block's Eq. 13 (``split``)
        or all blocks' rows in one tensor."""
        from ..graphs import combine_layers, spmm
        from ..graphs import lightgcn_layers

        sizes = [x.shape[0] for x in xs]
        h = torch.cat(xs)
        layers = [h]
        light = self.aggregator == "lightgcn"  # Eq. 11 has no per-block transformation
        fused = lightgcn_layers(adj, h, n_layers, self.combine) if light else None  # one native node, same bits
        if fused is not None:
            return list(fused.split(sizes)) if split else fused
        for l in range(n_layers):
            agg = spmm(adj, h, adj)
            if not light:
                agg = torch.cat([m.layer(l, a, x) for m, a, x in zip(mods, agg.split(sizes), h.split(sizes))])
            h = agg
            layers.append(h)
        out = combine_layers(layers, self.combine)
        return list(out.split(sizes)) if split else out

    def _attribute_stage(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """§4.2: refined id tables z_U, z_V (Eqs. 12-14); attribute value tables go to ``out``."""
        st = self._g
        e_u, e_v = self.tables[self.user_field.table].weight, self.tables[self.item_field.table].weight
        if "attr" not in self.graphs:
            return e_u, e_v
        if self.attr_mode == "linear":  # Fig. 4 (i): W [e_id; mean attribute embedding of each field]
            from ..graphs import spmm

            z = {}
            for side, e, fields in (("u", e_u, self.uattr), ("i", e_v, self.iattr)):
                mats = st["lin_t"].get(side, [])
                if not mats:
                    z[side] = e
                    continue
                # W [e; R_1 T_1; ...] = e W_0^T + sum_f R_f (T_f W_f^T) (W's column blocks W_f): the
                # value tables are small, so no [n, (F + 1) d] concatenation and no GEMM with it
                weight = self.attr_lin[side].weight
                tables = [self.tables[f.table].weight for f in fields]
                if torch.is_grad_enabled() and all(r.layout == torch.sparse_csr for r, *_ in mats):
                    z[side] = _LinearAttributes.apply(e, weight, mats, *tables)  # one autograd node
                    continue
                w = weight.split(e.shape[1], dim=1)
                out = e @ w[0].t()
                for (r, r_t, _), t, wf in zip(mats, tables, w[1:]):
                    out = out + spmm(r, t @ wf.t(), r_t)
                z[side] = out
            return z["u"], z["i"]
        blocks = st["attr_blocks"]
        if not blocks:
            return e_u, e_v
        xs = [torch.cat([self.tables[own].weight] + [self.tables[t].weight for t in vals]) for _, _, own, vals in blocks]
        hs = self._block_propagate(st["attr"], xs, [self.attr_prop[k] for k, *_ in blocks], self.attr_layers)
        per: dict[str, list[torch.Tensor]] = {"u": [], "i": []}
        for (_, side, own, vals), h in zip(blocks, hs):
            n = self.tables[own].weight.shape[0]
            per[side].append(h[:n])
            sizes = [self.tables[t].weight.shape[0] for t in vals]
            if self.attr_values == "enhanced":  # Eq. 15's z_A / z_B
                for t, part in zip(vals, h[n:].split(sizes)):
                    out[t] = part
        z_u = self._mean(per["u"]) if per["u"] else e_u  # Eq. 14
        z_v = self._mean(per["i"]) if per["i"] else e_v
        return z_u, z_v

    def _merge(self, side: str, cands: list[torch.Tensor]) -> torch.Tensor:
        if len(cands) == 1:
            return cands[0]
        if self.collab == "attention":
            return self.stage_att[side](cands)
        s = torch.stack(cands, 0).sum(0)
        return s / len(cands) if self.collab == "mean" else s

    def enhanced_tables(self, drop_uv: torch.Tensor | None = None, drop_vv: torch.Tensor | None = None,
                        cf1: DropGraph | None = None, ops: tuple | None = None) -> dict[str, torch.Tensor]:
        """Eq. 22's tables ``{table: [vocab, d]}`` with the given uv / vv pair ids dropped (``cf1``: this
        step's uu + vv graph instead of the stored one, see :meth:`leave_out_cf1`; ``ops``: this step's
        (uu + vv, uv) operators instead, :meth:`step_operators`)."""
        if self._g is None:
            raise ConfigError("dg embedding: graphs are not built; call prepare(data) with the training data "
                              "(or serve the tables written by `ctrgraph export`)")
        st = self._g
        n_u, _ = st["n"]
        out: dict[str, torch.Tensor] = {}
        z_u, z_v = self._attribute_stage(out)
        zh_u, zh_v = z_u, z_v
        organized = self.collab == "organized"
        zh = None  # [ẑ_U; ẑ_V] as one tensor, when the uu / vv stage gives exactly that
        if "cf1" in st:  # Eqs. 16-18: uu and vv side by side
            keys = st["cf1_keys"]
            xs = [z_u if k == "uu" else z_v for k in keys]
            whole = organized and "uv" in self.graphs and keys == ["uu", "vv"]
            op = ops[0] if ops is not None else (cf1 or st["cf1"]).operator(drop_vv)
            op = self._edge_sampled(cf1 or st["cf1"], op)
            hs = self._block_propagate(op, xs, [self.cf_prop[k] for k in keys],
                                       self.layers, split=not whole)
            if whole:  # the uv stage starts from these rows as they are (no split, then cat, of the same rows)
                zh, hs = hs, []
            for k, h in zip(keys, hs):
                if k == "uu":
                    zh_u = h
                else:
                    zh_v = h
        p_u, p_v = zh_u, zh_v
        if "uv" in self.graphs:  # Eqs. 19-21
            a = self._edge_sampled(st["uv"], ops[1] if ops is not None else st["uv"].operator(drop_uv))
            start = zh if zh is not None else torch.cat([zh_u, zh_v]) if organized else torch.cat([z_u, z_v])
            q = self.cf_prop["uv"](a, start, adj_t=a)
            # one split (its backward: one concatenation of the two tables' gradients), not two slices
            # (each slice's backward writes a zero [n, d] tensor, then the two are added)
            q_u, q_v = q.split([n_u, q.shape[0] - n_u])
            if organized:
                p_u, p_v = q_u, q_v
            else:  # Fig. 5: parallel stages, merged
                p_u = self._merge("u", ([zh_u] if "uu" in self.graphs else []) + [q_u])
                p_v = self._merge("i", ([zh_v] if "vv" in self.graphs else []) + [q_v])
        out[self.user_field.table] = p_u
        out[self.item_field.table] = p_v
        return out

    def _edge_sampled(self, graph: DropGraph, op):
        """This training step's operator with ``edge_parts`` = K > 1 (not the paper's; a labelled option for
        large graphs, docs/dg-enn.md "Sampled edge parts"): each LightGCN layer of the stage on one of the
        graph's K fixed disjoint symmetric edge parts (:meth:`DropGraph.edge_parts`), drawn uniformly and
        independently per layer and stage, scaled by K, with the full graph's degree normalisation and the
        step's dropped edges that fall in the part: E[K Â_part] = Â per layer, independent layers, so the
        stage is unbiased. Evaluation, cached tables and exports use every edge. ``op`` unchanged where
        K = 1, outside training, or where the fused native stage does not run (then exact, warned once)."""
        from ..graphs import native

        if self.edge_parts == 1 or not self.training or not torch.is_grad_enabled():
            return op
        if (op.has_diag or op.a01.device.type != "cpu" or native.spmm_kernel() is None
                or self.combine not in ("mean", "sum")):
            if not getattr(self, "_warned_parts", False):
                warnings.warn("dg embedding: edge_parts samples the fused native LightGCN stage (CPU, "
                              "isolated=zero); this step runs on every edge", RuntimeWarning, stacklevel=2)
                self._warned_parts = True
            return op
        choice = torch.randint(self.edge_parts, (self.layers,)).tolist()
        return graph.sampled_operator(op, choice, self.edge_parts)

    def _positives(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pos = batch[self.spec.schema.label] > 0
        return batch[self.user_field.name][pos].long(), batch[self.item_field.name][pos].long()

    def leave_out_cf1(self, batch: dict[str, torch.Tensor]) -> DropGraph:
        """This step's uu + vv graph with the uu kNN graph of Eq. 8 rebuilt from Y without the batch's
        positive (u, v) pairs (``knn_leave_out``): whether a user's neighbours co-clicked its own
        training target can then not depend on that target. Exact, and one kNN build per step."""
        from ..graphs import builders

        y, attr, rest, norm, iso = self._g["knn"]
        u, v = (t.cpu().numpy() for t in self._positives(batch))
        if u.size:
            drop = sp.csr_matrix((np.ones(u.size, dtype=np.float32), (u, v)), shape=y.shape)
            y = y - y.multiply(drop > 0)
            y.eliminate_zeros()
        uu = builders.user_knn_graph(y, attr, k=self.knn_k, alpha=(self.knn_alpha, 1.0 - self.knn_alpha))
        return DropGraph(sp.block_diag([uu] + rest, format="csr"), norm, iso).to(self._device)

    def target_drops(self, batch: dict[str, torch.Tensor], cf1: DropGraph | None = None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Pair ids of the batch's positive (u, v) uv edges and of those users' own transitions into
        and out of v in the vv graph (research notes §2.3, option a; ``cf1``: ids into this graph)."""
        st = self._g
        label = self.spec.schema.label
        if not self.drop_target_edges or label not in batch:
            return None, None
        if graph_dg.NUMPY_ON_CPU and st["seq"][0].device.type == "cpu" and batch[label].device.type == "cpu":
            return self._target_drops_np(batch, cf1)
        u, v = self._positives(batch)
        n_u, n_i = st["n"]
        drop_uv = st["uv"].pair_ids(u, v + n_u) if "uv" in st else None
        drop_vv = None
        keys, prev, nxt = st["seq"]
        if "vv" in self.graphs and keys.numel():
            q = u * n_i + v
            at = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
            hit = keys[at] == q
            at, vh = at[hit], v[hit]
            g, o = cf1 or st["cf1"], st["vv_offset"]
            pv, nv = prev[at], nxt[at]  # 0: no previous / next item
            # the (prev, v) then the (next, v) pairs in one pair_ids call (element-wise, so the same ids)
            nb, vq = torch.cat([pv, nv]), torch.cat([vh, vh])
            ok = nb > 0
            drop_vv = g.pair_ids(nb[ok] + o, vq[ok] + o)
        return drop_uv, drop_vv

    def _drop_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`_target_drops_np` looks up per positive (u, v), computed once from the fixed graphs
        (the numpy steps of :meth:`DropGraph.pair_ids_np`, per key, -1 for no edge): the sorted keys
        ``u * n_items + v`` of every uv edge and every sequence position, the uv pair id of each, and
        the vv pair ids of its (previous item, v) and (next item, v) transitions. Kept with the graphs."""
        st = self._g
        if "drop_table" in st:
            return st["drop_table"]
        n_u, n_i = st["n"]
        keys, prev, nxt = (a.cpu().numpy() for a in st["seq"])
        parts = [keys]
        if "uv" in st:  # the uv graph's pairs (lo, hi) = (u, n_u + v)
            pk = st["uv"].pair_keys.cpu().numpy()
            lo, hi = pk // st["uv"].n, pk % st["uv"].n
            parts.append((lo * n_i + hi - n_u)[(lo < n_u) & (hi >= n_u)])
        k = np.unique(np.concatenate(parts)).astype(np.int64)
        u, v = k // n_i, k % n_i

        def ids(g: DropGraph, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            q, gk = lo * g.n + hi, g.pair_keys.cpu().numpy()
            if gk.size == 0 or q.size == 0:
                return np.full(q.size, -1, dtype=np.int64)
            pos = np.minimum(np.searchsorted(gk, q), gk.size - 1)
            return np.where((gk[pos] == q) & (lo != hi), pos, -1).astype(np.int64)

        uv_id = ids(st["uv"], u, v + n_u) if "uv" in st else np.full(k.size, -1, dtype=np.int64)
        pv = np.full(k.size, -1, dtype=np.int64)
        nv = pv.copy()
        if "cf1" in st and "vv" in self.graphs and keys.size:
            at = np.minimum(np.searchsorted(keys, k), keys.size - 1)
            hit = keys[at] == k
            o = st["vv_offset"]
            for out, nb in ((pv, prev), (nv, nxt)):  # 0: no previous / next item
                b = np.where(hit, nb[at], 0)
                ok = b > 0
                out[ok] = ids(st["cf1"], b[ok] + o, v[ok] + o)
        st["drop_table"] = (k, uv_id, pv, nv)
        return st["drop_table"]

    def step_operators(self, batch: dict[str, torch.Tensor]) -> tuple | None:
        """This training step's (uu + vv, uv) operators without the batch's own positive edges in one native
        call (:func:`ctrgraph.graphs.native.dg_drops`: the lookups of :meth:`_target_drops_np` in
        :meth:`_drop_table`, then the dropped pairs and scales of :meth:`DropGraph.operator`; the same
        dropped edges in the same order and the same scales, bit for bit, tested), where that applies:
        target drops on, the stored graphs (no per-step kNN graph) on the CPU, LightGCN's literal norm, the
        native kernel built; None otherwise (:meth:`target_drops` then :meth:`DropGraph.operator`). A
        step's numpy work was about 25 small calls, each slower than its arithmetic inside a training loop."""
        from ..graphs import native

        st = self._g
        label = self.spec.schema.label
        if (not self.drop_target_edges or label not in batch or not graph_dg.NUMPY_ON_CPU
                or st["seq"][0].device.type != "cpu" or batch[label].device.type != "cpu" or native.spmm_kernel() is None):
            return None
        graphs = [st.get("uv"), st.get("cf1")]
        states = [None if g is None else g.native_state() for g in graphs]
        if any(g is not None and a is None for g, a in zip(graphs, states)):
            return None
        if "drop_index" not in st:
            k, uv_id, pv, nv = self._drop_table()
            n_u, n_i = st["n"]
            uptr = np.searchsorted(k, np.arange(n_u + 1, dtype=np.int64) * n_i).astype(np.int64)
            st["drop_index"] = (torch.from_numpy(k), torch.from_numpy(uptr),
                                [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (uv_id, pv, nv)])
        keys, uptr, ids = st["drop_index"]
        out = native.dg_drops(batch[label], batch[self.user_field.name], batch[self.item_field.name], st["n"][1],
                              keys, uptr, ids, states[0] or [], states[1] or [])
        uv, cf1 = (None if g is None else g.scaled(*out[3 * i: 3 * i + 3]) for i, g in enumerate(graphs))
        return cf1, uv

    def _target_drops_np(self, batch: dict[str, torch.Tensor], cf1: DropGraph | None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:meth:`target_drops` on the CPU, in numpy (the same ids, ordered by (u, v)): about 40
        small torch ops per step cost more than the arithmetic. With the stored uu + vv graph, one
        binary search per positive in :meth:`_drop_table` (the same ids in the same order as the three
        searches below, tested)."""
        st = self._g
        if cf1 is None:
            k, uv_id, pv, nv = self._drop_table()
            pos = batch[self.spec.schema.label].numpy() > 0
            q = np.sort(batch[self.user_field.name].numpy()[pos].astype(np.int64) * st["n"][1]
                        + batch[self.item_field.name].numpy()[pos].astype(np.int64))
            drop_uv = drop_vv = None
            at = np.minimum(np.searchsorted(k, q), max(k.size - 1, 0))
            at = at[k[at] == q] if k.size else at[:0]
            if "uv" in st:
                d = uv_id[at]
                drop_uv = torch.from_numpy(d[d >= 0])
            if "vv" in self.graphs and st["seq"][0].numel():
                a, b = pv[at], nv[at]
                drop_vv = torch.from_numpy(np.concatenate([a[a >= 0], b[b >= 0]]))
            return drop_uv, drop_vv
        pos = batch[self.spec.schema.label].numpy() > 0
        u = batch[self.user_field.name].numpy()[pos].astype(np.int64)
        v = batch[self.item_field.name].numpy()[pos].astype(np.int64)
        n_u, n_i = st["n"]
        # in (u, v) order: the binary searches below then walk their keys in order (about 2x faster); the
        # order of the ids is immaterial (every user of them takes their distinct values, sorted)
        q = u * n_i + v
        order = np.argsort(q, kind="stable")
        q, u, v = q[order], u[order], v[order]
        drop_uv = torch.from_numpy(st["uv"].pair_ids_np(u, v + n_u)) if "uv" in st else None
        drop_vv = None
        keys, prev, nxt = (a.numpy() for a in st["seq"])
        if "vv" in self.graphs and keys.size:
            at = np.minimum(np.searchsorted(keys, q), keys.size - 1)
            hit = keys[at] == q
            at, vh = at[hit], v[hit]
            g, o = cf1 or st["cf1"], st["vv_offset"]
            nb, vq = np.concatenate([prev[at], nxt[at]]), np.concatenate([vh, vh])  # 0: no previous / next item
            ok = nb > 0
            drop_vv = torch.from_numpy(g.pair_ids_np(nb[ok] + o, vq[ok] + o))
        return drop_uv, drop_vv

    def begin(self, batch: dict[str, torch.Tensor]) -> Step:
        """This step: the cached tables at eval; in training Eq. 22's tables without the batch's own
        positive edges (``enh``), or, with ``fanouts``, the sampled rows of the ids the batch holds
        (:meth:`SampledSteps._begin_sampled`)."""
        self._to_device(self.tables[self.user_field.table].weight.device)
        if not self.training:
            return {"enh": cached_eval_tables(self), "rows": {}}
        if self.fanouts is not None:
            return self._begin_sampled(batch)
        cf1 = self.leave_out_cf1(batch) if self.knn_leave_out and self.spec.schema.label in batch else None
        ops = self.step_operators(batch) if cf1 is None else None
        if ops is not None:
            return {"enh": self.enhanced_tables(ops=ops), "rows": {}}
        return {"enh": self.enhanced_tables(*self.target_drops(batch, cf1), cf1=cf1), "rows": {}}

    def lookup(self, table: str, ids: torch.Tensor, step: Step) -> torch.Tensor:
        if table in step["rows"]:
            return self._lookup_rows(table, ids, step)
        t = step["enh"].get(table)
        # table_lookup: a gather whose backward is one index_add (much cheaper than that of t[ids])
        return super().lookup(table, ids, step) if t is None else table_lookup(t, ids)

    def plain_lookup(self, table: str, step: Step) -> bool:
        """Tables neither enhanced (Eq. 22) nor sampled in this step are plain row gathers."""
        return table not in step["rows"] and step["enh"].get(table) is None

    def lookup_table(self, table: str, step: Step) -> tuple[torch.Tensor, int | None] | None:
        """This step's Eq. 22 table of ``table`` (no padding row), or the plain one; None for the
        sampled rows of a ``fanouts`` step."""
        if table in step["rows"]:
            return None
        t = step["enh"].get(table)
        if t is None:
            emb = self.tables[table]
            return None if emb.sparse else (emb.weight, emb.padding_idx)
        return t, None

    # ----- copies (eval-cache invalidation and export: served.ServedTables) -----------------
    def __getstate__(self):  # copies / pickles carry no eval cache
        state = self.__dict__.copy()
        state.update(_cache=None)
        return state


