"""Shared machinery of DG-ENN's Table 4 baselines (paper §5.3.2): GCN-PNN (``gcn``, gcn_graph.py),
KGAT-PNN (``kgat``, kgat.py) and HGAT-PNN (``hgat``, hgat.py). "We remove the prediction layer of
these models and then apply them on our constructed graphs for embedding enhancement": each
provider propagates over the DG-ENN graphs of §4.1 (built by :func:`dg_graphs.build_graph_data`
from the train split) and serves enhanced user / item / attribute-value tables as in Eq. 22.

One node set for all graphs (:class:`NodeLayout`): ``users | items | values of each user-attribute
field | values of each item-attribute field`` (only the fields of the graphs used), each block
indexed by its table's ids (row 0 = padding, an isolated node). The graphs ``graphs`` selects
(``uattr``, ``iattr``: G_ua / G_vb of §4.1.1, one bipartite part per field; ``uu``, ``vv``, ``uv``:
§4.1.2) are merged into one symmetric graph (:func:`merged_graph`) held as a
:class:`~ctrgraph.embeddings.dg_graphs.DropGraph` (unweighted edges; vv transition counts kept
only so that one user's transitions can be subtracted), so all three providers share DG's
leakage guard: in training, the batch's positive (u, v) edges and those users' own transitions
into and out of v are absent from that step's propagation (:meth:`HeteroGraphEmbedding.target_drops`,
the same rule as ``DualGraphEmbedding.target_drops``); at ``eval()`` the enhanced tables are
computed once without drops and cached (and kept in ``served_<table>`` buffers, so a loaded
checkpoint evaluates without the graphs, as DG's).

:class:`RelationMatmul` applies a different matrix to each row (by relation or node type) without a
loop over relations and without materialising one matrix per row (KGAT's W_r, HGAT's W_τ).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..data.schema import Field, Role
from ..errors import ConfigError
from .base import EmbeddingProvider, FeatureSpec
from .dg_graphs import DGGraphData, DropGraph, build_graph_data
from .served import ServedTables, cached_eval_tables

PARTS = ("uattr", "iattr", "uu", "vv", "uv")
PART_ALIASES = {"all": PARTS, "attr": ("uattr", "iattr"), "collab": ("uu", "vv", "uv"), "uu&vv": ("uu", "vv"),
                "none": ()}


def parse_parts(graphs: str | list[str] | tuple[str, ...], who: str) -> tuple[str, ...]:
    """``"all"``, ``"uv,iattr"``, ``["attr", "uv"]`` -> graph parts in :data:`PARTS` order (validated)."""
    items = [graphs] if isinstance(graphs, str) else list(graphs)
    got: set[str] = set()
    for it in items:
        if not isinstance(it, str):
            raise ConfigError(f"{who} embedding: graphs must be names, got {it!r}")
        for g in (s.strip().lower() for s in it.split(",") if s.strip()):
            names = PART_ALIASES.get(g, (g,))
            bad = [n for n in names if n not in PARTS]
            if bad:
                raise ConfigError(f"{who} embedding: unknown graph {g!r}; use a comma list of {list(PARTS)} "
                                  f"or one of {sorted(PART_ALIASES)}")
            got.update(names)
    return tuple(p for p in PARTS if p in got)


# ----- node layout and the merged graph ----------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A contiguous range of node ids: one node type (HGAT) and one embedding table."""

    kind: str  # "user" | "item" | "uattr" | "iattr" | "entity"
    name: str  # type name: "user", "item", an attribute field's name, or "entity"
    table: str | None  # the embedding table whose ids index the block (None: KG entities)
    offset: int
    size: int


