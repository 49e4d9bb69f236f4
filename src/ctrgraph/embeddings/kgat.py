"""KGAT-PNN of DG-ENN Table 4 (§5.3.2): KGAT (Wang et al., "KGAT: Knowledge Graph Attention
Network for Recommendation", KDD 2019) without its prediction layer, on DG-ENN's graphs, as
provider ``kgat`` (``kgat-pnn``, ``kgat-din``, ...). "KGAT only considers the collaborative graph
and item-attribute graph".

Collaborative knowledge graph (CKG, KGAT §2): the uv graph (relation *interact*) plus the item
attribute graphs (one relation per item-attribute field, item -> value), plus, with ``kg``, the
Freebase triples shipped next to the data set (``<dir>/*.kg[.gz]`` + ``*.link[.gz]``, mapped by
:mod:`ctrgraph.data.knowledge_graph`: linked entities *are* the items). Every relation r also
gets its inverse r^-1 (KGAT §3.1); the DG graph parts give one relation per ordered pair of node
types (user->item, item->user, item->genre value, ...). Nodes: users, items, attribute values
(the provider's tables) and the KG's other entities (their own table ``entity``).

- Embedding layer / TransR (KGAT Eqs. 1-2): ``g(h,r,t) = ||W_r e_h + e_r - W_r e_t||^2``,
  ``L_KG = mean softplus(g(h,r,t) - g(h,r,t'))`` over ``kg_batch`` sampled knowledge triples
  (attribute and KG relations, both directions) with a uniformly corrupted tail t' (any item,
  item-attribute value or entity; not checked against the graph, a collision is rare).
  Returned as the auxiliary loss ``kgat_kg`` = ``kg_weight * L_KG``.
- Knowledge-aware attention (Eqs. 4-5): ``π(h,r,t) = (W_r e_t)^T tanh(W_r e_h + e_r)``,
  softmax over the triples of each head h (``graphs.edge_softmax``); computed once per forward
  from the layer-0 embeddings, with gradients (the paper does not say when π is refreshed).
- Bi-interaction aggregator (Eq. 8), per layer l: ``e_N = Σ π e_t``,
  ``e^(l+1) = LeakyReLU(W1 (e + e_N)) + LeakyReLU(W2 (e ⊙ e_N))``; no bias, d stays ``dim``.
- Final (Eq. 11): KGAT concatenates ``[e^(0) .. e^(L)]``; the base model needs ``dim``-sized
  vectors, so ``final="concat"`` projects the concatenation with a learned linear map
  (``(L+1) dim -> dim``, no bias; it can weight the layers as KGAT's inner product of
  concatenations does); ``final="mean"`` is DG's layer mean instead.

Choices: L_CF (BPR) is replaced by the CTR logloss of the base model; L_KG is **summed** with it in
every step (weight ``kg_weight``, default 1) instead of KGAT's alternating updates: one step of each
loss with the same optimiser is, to first order, one step on their sum with weight 1, and one
forward per step halves the cost. TransR's ``interact`` triples are left out of L_KG (that would be a
second CF loss on the train positives). W_r is d x d (relation space = ``dim``); message / node
dropout and KGAT's shrinking layer sizes are not used. ``graphs`` (default ``"uv,iattr"``) may add
``uu``, ``vv`` or ``uattr`` (DG-ENN's "collaborative graph" also holds uu / vv; the issue fixes uv).

Checkpoints: the entity table and the relation parameters (``rel_emb`` [R, d], ``rel_w`` [R, d, d])
are sized by the KG file, known only in :meth:`prepare` (which builds them, before the trainer
creates the optimiser). Loading a state dict into a provider that was not prepared creates them
with the checkpoint's shapes (:meth:`_load_from_state_dict`), so ``load_run`` works and serves the
saved tables; preparing on a different KG afterwards is a clear error.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..data.schema import FeatureSpec
from ..graphs import edge_softmax
from ..graphs.dg import DGGraphData, build_graph_data
from ..graphs.hetero import RelationMatmul, aggregate
from .base import Step
from .hetero import HeteroGraphEmbedding, _State, check_choice, combine

_LAZY = ("entity", "rel_emb", "rel_w")


class KGATEmbedding(HeteroGraphEmbedding):
    """KGAT propagation over the collaborative knowledge graph (Table 4's KGAT-PNN)."""

    name = "kgat"
    default_graphs = "uv,iattr"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, graphs: str | list[str] = "uv,iattr",
                 layers: int = 2, kg: bool | str | None = "auto", kg_dir: str | None = None, kg_weight: float = 1.0,
                 kg_batch: int = 1024, final: str = "concat", knn_k: int = 10, knn_alpha: float = 0.5,
                 drop_target_edges: bool = True, uv_targets: bool = True):
        super().__init__(spec, dim, init_std, graphs, layers, knn_k, knn_alpha, drop_target_edges, uv_targets)
        if kg in (None, "auto"):
            kg = None
        elif not isinstance(kg, bool):
            raise ConfigError(f"kgat embedding: kg must be true, false or auto, got {kg!r}")
        check_choice(self.name, "final", final, ("concat", "mean"))
        if isinstance(kg_weight, bool) or not isinstance(kg_weight, (int, float)) or kg_weight < 0:
            raise ConfigError(f"kgat embedding: kg_weight must be a number >= 0, got {kg_weight!r}")
        if isinstance(kg_batch, bool) or not isinstance(kg_batch, int) or kg_batch < 1:
            raise ConfigError(f"kgat embedding: kg_batch must be an integer >= 1, got {kg_batch!r}")
        self.kg, self.kg_dir, self.kg_weight, self.kg_batch, self.final = kg, kg_dir, float(kg_weight), kg_batch, final
        self.w1 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))
        self.w2 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))
        self.proj = nn.Linear((layers + 1) * dim, dim, bias=False) if final == "concat" else None
        self.act = nn.LeakyReLU(0.2)
        for k in _LAZY:
            self.register_parameter(k, None)
        self._kg_data = None

    # ----- graphs ----------------------------------------------------------------------------------
    def load_kg(self, data):
        """The data set's knowledge graph (``kg_dir`` or the data directory ``data.meta['source']``),
        or None when ``kg=false`` / (auto) no files are there; ``kg=true`` without files is an error."""
        from ..data.knowledge_graph import find_kg_files, load_knowledge_graph

        if self.kg is False:
            return None
        where = self.kg_dir or getattr(data, "meta", {}).get("source")
        files = find_kg_files(where)
        if files is None:
            if self.kg:
                raise ConfigError(f"kgat embedding: kg=true, but no *.kg[.gz] and *.link[.gz] files in {where!r} "
                                  f"(set embedding.params.kg_dir, or kg=false)")
            return None
        return load_knowledge_graph(*files, data.vocabs[self.item_field.table])

    def prepare(self, data) -> None:
        g = build_graph_data(data, self.knn_k, (self.knn_alpha, 1.0 - self.knn_alpha), True, self.uv_targets)
        self.install(g, self.load_kg(data))

    def install(self, g: DGGraphData, kg=None) -> None:
        """The CKG of the DG graphs ``g`` and the mapped knowledge graph ``kg`` (or None)."""
        self._kg_data = kg
        super().install(g)

    def _install(self, st: _State, g: DGGraphData) -> None:
        lay, kg, d = self.layout, self._kg_data, self.dim
        gr = st["graph"]
        nt = torch.from_numpy(lay.node_type)
        entry = torch.nonzero(~gr.is_diag).squeeze(1)  # CSR entries of the DG graph edges
        r, c = gr.rows[entry], gr.cols[entry]
        t = lay.n_types
        pair_type, rel = torch.unique(nt[r] * t + nt[c], return_inverse=True)  # one relation per ordered type pair
        n_dg = pair_type.numel()
        names = [f"{lay.blocks[int(k) // t].name}->{lay.blocks[int(k) % t].name}" for k in pair_type]
        kinds = [lay.blocks[int(k) // t].kind for k in pair_type] + [lay.blocks[int(k) % t].kind for k in pair_type]
        is_attr_rel = torch.tensor([a in ("iattr", "uattr") or b in ("iattr", "uattr")
                                    for a, b in zip(kinds[:n_dg], kinds[n_dg:])], dtype=torch.bool)
        rows, cols, rels = [r], [c], [rel]
        entries = [entry]
        n_ent, n_kg_rel = 0, 0
        if kg is not None:
            if kg.n_items != lay["item"].size:
                raise ConfigError(f"kgat embedding: the knowledge graph was mapped onto {kg.n_items} items, "
                                  f"the item vocabulary has {lay['item'].size}")
            n_ent, n_kg_rel = kg.n_entities, kg.n_relations
            ent_off, item_off = lay.n, lay["item"].offset
            def node(a):  # KG node ids -> layout: items into the item block, entities after the layout
                a = torch.from_numpy(a).long()
                return torch.where(a < kg.n_items, a + item_off, a - kg.n_items + ent_off)

            h, tl, kr = node(kg.head), node(kg.tail), torch.from_numpy(kg.relation).long()
            rows += [h, tl]
            cols += [tl, h]
            rels += [kr + n_dg, kr + n_dg + n_kg_rel]  # r and its inverse r^-1
            entries.append(torch.full((2 * h.numel(),), -1, dtype=torch.long))
            names += [f"kg:{x}" for x in kg.relations] + [f"kg:{x}^-1" for x in kg.relations]
        n_rel = n_dg + 2 * n_kg_rel
        rows, cols, rels, entries = (torch.cat(x) for x in (rows, cols, rels, entries))
        order = torch.argsort(rows, stable=True)
        rows, cols, rels, entries = rows[order], cols[order], rels[order], entries[order]
        n_nodes = lay.n + n_ent
        keys = torch.cat([rows * n_rel + rels, cols * n_rel + rels])
        uniq, inv = torch.unique(keys, return_inverse=True)
        e = rows.numel()
        st.update(rows=rows, cols=cols, rel=rels, n_nodes=n_nodes, n_rel=n_rel, rel_names=names,
                  dyn=torch.nonzero(entries >= 0).squeeze(1), dyn_entry=entries[entries >= 0],
                  pair_node=uniq // n_rel, head_pair=inv[:e], tail_pair=inv[e:],
                  rm=RelationMatmul(uniq % n_rel, n_rel, d, d))
        know = torch.cat([is_attr_rel, torch.ones(2 * n_kg_rel, dtype=torch.bool)])[rels]  # TransR triples
        st.update(know_h=rows[know], know_r=rels[know], know_t=cols[know])
        tail_kinds = ("item", "iattr", "entity")
        full_types = torch.cat([nt, torch.full((n_ent,), t, dtype=torch.long)])
        ok = torch.tensor([b.kind in tail_kinds for b in lay.blocks] + [True])
        st["neg_pool"] = torch.nonzero(ok[full_types]).squeeze(1)
        self._make_params(n_ent, n_rel)

    def _make_params(self, n_ent: int, n_rel: int) -> None:
        d = self.dim
        want = {"entity": (n_ent, d), "rel_emb": (n_rel, d), "rel_w": (n_rel, d, d)}
        for k, shape in want.items():
            cur = getattr(self, k)
            if cur is not None:
                if tuple(cur.shape) != shape:
                    raise ConfigError(f"kgat embedding: parameter {k} has shape {tuple(cur.shape)}, the graphs "
                                      f"need {shape} (a different knowledge graph than the checkpoint's?)")
                continue
            dev = self.tables[self.user_field.table].weight.device
            if k == "rel_w":  # Xavier-uniform per relation matrix
                b = math.sqrt(6.0 / (2 * d))
                val = torch.empty(shape, device=dev).uniform_(-b, b)
            else:
                val = torch.randn(shape, device=dev) * self.init_std
            setattr(self, k, nn.Parameter(val))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for k in _LAZY:  # parameters sized by the KG: create them with the checkpoint's shapes
            key = prefix + k
            if getattr(self, k) is None and key in state_dict:
                setattr(self, k, nn.Parameter(torch.zeros_like(state_dict[key])))
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----- propagation -------------------------------------------------------------------------------
    def node_input(self) -> torch.Tensor:
        x = super().node_input()
        return torch.cat([x, self.entity]) if self.entity is not None and self.entity.shape[0] else x

    def _present(self, drop: torch.Tensor | None) -> torch.Tensor:
        st = self._g
        mask = torch.ones(st["rows"].numel(), dtype=torch.bool, device=st["rows"].device)
        mask[st["dyn"]] = st["graph"].edge_mask(drop)[st["dyn_entry"]]  # KG triples are never dropped
        return mask

    def attention(self, x0: torch.Tensor, drop: torch.Tensor | None = None):
        """(rows, cols, relations, π) of the edges present this step (Eqs. 4-5): π sums to 1 over
        each head's triples."""
        st = self._g
        y = st["rm"](x0[st["pair_node"]], self.rel_w)  # W_r e for every (node, relation) pair used
        score = (y[st["tail_pair"]] * torch.tanh(y[st["head_pair"]] + self.rel_emb[st["rel"]])).sum(-1)
        m = self._present(drop)
        rows = st["rows"][m]
        return rows, st["cols"][m], st["rel"][m], edge_softmax(rows, score[m], st["n_nodes"])

    def propagate(self, x0: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        rows, cols, _, pi = self.attention(x0, drop)
        n = self._g["n_nodes"]
        h, out = x0, [x0]
        for w1, w2 in zip(self.w1, self.w2):  # Eq. 8 (bi-interaction), layers of Eqs. 9-10
            e_n = aggregate(rows, cols, pi, h, n)
            h = self.act(w1(h + e_n)) + self.act(w2(h * e_n))
            out.append(h)
        return self.proj(torch.cat(out, 1)) if self.proj is not None else combine(out, "mean")

    # ----- TransR (L_KG) --------------------------------------------------------------------------
    def kg_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """KGAT Eq. 2 on ``kg_batch`` sampled knowledge triples with corrupted tails."""
        st = self._g
        n = st["know_h"].numel()
        dev = x0.device
        idx = torch.randint(n, (self.kg_batch,), device=dev)
        h, r, t = st["know_h"][idx], st["know_r"][idx], st["know_t"][idx]
        pool = st["neg_pool"]
        t_neg = pool[torch.randint(pool.numel(), (self.kg_batch,), device=dev)]
        w = self.rel_w[r]  # [B, d, d]: a small batch, gathered directly
        proj = lambda e: torch.bmm(w, e.unsqueeze(-1)).squeeze(-1)
        ph = proj(x0[h]) + self.rel_emb[r]
        g_pos = (ph - proj(x0[t])).pow(2).sum(-1)
        g_neg = (ph - proj(x0[t_neg])).pow(2).sum(-1)
        return nn.functional.softplus(g_pos - g_neg).mean()

    def begin(self, batch: dict[str, torch.Tensor]) -> Step:
        """The step's enhanced tables (as every hetero provider) and, in training, L_KG (``aux``)."""
        step = super().begin(batch)
        step["aux"] = {}
        if self.training and self.kg_weight > 0 and self._g is not None and self._g["know_h"].numel():
            step["aux"] = {"kgat_kg": self.kg_weight * self.kg_loss(self.node_input())}
        return step

    def aux_losses(self, step: Step) -> dict[str, torch.Tensor]:
        return dict(step.get("aux", {}))
