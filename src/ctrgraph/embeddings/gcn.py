"""GCN-PNN of DG-ENN Table 4 (§5.3.2): a GCN (Kipf & Welling, ICLR 2017) on the DG-ENN graphs
treated as **one homogeneous graph** ("GCN models the constructed graphs as a homogeneous graph,
which ignores the different characteristics of different fields"), as provider ``gcn``
(``gcn-pnn``, ``gcn-din``, ...).

- Graph: users, items and the attribute values of every field are one node set; the attribute
  graphs of each field (G_ua, G_vb), uu, vv and uv (§4.1) are one unweighted symmetric adjacency A
  (:func:`~ctrgraph.graphs.hetero.merged_graph`; ``graphs`` selects parts).
- Propagation (Kipf & Welling Eq. 2): ``H^(l+1) = σ(Â H^(l) W^(l))``, ``Â = D~^-1/2 (A + I) D~^-1/2``,
  one W^(l) per layer shared by all node types (homogeneous), no bias; ``H^(0)`` = the plain
  user / item / attribute-value tables.
- Output: the mean of layers 0..L (DG's Eq. 13 reading, ``combine="mean"``; ``"last"`` = plain
  GCN's last layer); the user, item and attribute-value tables become the nodes' outputs (Eq. 22).

Choices: σ = LeakyReLU(0.2) (DG's GCN aggregator, Eq. 9, uses the same; Kipf's ReLU would zero
half of each embedding); Kipf's renormalisation rather than DG's literal Eq. 9 centre term, since
this baseline is "GCN [12]" itself. Leakage guard, eval cache and prior bias: hetero.py.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graphs import spmm
from .hetero import LayerCombinedEmbedding, combine


class GCNGraphEmbedding(LayerCombinedEmbedding):
    """Homogeneous GCN over all DG-ENN graphs (Table 4's GCN-PNN)."""

    name = "gcn"

    def make_layers(self, dim: int, layers: int) -> None:
        self.w = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))
        self.act = nn.LeakyReLU(0.2)

    def propagate(self, x0: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        adj = self._g["graph"].kipf(drop)  # symmetric: its own transpose for the backward
        h, out = x0, [x0]
        for w in self.w:
            h = self.act(w(spmm(adj, h, adj)))
            out.append(h)
        return combine(out, self.combine)
