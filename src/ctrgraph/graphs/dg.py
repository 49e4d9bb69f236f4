"""DG-ENN graph state (Guo et al. 2021, §4.1): the graphs built once from the train split, and symmetric graphs
whose normalised adjacency is recomputed cheaply per step with some edges dropped (§2.3 of the
research notes: the batch's own positive edges must not reach its prediction).

All builders come from :mod:`ctrgraph.graphs`; this module only assembles them:

- ``user_attr`` / ``item_attr``: one owner x value incidence per attribute field (G_ua, G_vb, §4.1.1),
- ``uu``: the user kNN graph of Eq. 8, ``vv``: the undirected item transition graph (counts kept
  so that one user's contribution can be subtracted), ``uv``: Y from the train positives (§4.1.2),
- a lookup ``(user, item) -> (previous item, next item)`` in the user's train sequence, so that a
  positive instance's own transitions can be dropped from ``vv`` along with its ``uv`` edge.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..data.schema import Kind, Role
from ..errors import ConfigError
from . import builders
from .from_dataset import attribute_incidences, user_item_from_dataset, user_sequences
from .propagate import ScaledAdjacency

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


#: per-step integer work (pair ids, dropped pairs) of CPU tensors in numpy: the same results (tested
#: against the torch code, which other devices run), without torch's per-op cost on small arrays
NUMPY_ON_CPU = True


def _np(t: torch.Tensor) -> bool:
    return NUMPY_ON_CPU and t.device.type == "cpu"


@dataclass
class DGGraphData:
    """Host-side (scipy) graphs of one data set's train split."""

    n_users: int
    n_items: int
    user_attr: dict[str, sp.csr_matrix]
    item_attr: dict[str, sp.csr_matrix]
    uu: sp.csr_matrix
    vv: sp.csr_matrix  # symmetric transition counts (C + C^T), no diagonal
    uv: sp.csr_matrix  # users x items, 0/1
    seq_keys: np.ndarray  # sorted user * n_items + item of each (first) position in a user sequence
    seq_prev: np.ndarray  # the item before it in the user's sequence (0: none)
    seq_next: np.ndarray  # the item after it (0: none)
    knn_y: sp.csr_matrix | None = None  # the Y of Eq. 8 (users x items, 0/1), for a per-step leave-out kNN
    knn_attr: sp.csr_matrix | None = None  # the A of Eq. 8 (users x attribute values), None: no attributes


def sequence_neighbours(values: np.ndarray, offsets: np.ndarray, users: np.ndarray, n_items: int):
    """For every position of every user sequence: key ``user * n_items + item``, previous and next
    item of the same sequence (0 at the ends). Sorted by key; an item repeated in one user's
    sequence keeps its first position only (its other transitions are then not dropped per step)."""
    lens = np.diff(offsets)
    u = np.repeat(np.asarray(users, dtype=np.int64), lens)
    v = np.asarray(values, dtype=np.int64)
    first = np.zeros(v.size, dtype=bool)
    first[offsets[:-1][lens > 0]] = True
    last = np.zeros(v.size, dtype=bool)
    last[offsets[1:][lens > 0] - 1] = True
    prev = np.where(first, 0, np.roll(v, 1))
    nxt = np.where(last, 0, np.roll(v, -1))
    prev[prev == v] = 0  # self transitions are not edges of the transition graph
    nxt[nxt == v] = 0
    keys = u * n_items + v
    order = np.argsort(keys, kind="stable")
    keys, prev, nxt = keys[order], prev[order], nxt[order]
    keep = np.r_[True, keys[1:] != keys[:-1]] if keys.size else np.zeros(0, dtype=bool)
    return keys[keep], prev[keep], nxt[keep]


