"""HGAT-PNN of DG-ENN Table 4 (§5.3.2): the heterogeneous graph attention network of Hu et al.
("Heterogeneous Graph Attention Networks for Semi-supervised Short Text Classification", EMNLP
2019) without its prediction layer, on all DG-ENN graphs "in an heterogeneous manner", as provider
``hgat`` (``hgat-pnn``, ``hgat-din``, ...).

Node types: user, item, and one type per attribute field (the values of that field); edges: the
attribute graphs of every field, uu, vv and uv (§4.1; ``graphs`` selects parts). ``Â = D~^-1/2
(A + I) D~^-1/2`` over the whole graph (HGAT's normalised adjacency with self-loops; the self-loop
counts as a neighbour of the node's own type). Per layer l, with ``h`` the layer input:

- Type-level attention: ``h_τ = Σ_{v' in N_v of type τ} Â_vv' h_v'``;
  ``a_τ = LeakyReLU(μ_τ^T [h_v || h_τ])``; ``α_τ = softmax over the types τ present around v``.
- Node-level attention: ``b_vv' = LeakyReLU(ν^T α_τ' [h_v || h_v'])`` (τ' = the type of v'),
  ``β_vv' = softmax over all neighbours v' of v``.
- Layer: ``h'_v = σ(Σ_τ Σ_{v' of type τ} β_vv' W_τ h_v')`` (HGAT's ``σ(Σ_τ B_τ H_τ W_τ)``), one W_τ
  per type and layer (:class:`~ctrgraph.graphs.hetero.RelationMatmul`, no loop over types).

Choices: μ_τ, ν and W_τ are per layer (HGAT stacks layers with their own parameters); LeakyReLU(0.2)
for the attention scores (GAT's slope) and for σ (as DG's GCN aggregator; ReLU would zero half of
each embedding); no bias, no dropout. Output: DG's mean over layers 0..L (``combine="mean"``;
``"last"`` = HGAT's last layer), the user / item / attribute-value tables (Eq. 22). Leakage guard,
eval cache and prior bias: hetero.py.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..graphs import edge_softmax
from ..graphs.dg import DGGraphData
from ..graphs.hetero import RelationMatmul, aggregate
from .hetero import LayerCombinedEmbedding, _State, combine


class HGATEmbedding(LayerCombinedEmbedding):
    """Dual-level (type, node) attention over the heterogeneous DG-ENN graph (Table 4's HGAT-PNN)."""

    name = "hgat"

    def make_layers(self, dim: int, layers: int) -> None:
        t, d = self.layout.n_types, dim

        def uni(shape, fan):
            b = math.sqrt(6.0 / fan)
            return nn.Parameter(torch.empty(shape).uniform_(-b, b))

        self.mu = nn.ParameterList(uni((t, 2 * d), 2 * d + 1) for _ in range(layers))  # type-level attention
        self.nu = nn.ParameterList(uni((2 * d,), 2 * d + 1) for _ in range(layers))  # node-level attention
        self.w = nn.ParameterList(uni((t, d, d), 2 * d) for _ in range(layers))  # W_τ per type
        self.att_act = nn.LeakyReLU(0.2)
        self.act = nn.LeakyReLU(0.2)

    def _install(self, st: _State, g: DGGraphData) -> None:
        nt = torch.from_numpy(self.layout.node_type)
        st["node_type"] = nt
        st["rm"] = RelationMatmul(nt, self.layout.n_types, self.dim, self.dim)

    def edges(self, drop: torch.Tensor | None = None):
        """(rows, cols, Â values) of the present entries this step, self-loops included."""
        gr = self._g["graph"]
        adj = gr.kipf(drop)
        keep = gr.edge_mask(drop) | gr.is_diag
        return gr.rows[keep], gr.cols[keep], adj.values()[keep]

    def type_attention(self, l: int, h: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                       val: torch.Tensor) -> torch.Tensor:
        """α [N, T] of layer l: per node, a softmax over the types of its neighbours (0 for absent types)."""
        n, t, d = h.shape[0], self.layout.n_types, self.dim
        ctype = self._g["node_type"][cols]
        seg = rows * t + ctype
        has = torch.bincount(seg, minlength=n * t).view(n, t) > 0
        h_tau = aggregate(seg, cols, val, h, n * t).view(n, t, d)
        mu = self.mu[l]
        a = self.att_act(h @ mu[:, :d].T + (h_tau * mu[None, :, d:]).sum(-1))
        return torch.softmax(a.masked_fill(~has, float("-inf")), dim=1)

    def propagate(self, x0: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        rows, cols, val = self.edges(drop)
        ctype = self._g["node_type"][cols]
        n, d = x0.shape[0], self.dim
        h, out = x0, [x0]
        for l in range(self.layers):
            alpha = self.type_attention(l, h, rows, cols, val)
            nu = self.nu[l]
            b = self.att_act(alpha[rows, ctype] * ((h @ nu[:d])[rows] + (h @ nu[d:])[cols]))
            beta = edge_softmax(rows, b, n)
            h = self.act(aggregate(rows, cols, beta, self._g["rm"](h, self.w[l]), n))
            out.append(h)
        return combine(out, self.combine)