class NodeLayout:
    """Blocks of node ids, in order; ``node_type[i]`` is the block index of node i."""

    def __init__(self, blocks: list[tuple[str, str, str | None, int]]):
        out, off = [], 0
        for kind, name, table, size in blocks:
            out.append(Block(kind, name, table, off, int(size)))
            off += int(size)
        self.blocks: list[Block] = out
        self.n = off
        self.node_type = np.repeat(np.arange(len(out)), [b.size for b in out]).astype(np.int64)

    def __getitem__(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def with_block(self, kind: str, name: str, table: str | None, size: int) -> NodeLayout:
        return NodeLayout([(b.kind, b.name, b.table, b.size) for b in self.blocks] + [(kind, name, table, size)])

    @property
    def n_types(self) -> int:
        return len(self.blocks)


def merged_graph(g: DGGraphData, layout: NodeLayout, parts: tuple[str, ...]) -> sp.csr_matrix:
    """All selected DG-ENN graphs as one symmetric matrix over the layout's nodes. Entries are
    multiplicities (1 for every edge; the vv transition counts for item-item edges, so that
    :class:`DropGraph` can subtract one user's transitions); edges are used unweighted."""
    u, i = layout["user"], layout["item"]
    rows, cols, vals = [], [], []

    def add(m: sp.spmatrix, r_off: int, c_off: int, mirror: bool, counts: bool = False) -> None:
        m = sp.coo_matrix(m)
        keep = m.data != 0
        r, c = m.row[keep].astype(np.int64) + r_off, m.col[keep].astype(np.int64) + c_off
        v = m.data[keep].astype(np.float32) if counts else np.ones(r.size, np.float32)
        rows.extend([r, c] if mirror else [r])
        cols.extend([c, r] if mirror else [c])
        vals.extend([v, v] if mirror else [v])

    if "uv" in parts:
        add(g.uv, u.offset, i.offset, mirror=True)
    if "uu" in parts:  # symmetric already (kNN graph, symmetrised)
        add(g.uu, u.offset, u.offset, mirror=False)
    if "vv" in parts:  # symmetric transition counts C + C^T
        add(g.vv, i.offset, i.offset, mirror=False, counts=True)
    for kind, owner, inc in (("uattr", u, g.user_attr), ("iattr", i, g.item_attr)):
        for b in (b for b in layout.blocks if b.kind == kind):  # one bipartite part per field (a few)
            add(inc[b.name], owner.offset, b.offset, mirror=True)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return sp.csr_matrix((v, (r, c)), shape=(layout.n, layout.n))


class MaskedGraph(DropGraph):
    """:class:`DropGraph` plus the per-step edge mask (for attention over the present edges) and
    Kipf & Welling's renormalisation ``D~^-1/2 (A + I) D~^-1/2`` (``D~ = D + I``, GCN and HGAT)."""

    def edge_mask(self, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean mask over the CSR entries: off-diagonal edges present after ``drop`` (pair ids,
        one count each)."""
        cnt = self.pair_cnt
        if drop is not None and drop.numel():
            cnt = cnt.index_add(0, drop, torch.full(drop.shape, -1.0, device=drop.device))
        on = ~self.is_diag
        if cnt.numel() == 0:
            return torch.zeros_like(on)
        return on & (cnt > 0)[self.pid]

    def kipf(self, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Renormalised adjacency (torch sparse CSR, self-loops included, dropped edges valued 0)."""
        on = self.edge_mask(drop)
        d = torch.bincount(self.rows[on], minlength=self.n).to(torch.float32) + 1.0
        s = d.rsqrt()
        val = torch.where(on | self.is_diag, s[self.rows] * s[self.cols], torch.zeros((), device=d.device))
        return torch.sparse_csr_tensor(self.crow, self.cols, val, size=(self.n, self.n), check_invariants=False)


def target_item_pairs(u: torch.Tensor, v: torch.Tensor, seq: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                      n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transitions of user u into and out of item v in u's train sequence, as item pairs
    (a, b) (DG's vv drop rule; a positive whose item is not in u's sequence has none)."""
    keys, prev, nxt = seq
    if not keys.numel() or not u.numel():
        e = torch.zeros(0, dtype=torch.long, device=u.device)
        return e, e
    q = u * n_items + v
    at = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    hit = keys[at] == q
    at, vh = at[hit], v[hit]
    pv, nv = prev[at], nxt[at]  # 0: no previous / next item
    return torch.cat([pv[pv > 0], nv[nv > 0]]), torch.cat([vh[pv > 0], vh[nv > 0]])


# ----- one matrix per row, vectorised ------------------------------------------------------------
class RelationMatmul:
    """``y[p] = w[rel[p]] @ x[p]`` for a fixed relation index per row (``w``: [R, d_out, d_in]).

    Written as sparse products so that neither a loop over relations nor a [P, d_out, d_in] gather
    is needed: ``y = M @ W_stack`` with M [P, R*d_in] holding x[p] in relation rel[p]'s column
    block; the backward uses the same trick for dx and ``M^T @ dy`` for dw. The sparsity structure
    depends on ``rel`` only and is built once."""

    def __init__(self, rel: torch.Tensor, n_rel: int, d_in: int, d_out: int):
        rel = rel.long()
        p = rel.numel()
        self.shape = (p, n_rel, d_in, d_out)
        ar = torch.arange(p + 1, dtype=torch.long)
        self.m_crow, self.m_col = ar * d_in, (rel[:, None] * d_in + torch.arange(d_in)).reshape(-1)
        self.g_crow, self.g_col = ar * d_out, (rel[:, None] * d_out + torch.arange(d_out)).reshape(-1)
        # M^T: row r*d_in + j lists the rows p of relation r (ascending), value x[p, j]
        order = torch.argsort(rel, stable=True)
        cnt = torch.bincount(rel, minlength=n_rel)
        start = torch.cumsum(cnt, 0) - cnt
        row_cnt = cnt.repeat_interleave(d_in)
        self.t_crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(row_cnt, 0)])
        row = torch.repeat_interleave(torch.arange(n_rel * d_in), row_cnt, output_size=p * d_in)
        pos = torch.arange(p * d_in) - self.t_crow[row]
        src = order[start[row // d_in] + pos]
        self.t_col, self.t_idx = src, src * d_in + row % d_in

    def to(self, device) -> RelationMatmul:
        for k in ("m_crow", "m_col", "g_crow", "g_col", "t_crow", "t_col", "t_idx"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p, r, d_in, d_out = self.shape
        if x.shape != (p, d_in) or w.shape != (r, d_out, d_in):
            raise ValueError(f"RelationMatmul: expected x {(p, d_in)} and w {(r, d_out, d_in)}, "
                             f"got {tuple(x.shape)} and {tuple(w.shape)}")
        return _RelMM.apply(x.contiguous(), w, self)


class _RelMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, s: RelationMatmul):
        p, r, d_in, d_out = s.shape
        ctx.s = s
        ctx.save_for_backward(x, w)
        m = torch.sparse_csr_tensor(s.m_crow, s.m_col, x.reshape(-1), size=(p, r * d_in), check_invariants=False)
        return torch.sparse.mm(m, w.transpose(1, 2).reshape(r * d_in, d_out))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = ctx.s
        p, r, d_in, d_out = s.shape
        g = g.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gm = torch.sparse_csr_tensor(s.g_crow, s.g_col, g.reshape(-1), size=(p, r * d_out), check_invariants=False)
            gx = torch.sparse.mm(gm, w.reshape(r * d_out, d_in))
        if ctx.needs_input_grad[1]:
            mt = torch.sparse_csr_tensor(s.t_crow, s.t_col, x.reshape(-1)[s.t_idx], size=(r * d_in, p),
                                         check_invariants=False)
            gw = torch.sparse.mm(mt, g).reshape(r, d_in, d_out).transpose(1, 2)
        return gx, gw, None


def aggregate(rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """``out[r] = sum_e weight[e] h[cols[e]]`` over the edges e with ``rows[e] = r`` (attention messages)."""
    return torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, rows, weight[:, None] * h[cols])


class _State(dict):
    """Graph state shared by copies of a provider (torch sparse tensors cannot be deep-copied)."""

    def __deepcopy__(self, memo):
        return self


def _side_fields(spec: FeatureSpec, role: Role) -> list[Field]:
    return [f for f in spec.schema.by_role(role) if f.encoded]


# ----- the provider base ---------------------------------------------------------------------------
class HeteroGraphEmbedding(ServedTables, EmbeddingProvider):
    """Enhanced tables from one propagation over the merged DG-ENN graphs (subclasses: :meth:`propagate`)."""

    name = "hetero"
    #: as DG (dg.py's module docstring): start the output bias at the train log-odds, so that the
    #: base rate is not learned through the embeddings and turned into a popularity score by the
    #: degree-normalised propagation
    prior_bias_default: bool = True
    default_graphs = "all"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, graphs: str | list[str] | None = None,
                 layers: int = 2, knn_k: int = 10, knn_alpha: float = 0.5, drop_target_edges: bool = True,
                 uv_targets: bool = True):
        super().__init__(spec, dim, init_std=init_std)
        who = self.name
        self.parts = parse_parts(self.default_graphs if graphs is None else graphs, who)
        for key, val, lo in (("layers", layers, 0), ("knn_k", knn_k, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"{who} embedding: {key} must be an integer >= {lo}, got {val!r}")
        if not 0.0 <= float(knn_alpha) <= 1.0:
            raise ConfigError(f"{who} embedding: knn_alpha must be in [0, 1], got {knn_alpha!r}")
        user, item = spec.schema.first(Role.USER), spec.schema.first(Role.ITEM)
        if user is None or item is None or user.table not in self.tables or item.table not in self.tables:
            raise ConfigError(f"{who} embedding: the schema needs an embedded user field and an embedded item field")
        self.user_field, self.item_field = user, item
        self.init_std, self.layers, self.knn_k, self.knn_alpha = init_std, layers, knn_k, float(knn_alpha)
        self.drop_target_edges, self.uv_targets = bool(drop_target_edges), bool(uv_targets)
        blocks = [("user", "user", user.table, spec.vocab_sizes[user.table]),
                  ("item", "item", item.table, spec.vocab_sizes[item.table])]
        for kind, role in (("uattr", Role.USER_ATTR), ("iattr", Role.ITEM_ATTR)):
            if kind in self.parts:
                blocks += [(kind, f.name, f.table, spec.vocab_sizes[f.table]) for f in _side_fields(spec, role)]
        tables = [b[2] for b in blocks]
        if len(set(tables)) != len(tables):
            raise ConfigError(f"{who} embedding: two graph node types share one table ({tables}); "
                              f"each attribute field needs its own vocabulary")
        self.layout = NodeLayout(blocks)
        # served tables of the last evaluation (Eq. 22), saved with checkpoints (as DG's)
        self.init_served([b.table for b in self.layout.blocks], spec.vocab_sizes, dim)

    # ----- graphs (train split only) -----------------------------------------------------------------
    def prepare(self, data) -> None:
        self.install(build_graph_data(data, self.knn_k, (self.knn_alpha, 1.0 - self.knn_alpha), True, self.uv_targets))

    def install(self, g: DGGraphData) -> None:
        """Merge and store the graphs; subclasses add their own state in :meth:`_install`."""
        lay = self.layout
        if (g.n_users, g.n_items) != (lay["user"].size, lay["item"].size):
            raise ConfigError(f"{self.name} embedding: graphs have {g.n_users} users / {g.n_items} items, "
                              f"the vocabularies {lay['user'].size} / {lay['item'].size}")
        st = _State(graph=MaskedGraph(merged_graph(g, lay, self.parts), "sym", 1.0),
                    seq=tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (g.seq_keys, g.seq_prev,
                                                                                          g.seq_next)))
        self._install(st, g)
        self._g = st
        self._device = torch.device("cpu")
        self._cache = None

    def _install(self, st: _State, g: DGGraphData) -> None:
        """Subclass hook: derived per-graph state (fixed structures) into ``st``."""

    def _to_device(self, dev: torch.device) -> None:
        if self._g is None or dev == self._device:
            return
        for k, v in list(self._g.items()):
            if isinstance(v, torch.Tensor):
                self._g[k] = v.to(dev)
            elif isinstance(v, tuple) and all(isinstance(t, torch.Tensor) for t in v):
                self._g[k] = tuple(t.to(dev) for t in v)
            elif isinstance(v, (DropGraph, RelationMatmul)):
                v.to(dev)
        self._device = dev

    # ----- the leakage guard ------------------------------------------------------------------------
    def target_drops(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Pair ids (of the merged graph) of the batch's positive (u, v) edges and of those users'
        own transitions into and out of v (DG's rule, research notes §2.3 option a)."""
        label = self.spec.schema.label
        if not self.drop_target_edges or label not in batch or self._g is None:
            return None
        st, lay = self._g, self.layout
        pos = batch[label] > 0
        u = batch[self.user_field.name][pos].long()
        v = batch[self.item_field.name][pos].long()
        uo, io = lay["user"].offset, lay["item"].offset
        a, b = target_item_pairs(u, v, st["seq"], lay["item"].size)
        gr = st["graph"]
        return torch.cat([gr.pair_ids(u + uo, v + io), gr.pair_ids(a + io, b + io)])

    # ----- the enhanced tables ---------------------------------------------------------------------
    def node_input(self) -> torch.Tensor:
        """Layer-0 node embeddings: the plain tables of the layout's blocks, stacked."""
        return torch.cat([self.tables[b.table].weight for b in self.layout.blocks if b.table is not None])

    def propagate(self, x0: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """Final node embeddings [N, dim] from layer-0 ones (subclasses)."""
        raise NotImplementedError

    def enhanced_tables(self, drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every table of the layout replaced by its nodes' final embeddings (Eq. 22)."""
        if self._g is None:
            raise ConfigError(f"{self.name} embedding: graphs are not built; call prepare(data) with the training data")
        h = self.propagate(self.node_input(), drop)
        return {b.table: h[b.offset: b.offset + b.size] for b in self.layout.blocks if b.table is not None}

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        self._to_device(self.tables[self.user_field.table].weight.device)
        if not self.training:
            self._enh = cached_eval_tables(self)
            return
        self._enh = self.enhanced_tables(self.target_drops(batch))

    def lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        t = self._enh.get(table)
        return super().lookup(table, ids) if t is None else nn.functional.embedding(ids, t)

    # ----- cache invalidation, copies ----------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_enh={}, _used=[], _cache=None)
        return state




def combine(layers: list[torch.Tensor], how: str) -> torch.Tensor:
    """DG's layer combination (Eq. 13 read as the mean over layers 0..L), or the last layer."""
    if how == "last":
        return layers[-1]
    s = torch.stack(layers, 0).sum(0)
    return s / len(layers) if how == "mean" else s


def check_choice(who: str, key: str, val, ok) -> None:
    if val not in ok:
        raise ConfigError(f"{who} embedding: {key} must be one of {list(ok)}, got {val!r}")


class LayerCombinedEmbedding(HeteroGraphEmbedding):
    """A replacement propagator whose output combines its layers 0..L (``combine``: ``mean`` as DG's
    Eq. 13, ``sum``, or ``last``); subclasses create their per-layer parameters in :meth:`make_layers`."""

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, graphs: str | list[str] = "all",
                 layers: int = 2, combine: str = "mean", knn_k: int = 10, knn_alpha: float = 0.5,
                 drop_target_edges: bool = True, uv_targets: bool = True):
        super().__init__(spec, dim, init_std, graphs, layers, knn_k, knn_alpha, drop_target_edges, uv_targets)
        check_choice(self.name, "combine", combine, ("mean", "sum", "last"))
        self.combine = combine
        self.make_layers(dim, layers)

    def make_layers(self, dim: int, layers: int) -> None:
        raise NotImplementedError