def build_graph_data(ds, knn_k: int = 10, knn_alpha: tuple[float, float] = (0.5, 0.5),
                     uv_histories: bool = True, uv_targets: bool = True) -> DGGraphData:
    """Every DG-ENN graph from the **train split** of an encoded data set (fields found by role).

    Y (uv graph and the Y of Eq. 8) = the train positives (``uv_targets``), plus with
    ``uv_histories`` every (user, history item) pair of the training rows. On ml100k-ctr the
    histories are earlier train positives anyway. Under the paper's protocol (one train target per
    user) Y must be the behaviours only (``uv_targets=False``): the targets are then never in any
    graph, as in the paper, and no per-step drop is needed."""
    s = ds.schema
    user, item = s.first(Role.USER), s.first(Role.ITEM)
    if user is None or item is None or not user.encoded or not item.encoded:
        raise ConfigError("dg embedding: the schema needs an encoded user field and an encoded item field")
    n_users, n_items = len(ds.vocabs[user.table]), len(ds.vocabs[item.table])
    hist = next((f for f in s.by_role(Role.BEHAVIOR)
                 if f.kind == Kind.SEQUENCE and f.group is None and f.target == item.name), None)
    tr = ds.split("train")
    inc = list(attribute_incidences(ds, "user").values())
    knn_attr = builders.mixed_incidence(inc)[0].tocsr() if inc else None
    if uv_targets:
        knn_y = user_item_from_dataset(ds, include_histories=True).tocsr()
        uv = knn_y if uv_histories else user_item_from_dataset(ds, include_histories=False).tocsr()
    else:
        if hist is None or not uv_histories:
            raise ConfigError("dg embedding: uv_targets=false needs a behaviour sequence and uv_histories=true")
        uv = knn_y = builders.user_item_graph(tr[user.name], tr[hist.name], n_users, n_items).tocsr()
    uu = builders.user_knn_graph(knn_y, knn_attr, k=knn_k, alpha=knn_alpha).tocsr()
    if hist is not None:
        ts = next((f for f in s.fields if f.group == hist.name and not f.embed), None)
        vals, offs, uids = user_sequences(tr[user.name], tr[hist.name], tr[ts.name] if ts is not None else None)
        vv = builders.transition_graph((vals, offs), n_items, weighted=True)
        keys, prev, nxt = sequence_neighbours(vals, offs, uids, n_items)
    else:  # no behaviour sequence: an empty transition graph
        vv = sp.csr_matrix((n_items, n_items), dtype=np.float32)
        keys = prev = nxt = np.zeros(0, dtype=np.int64)
    return DGGraphData(n_users, n_items, attribute_incidences(ds, "user"), attribute_incidences(ds, "item"),
                       uu, vv.tocsr(), uv, keys, prev, nxt, knn_y, knn_attr)


