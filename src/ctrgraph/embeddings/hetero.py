"""Shared provider machinery of DG-ENN's Table 4 baselines (paper §5.3.2): GCN-PNN (``gcn``,
gcn.py), KGAT-PNN (``kgat``, kgat.py) and HGAT-PNN (``hgat``, hgat.py). "We remove the prediction
layer of these models and then apply them on our constructed graphs for embedding enhancement":
each provider propagates over the DG-ENN graphs of §4.1 (built by
:func:`ctrgraph.graphs.dg.build_graph_data` from the train split), merged into one heterogeneous
graph (:mod:`ctrgraph.graphs.hetero`), and serves enhanced user / item / attribute-value tables as
in Eq. 22.

Leakage guard (DG's): in training, the batch's positive (u, v) edges and those users' own
transitions into and out of v are absent from that step's propagation
(:meth:`HeteroGraphEmbedding.target_drops`, the same rule as ``DualGraphEmbedding.target_drops``);
at ``eval()`` the enhanced tables are computed once without drops and cached (and kept in
``served_<table>`` buffers, so a loaded checkpoint evaluates without the graphs, as DG's).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.schema import FeatureSpec, Field, Role
from ..errors import ConfigError
from ..graphs.dg import DGGraphData, DropGraph, build_graph_data
from ..graphs.hetero import (
    MaskedGraph,
    NodeLayout,
    RelationMatmul,
    merged_graph,
    target_item_pairs,
)
from ..layers.lookup import table_lookup
from .base import EmbeddingProvider, Step
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

    def begin(self, batch: dict[str, torch.Tensor]) -> Step:
        """This step's enhanced tables (``enh``): cached at eval, propagated without the batch's own
        positive edges in training."""
        self._to_device(self.tables[self.user_field.table].weight.device)
        if not self.training:
            return {"enh": cached_eval_tables(self)}
        return {"enh": self.enhanced_tables(self.target_drops(batch))}

    def lookup(self, table: str, ids: torch.Tensor, step: Step) -> torch.Tensor:
        t = step["enh"].get(table)
        return super().lookup(table, ids, step) if t is None else table_lookup(t, ids)

    def plain_lookup(self, table: str, step: Step) -> bool:
        """Tables this step does not enhance are plain row gathers."""
        return step["enh"].get(table) is None

    # ----- cache invalidation, copies ----------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_cache=None)
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
