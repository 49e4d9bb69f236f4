"""Fi-GNN (Li et al., Fi-GNN: Modeling Feature Interactions via Graph Neural Networks for CTR
Prediction, CIKM 2019), in the paper's structure.

Nodes are the F fields (multi-valued fields and behaviour sequences mean-pooled, padding masked).

1. Input layer (Sec. 3.3, Eq. 3): multi-head self-attention, H^1 = ReLU(H_1 (+) ... (+) H_h),
   scaled dot product; node state size = heads * head_dim.
2. Graph (Eq. 4-5): A[i, j] = softmax_{j != i}(LeakyReLU(W_attn [e_i || e_j])) from the field
   embeddings e, self-loops excluded, computed once per instance.
3. ``steps`` state updates (Eq. 6-9): a_i = W_in^i sum_j A[i, j] W_out^j h_j + b_p (edge-wise
   transforms: W_out of the source node, W_in of the target node), h_i = GRU(h_i, a_i) with one GRU
   cell for all nodes, residual h_i += h^1_i. Parameters are shared across steps (the paper's
   gated-GNN recurrence; ``share_steps=false`` gives one set per step, as FuxiCTR).
4. Attentional scoring (Eq. 10-12): y_i = MLP_1(h_i^p), a_i = MLP_2(h_i^p), logit = sum_i a_i y_i.

Choices: the paper does not give the MLPs' widths (``score_hidden``, default one layer of 64) nor
an activation on a_i (none here); a global bias is added to the logit so the base rate is not
carried by the a_i y_i products. State size defaults to 2 heads x 8 = 16 = the embedding size.

Variants (seed-implementations.md §6.1): ``graph="uniform"`` (fully connected, every other node
with weight 1, as the authors' later GraphCTR code), ``readout="joint"`` (FuxiCTR: a =
sigmoid(Linear(flatten(h))), node weights from all nodes jointly), ``readout="flatten"``
(GraphCTR: a linear layer on the flattened states), ``input_layer="none"`` (no self-attention
input layer, as FuxiCTR) or ``"autoint"`` (GraphCTR's AutoInt-style layer: ReLU dense Q/K/V,
residual, ReLU, LayerNorm). Preset ``graphctr`` combines the GraphCTR choices; ``fuxictr`` the
FuxiCTR ones. ``input_residual=true`` adds only the residual W_res e_i to the paper's input layer,
H^1 = ReLU(concat heads + W_res E) (AutoInt's Eq. 9; the GraphCTR layer has it too): the paper's
Eq. 3 has none, so every node's initial state is an attention-weighted mix of all fields' value
projections (near-uniform early in training) and its own field's identity survives only through its
share of that mix (measured in docs/zoo-attention.md).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.mlp import MLP
from ..layers.self_attention import AttentionalEdges, GraphInteraction, MultiHeadSelfAttention
from .base import CTRModel, ModelConfig


class FiGNNConfig(ModelConfig):
    steps: int = 3
    heads: int = 2
    head_dim: int = 8
    input_layer: str = "paper"  # paper | autoint | none
    input_residual: bool = False  # paper layer only: + W_res e before the ReLU (AutoInt Eq. 9; not in Fi-GNN Eq. 3)
    graph: str = "attention"  # attention | uniform
    readout: str = "node"  # node | joint | flatten
    residual: bool = True
    share_steps: bool = True
    score_hidden: list[int] = [64]
    seq_pool: str = "mean"


class FiGNN(CTRModel):
    name = "fignn"
    Config = FiGNNConfig
    presets = {
        "paper": {},
        "graphctr": {"input_layer": "autoint", "graph": "uniform", "readout": "flatten"},
        "fuxictr": {"input_layer": "none", "readout": "joint", "share_steps": False},
    }
    paper = "Li et al., Fi-GNN: Modeling Feature Interactions via Graph Neural Networks for CTR Prediction, CIKM 2019"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        for key, ok in (("input_layer", ("paper", "autoint", "none")), ("graph", ("attention", "uniform")),
                        ("readout", ("node", "joint", "flatten"))):
            if getattr(cfg, key) not in ok:
                from ..errors import ConfigError
                raise ConfigError(f"fignn: {key} must be one of {ok}, got {getattr(cfg, key)!r}")
        if cfg.input_residual and cfg.input_layer != "paper":
            from ..errors import ConfigError
            raise ConfigError(f"fignn: input_residual applies to input_layer='paper' only (got {cfg.input_layer!r}; "
                              "'autoint' already has a residual, 'none' has no input layer)")
        F, d = len(spec.features), embedding.dim
        if cfg.input_layer == "none":
            self.input_attn, state = None, d
        else:
            graphctr = cfg.input_layer == "autoint"
            self.input_attn = MultiHeadSelfAttention(
                d, cfg.head_dim, cfg.heads, residual=graphctr or cfg.input_residual, scale=True,
                projection="relu" if graphctr else "linear", relu=True, layer_norm=graphctr)
            state = cfg.heads * cfg.head_dim
        self.edges = AttentionalEdges(d) if cfg.graph == "attention" else None
        self.register_buffer("uniform", 1.0 - torch.eye(F), persistent=False)
        n_sets = 1 if cfg.share_steps else cfg.steps
        self.gnn = nn.ModuleList([GraphInteraction(F, state) for _ in range(n_sets)])
        if cfg.readout == "flatten":
            self.head = nn.Linear(F * state, 1)
        else:
            self.mlp1 = MLP(state, cfg.score_hidden)  # y_i
            self.mlp2 = MLP(state, cfg.score_hidden) if cfg.readout == "node" else nn.Linear(F * state, F)
            self.bias = nn.Parameter(torch.zeros(1))

    def output_bias(self):
        return self.head.bias if self.cfg.readout == "flatten" else self.bias

    def forward(self, batch):
        cfg = self.cfg
        eb = self.embedding(batch)
        E = eb.matrix(seq_pool=cfg.seq_pool)
        h1 = E if self.input_attn is None else self.input_attn(E)
        A = self.edges(E) if self.edges is not None else self.uniform
        h = h1
        for t in range(cfg.steps):
            h = self.gnn[0 if cfg.share_steps else t](h, A)
            if cfg.residual:
                h = h + h1
        if cfg.readout == "flatten":
            return self.output(self.head(h.flatten(1)).squeeze(-1), eb)
        y = self.mlp1(h).squeeze(-1)  # [B, F]
        if cfg.readout == "node":
            a = self.mlp2(h).squeeze(-1)
        else:
            a = torch.sigmoid(self.mlp2(h.flatten(1)))
        return self.output((a * y).sum(dim=1) + self.bias, eb)