def edge_part_of(rows: np.ndarray, cols: np.ndarray, n: int, k: int) -> np.ndarray:
    """The part (0 .. k-1) of each unordered node pair {rows[i], cols[i]} of an n-node graph: a
    multiplicative hash of ``min * n + max`` (both directions of an edge share it). DG-ENN's
    ``edge_parts`` sampler (:meth:`DropGraph.edge_parts`)."""
    lo, hi = np.minimum(rows, cols).astype(np.uint64), np.maximum(rows, cols).astype(np.uint64)
    key = lo * np.uint64(n) + hi
    return ((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) % np.uint64(k)


class DropGraph:
    """A symmetric graph over ``n`` nodes as a fixed CSR structure (every edge plus the diagonal),
    whose values are recomputed per step from which undirected pairs are present.

    ``counts`` holds a multiplicity per undirected pair (transition counts; 1 for 0/1 graphs); a
    step may subtract multiplicities (:meth:`adjacency`), a pair is an edge iff its count stays > 0.
    Edges are unweighted (``|N_h|`` of Eqs. 9-11 counts neighbours). Normalisations:

    - ``sym``: ``d(h, i) = 1/sqrt(|N_h||N_i|)`` between neighbours (Eqs. 10-11),
    - ``gcn``: the same plus the centre term ``d(h, h) = 1/|N_h|`` (Eq. 9 read literally; research
      notes 2.2 #4, equal to :func:`ctrgraph.graphs.gcn_literal_norm`).

    A node without neighbours (after the drop) gets the diagonal value ``isolated`` (1: it keeps
    its own embedding in every layer; 0: layers >= 1 are zero, the literal formulas).
    Dropped edges stay in the structure with value 0, so no step re-sorts anything.
    """

    def __init__(self, adj: sp.spmatrix, norm: str = "sym", isolated: float = 1.0):
        if norm not in ("sym", "gcn"):
            raise ConfigError(f"dg embedding: normalisation must be sym or gcn, got {norm!r}")
        a = sp.csr_matrix(adj)
        n = a.shape[0]
        if a.shape != (n, n):
            raise ValueError(f"DropGraph needs a square matrix, got {a.shape}")
        if (a != a.T).nnz:
            raise ValueError("DropGraph needs a symmetric matrix")
        a = a.tocoo()
        off = (a.row != a.col) & (a.data != 0)
        r, c, w = a.row[off].astype(np.int64), a.col[off].astype(np.int64), a.data[off]
        rows = np.concatenate([r, np.arange(n, dtype=np.int64)])
        cols = np.concatenate([c, np.arange(n, dtype=np.int64)])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        is_diag = rows == cols
        up = r < c
        pair_keys = r[up] * n + c[up]
        porder = np.argsort(pair_keys)
        pair_keys, pair_cnt = pair_keys[porder], w[up][porder].astype(np.float32)
        lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
        pid = np.searchsorted(pair_keys, lo * n + hi)
        pid[is_diag] = 0
        self.n, self.norm, self.isolated = n, norm, float(isolated)
        t = torch.from_numpy
        self.rows, self.cols, self.is_diag, self.pid = t(rows), t(cols), t(is_diag), t(pid)
        self.crow = t(np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64))
        self.pair_keys, self.pair_cnt = t(pair_keys), t(pair_cnt)
        # per-step work is O(edges) gathers only: the full graph's degrees, each pair's two directed
        # edges, the diagonal edge of every node (rows are sorted, so node i's is the i-th)
        off = np.flatnonzero(~is_diag)
        pair_edges = np.zeros((pair_keys.size, 2), dtype=np.int64)
        pair_edges[pid[off], (rows[off] > cols[off]).astype(np.int64)] = off
        live = pair_cnt[pid[off]] > 0
        self.pair_edges, self.diag_edges = t(pair_edges), t(np.flatnonzero(is_diag))
        self.never = t(off[~live])  # edges of pairs whose count is not positive: never present
        self.deg0 = t(np.bincount(rows[off[live]], minlength=n).astype(np.float32))
        # the 0/1 structure of the present edges (no diagonal) for :meth:`operator`
        e = off[live]
        # int32 indices where they fit: torch's CPU sparse @ dense converts int64 indices to int32 on
        # every call (index copies; measured 4x slower per product at 1.5M edges, one thread)
        idx = np.int32 if max(n, rows.size) < 2**31 - 1 else np.int64
        self.crow_idx, self.cols_idx = t(self.crow.numpy().astype(idx)), t(cols.astype(idx))
        self.a01 = torch.sparse_csr_tensor(
            t(np.concatenate([[0], np.cumsum(np.bincount(rows[e], minlength=n))]).astype(idx)),
            t(cols[e].astype(idx)), torch.ones(e.size, dtype=torch.float32), size=(n, n), check_invariants=False)

    def to(self, device) -> "DropGraph":
        for k in ("rows", "cols", "is_diag", "pid", "crow", "pair_keys", "pair_cnt", "pair_edges", "diag_edges",
                  "never", "deg0", "a01", "crow_idx", "cols_idx"):
            setattr(self, k, getattr(self, k).to(device))
        self._scale_table = self._native_state = None
        return self

    def _gone(self, drop: torch.Tensor | None) -> torch.Tensor | None:
        """Ids (sorted, distinct) of the pairs whose count reaches 0 after subtracting one per id in
        ``drop`` (None if none): they lose both directed edges."""
        if drop is None or not drop.numel():
            return None
        if _np(drop):  # the same integer steps in numpy: a few µs each, not ~10 per torch op
            ids, k = np.unique(drop.numpy(), return_counts=True)
            was = self.pair_cnt.numpy()[ids]
            gone = torch.from_numpy(ids[(was > 0) & (was - k <= 0)])
        else:
            ids, k = torch.unique(drop, return_counts=True)
            was = self.pair_cnt[ids]
            gone = ids[(was > 0) & (was - k <= 0)]
        return gone if gone.numel() else None

    def _drop(self, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Degrees after subtracting one count per pair id in ``drop``, and the directed edges of the
        pairs that vanished (or None)."""
        deg, dead, gone = self.deg0, None, self._gone(drop)
        if gone is not None:
            dead = self.pair_edges[gone].reshape(-1)
            deg = deg - torch.bincount(self.rows[dead], minlength=self.n).to(deg.dtype)
        return deg, dead

    @staticmethod
    def _scales(deg: torch.Tensor) -> torch.Tensor:
        """1/sqrt(deg) per node, 0 for a node without neighbours (the symmetric normalisation)."""
        return torch.where(deg > 0, deg.clamp_min(1.0).rsqrt(), torch.zeros_like(deg))

    def _diagonal(self, deg: torch.Tensor) -> torch.Tensor:
        centre = deg.clamp_min(1.0).reciprocal() if self.norm == "gcn" else torch.zeros_like(deg)
        return torch.where(deg > 0, centre, torch.full_like(deg, self.isolated))

    def operator(self, drop: torch.Tensor | None = None) -> ScaledAdjacency:
        """The matrix of :meth:`adjacency` as a :class:`ScaledAdjacency` (equal up to float rounding):
        per step only the degrees, the node scales and the dropped edges are computed (O(nodes +
        dropped)), where :meth:`adjacency` recomputes a value per edge (O(edges))."""
        deg, rows, cols, gone = self.deg0, None, None, self._gone(drop)
        literal = self.norm == "sym" and self.isolated == 0.0  # no diagonal: only the scales are needed
        scales = None
        if literal and _np(self.deg0) and (gone is None or _np(gone)):
            scales = self._scales_np(None)
        if gone is not None:
            # the dropped directed edges (lo, hi), (hi, lo) of each gone pair, in pair order: the rows and
            # columns of :meth:`_drop`'s ``pair_edges[gone]`` (the same sequence), from the pair keys
            # (one gather of a small array, where rows[pair_edges[gone]] is two scattered edge gathers)
            if _np(gone):
                key = self.pair_keys.numpy()[gone.numpy()]
                lo, hi = key // self.n, key % self.n
                rows, cols = np.stack([lo, hi], 1).reshape(-1), np.stack([hi, lo], 1).reshape(-1)
                cnt_np = np.bincount(rows, minlength=self.n)
                rows, cols = torch.from_numpy(rows), torch.from_numpy(cols)
                if scales is not None:  # the changed nodes' scales only (deg stays unused)
                    scales = self._scales_np(cnt_np)
                    cnt = None
                else:
                    cnt = torch.from_numpy(cnt_np)
            else:
                key = self.pair_keys[gone]
                lo, hi = torch.div(key, self.n, rounding_mode="floor"), torch.remainder(key, self.n)
                rows, cols = torch.stack([lo, hi], 1).reshape(-1), torch.stack([hi, lo], 1).reshape(-1)
                cnt = torch.bincount(rows, minlength=self.n)
            if cnt is not None:
                deg = deg - cnt.to(deg.dtype)
        if literal:  # no diagonal at all (LightGCN / NGCF, literal isolated)
            if getattr(self, "_zero_diag", None) is None or self._zero_diag.device != deg.device:
                self._zero_diag = torch.zeros_like(self.deg0)
            return ScaledAdjacency(self.a01, self._scales(deg) if scales is None else scales, self._zero_diag, rows,
                                   cols, has_diag=False)
        return ScaledAdjacency(self.a01, self._scales(deg), self._diagonal(deg), rows, cols)

    def native_state(self) -> list[torch.Tensor] | None:
        """What :func:`ctrgraph.graphs.native.dg_drops` reads of this graph (pair counts, pair keys, the full
        graph's scales, its integer degrees, the scale of every degree 0 .. max), for LightGCN's literal
        norm on the CPU; None otherwise (:meth:`operator` then)."""
        if not (self.norm == "sym" and self.isolated == 0.0 and _np(self.deg0) and _np(self.pair_keys)):
            return None
        if getattr(self, "_native_state", None) is None:
            self._scales_np(None)  # the degree table, the full graph's scales
            self._native_state = [self.pair_cnt.contiguous(), self.pair_keys.contiguous(), self._s0,
                                  torch.from_numpy(self._deg0_np), torch.from_numpy(self._scale_table)]
        return self._native_state

    def edge_parts(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The present edges' 0/1 structure (``a01``) split into ``k`` disjoint parts by
        :func:`edge_part_of` of each unordered pair (so every part is symmetric), each ``(crow, col)`` in
        ``a01``'s index type with each row's entries in ``a01``'s order; cached per ``k``."""
        cache = self.__dict__.setdefault("_edge_parts", {})
        if k not in cache:
            crow = self.a01.crow_indices().cpu().numpy().astype(np.int64)
            col = self.a01.col_indices().cpu().numpy().astype(np.int64)
            row = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(crow))
            part = edge_part_of(row, col, self.n, k)
            idx = self.a01.crow_indices().numpy().dtype if self.a01.device.type == "cpu" else np.int64
            out = []
            for p in range(k):
                m = part == p
                cr = np.concatenate([[0], np.cumsum(np.bincount(row[m], minlength=self.n))]).astype(idx)
                out.append((torch.from_numpy(cr).to(self.a01.device), torch.from_numpy(col[m].astype(idx)).to(self.a01.device)))
            cache[k] = out
        return cache[k]

    def sampled_operator(self, op: ScaledAdjacency, choice: list[int], k: int) -> ScaledAdjacency:
        """``op`` (this graph's operator for the step) with layer ``l`` on edge part ``choice[l]`` of
        :meth:`edge_parts` scaled by ``k`` (the scales times sqrt(k): ``k s A_p s``), each layer keeping the
        step's dropped edges inside its part; the degrees (``op.s``) stay the full graph's."""
        parts = self.edge_parts(k)
        dead = None
        if op.dead_rows is not None and op.dead_rows.numel():
            dead = edge_part_of(op.dead_rows.cpu().numpy(), op.dead_cols.cpu().numpy(), self.n, k)
        layer_parts = []
        for p in choice:
            tgt = src = None
            if dead is not None:
                keep = torch.from_numpy(dead == p).to(op.dead_rows.device)
                tgt, src = op.dead_rows[keep], op.dead_cols[keep]
            layer_parts.append((*parts[p], tgt, src))
        out = ScaledAdjacency(op.a01, op.s * float(k) ** 0.5, op.diag, op.dead_rows, op.dead_cols, has_diag=op.has_diag)
        out.layer_parts = layer_parts
        return out

    def scaled(self, rows: torch.Tensor | None, cols: torch.Tensor | None, s: torch.Tensor) -> ScaledAdjacency:
        """:meth:`operator`'s result for LightGCN's literal norm from the dropped edges and scales that
        :func:`ctrgraph.graphs.native.dg_drops` computed."""
        if getattr(self, "_zero_diag", None) is None or self._zero_diag.device != self.deg0.device:
            self._zero_diag = torch.zeros_like(self.deg0)
        return ScaledAdjacency(self.a01, s, self._zero_diag, rows, cols, has_diag=False)

    def _scales_np(self, cnt: np.ndarray | None) -> torch.Tensor:
        """:meth:`_scales` of ``deg0 - cnt`` (CPU) without a pass of torch ops over all nodes: the full
        graph's scales, copied with the nodes whose degree changed set from a table of :meth:`_scales`
        of every degree 0 .. max (the same function of the same integer values, so the same bits;
        tested). ``cnt`` None: the full graph's scales (one shared tensor, only read)."""
        if getattr(self, "_scale_table", None) is None:
            top = int(self.deg0.max()) if self.deg0.numel() else 0
            self._scale_table = self._scales(torch.arange(top + 1, dtype=self.deg0.dtype)).numpy()
            self._s0 = self._scales(self.deg0)
            self._s0_np, self._deg0_np = self._s0.numpy(), self.deg0.numpy().astype(np.int64)
        if cnt is None:
            return self._s0
        ch = np.flatnonzero(cnt)
        s = self._s0_np.copy()
        d = self._deg0_np[ch] - cnt[ch]  # integer degrees, >= 0 (only present edges are dropped)
        s[ch] = self._scale_table[np.maximum(d, 0)]
        return torch.from_numpy(s)

    def pair_ids(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Ids of the undirected pairs (a[i], b[i]) that are edges of the graph (others dropped)."""
        if _np(a):  # numpy: the same steps, without the per-op cost of torch on small arrays
            return torch.from_numpy(self.pair_ids_np(a.numpy().astype(np.int64, copy=False),
                                                     b.numpy().astype(np.int64, copy=False)))
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        q = lo * self.n + hi
        if self.pair_keys.numel() == 0 or q.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=q.device)
        pos = torch.searchsorted(self.pair_keys, q).clamp_max(self.pair_keys.numel() - 1)
        hit = (self.pair_keys[pos] == q) & (lo != hi)
        return pos[hit]

    def pair_ids_np(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """:meth:`pair_ids` of int64 numpy arrays (the graph on the CPU)."""
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        q = lo * self.n + hi
        keys = self.pair_keys.numpy()
        if keys.size == 0 or q.size == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        hit = (keys[pos] == q) & (lo != hi)
        return pos[hit]

    def adjacency(self, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised adjacency (torch sparse CSR) after subtracting one count per pair id in
        ``drop`` (repeats subtract several)."""
        deg, dead = self._drop(drop)
        s = self._scales(deg)
        val = s[self.rows] * s[self.cols]
        for idx in (dead, self.never):
            if idx is not None and idx.numel():
                val[idx] = 0.0
        val[self.diag_edges] = self._diagonal(deg)
        return torch.sparse_csr_tensor(self.crow_idx, self.cols_idx, val, size=(self.n, self.n), check_invariants=False)
