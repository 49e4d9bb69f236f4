"""GraphFM (Wu, Li, Su, Cui, Zhang, Wang, Graph Factorization Machines for Feature Interaction
Modeling): the paper's model by default; the official GraphCTR code's aggregation is the preset
``official`` (a second, labelled configuration), each of its departures a switch.

Nodes are the n fields (Eq. 1-4: categorical e_i = V_i x_i, numeric e_j = v_j x_j, multi-valued
fields and behaviour sequences mean-pooled over valid positions). Each layer k = 1..K, on the
states h [B, n, d_in] (h = e for k = 1), for all fields at once:

- Interaction selection (Sec. 4.2). Metric (``metric``): ``nmf`` (Eq. 7) p_ij = sigmoid(W2 ReLU(W1
  (h_i ⊙ h_j) + b1) + b2), one MLP per layer shared by all fields, hidden ``metric_hidden``, P [B, n, n];
  or ``euclidean`` (§4.2.1: "one can also choose the Euclidean distance [51]"; the form of [51], DGM):
  p_ij = exp(-t ||W_s h_i - W_s h_j||^2), W_s [d_in, metric_hidden], t = exp(log_t) a learned scalar
  per layer (p_ii = 1, so the self pair is always the nearest). Sampling (``select``): ``top_m``
  (Eq. 8-9) keeps exactly m_k entries per row, a stable descending sort, so ties go to the lower
  field index; or ``threshold`` (§4.2.2: "we also tried to set a threshold ... a minimum value for
  the edge probability"): N_i = {j : p_ij >= ``threshold``}, so degrees vary per node and a node
  may keep no neighbour (it then receives no message: its layer output is σ(0)).
- Interaction aggregation (Sec. 4.3): c^h_ij = LeakyReLU(a_h^T (h_i ⊙ h_j)) (Eq. 10, [B, H, n, n]),
  softmax over the selected neighbours only (Eq. 11), e'_i = σ(Σ_j α^h_ij p_ij W^h_a (h_i ⊙ h_j))
  (Eq. 12), H heads concatenated (Eq. 13, each head d_out / H wide) or averaged (Eq. 14, each d_out
  wide); output [B, n, d_out]. Because W_a is linear, Σ_j w_ij W_a(h_i ⊙ h_j) = W_a(h_i ⊙ Σ_j w_ij
  h_j): the [B, n, n, d] message tensor is never formed (only the pair products feeding Eq. 7 and
  Eq. 10 are, fused in chunks). On CPU the paper's configuration (this selection, p on the message,
  softmax over N_i) runs Eq. 7-12 up to W_a in one fused kernel (``GraphFMLayer.native``,
  layers/graphfm_native.py; same values to rounding); ``CTRGRAPH_NATIVE=0`` and every other switch
  take the PyTorch path.
- Readout: e*_i = e^(1)_i ‖ ... (Eq. 15, ``readout`` lists the layers, 0 = the input embedding
  e^(1) = e), mean over fields (Eq. 16), ŷ = p^T e* + b (Eq. 17; the bias is ours: it carries the
  base rate).

Choices the paper leaves open (seed-implementations.md §1.3, 1.6): layer width 64 and metric
hidden 16 (the published runs), σ = ReLU (the code's activation; the paper names none), the self
pair h_i ⊙ h_i is a candidate neighbour (as in the code and the paper's heat maps), LeakyReLU slope
0.2 (GAT's), ``m`` defaults to [n, ceil(n/2), ceil(n/4)] (the paper's three settings keep m_1 = n
and shrink m_2, m_3 to about 1/2 and 1/4 of n; ml1m uses the paper's [7, 4, 2]), ``threshold``
0.5 (the paper gives no value) and it is compared with >= ("a minimum value"). With K layers and
the input layer read out, e* holds orders 1..K+1.

Each departure of the official code (§1.5) is a switch: ``p_on="logit"`` (p_ij multiplies the
attention logit, not the message), ``softmax_over="all"`` (unselected fields keep logit 0 in the
softmax), ``score_activation="relu"`` with ``score_bias``, ``field_specific`` W_a (and residual
projection), ``residual_layernorm`` (h' = LayerNorm(ReLU(msg + ReLU(W_r h)))), readout of the K
layer outputs only (``readout=[1..K]``). Presets: ``paper`` = the defaults spelled out;
``official`` = the official code's aggregation with the paper's readout (Eq. 15, input layer
included): the library's default before issue 17, measured best on ml100k-ctr (the literal paper
trains less well there: the state scale is squared at every layer without the residual LayerNorm;
docs/graphfm.md has the figures); ``reference`` = the official code throughout (its readout);
``ml1m`` / ``official_ml1m`` / ``reference_ml1m`` add the paper's m = [7, 4, 2] (and the ML-1M
run's dropout for the last). ``GraphFM.identity_base`` pins the earlier defaults for run keys, so
runs made before the change keep their keys. Ablations (Sec. 5.3): ``selection=False`` (-S: every
pair, no p), ``aggregate="feature"`` (-I: W_a Σ_j w_ij h_j), ``heads=1`` (-M), ``readout=[i]``
(-K_i).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from ..errors import ConfigError
from ..layers.activation import activation as make_activation
from ..layers.graphfm_native import aggregate as native_aggregate
from ..layers.graphfm_native import applies as native_applies
from ..layers.graphfm_native import head_linear as native_head_linear
from ..layers.graphfm_native import kernel as native_kernel
from ..layers.pair_linear import circulant_pairs, pair_linear
from ..layers.softmax import softmax_last
from .base import CTRModel, ModelConfig


class GraphFMConfig(ModelConfig):
    layers: int = 3  # K
    m: list[int] | None = None  # neighbours kept per field and layer; None: [n, ceil(n/2), ceil(n/4)]
    heads: int = 2
    dims: list[int] = [64]  # layer widths d_out (one value = every layer)
    head_merge: Literal["concat", "mean"] = "concat"  # Eq. 13 | Eq. 14
    selection: bool = True  # False: ablation -S
    select: Literal["top_m", "threshold"] = "top_m"  # Eq. 8 (m_k per row) | §4.2.2's threshold on p_ij
    threshold: float = 0.5  # select="threshold": keep the edges with p_ij >= threshold
    metric: Literal["nmf", "euclidean"] = "nmf"  # Eq. 7 | §4.2.1's Euclidean distance (DGM [51]'s form)
    aggregate: Literal["interaction", "feature"] = "interaction"  # "feature": ablation -I
    readout: list[int] | None = None  # layers read out, 0 = input embedding; None: all (Eq. 15)
    metric_hidden: int = 16
    activation: str = "relu"  # σ of Eq. 12-14
    self_interaction: bool = True
    # defaults: the paper (Eq. 10-12); preset ``official``: the GraphCTR code's aggregation
    p_on: Literal["message", "logit"] = "message"
    softmax_over: Literal["selected", "all"] = "selected"
    score_activation: Literal["leaky_relu", "relu"] = "leaky_relu"
    score_bias: bool = False
    field_specific: bool = False
    residual_layernorm: bool = False
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    seq_pool: str = "mean"

    @model_validator(mode="after")
    def _check(self):
        if self.layers < 1 or self.heads < 1:
            raise ValueError("layers and heads must be >= 1")
        if len(self.dims) not in (1, self.layers):
            raise ValueError(f"dims needs 1 or {self.layers} (= layers) entries, got {self.dims}")
        if self.m is not None and (len(self.m) != self.layers or min(self.m) < 1):
            raise ValueError(f"m needs {self.layers} (= layers) positive entries, got {self.m}")
        if self.head_merge == "concat" and any(d % self.heads for d in self.dims):
            raise ValueError(f"with head_merge=concat every width in dims must be divisible by heads={self.heads}")
        if self.readout is not None and (not self.readout or min(self.readout) < 0 or max(self.readout) > self.layers):
            raise ValueError(f"readout lists layers in 0..{self.layers} (0 = input embedding), got {self.readout}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1) (p_ij is a probability), got {self.threshold}")
        if self.select == "threshold" and self.m is not None:
            raise ValueError("m (neighbours per row) has no effect with select=threshold: leave m unset")
        return self


_PAPER = {"p_on": "message", "softmax_over": "selected", "score_activation": "leaky_relu", "score_bias": False,
          "field_specific": False, "residual_layernorm": False}
#: the official GraphCTR code's aggregation with the paper's readout (Eq. 15, input layer included): the
#: library's default before issue 17 (measured best on ml100k-ctr; docs/graphfm.md)
_OFFICIAL = {"p_on": "logit", "softmax_over": "all", "score_activation": "relu", "score_bias": True,
             "field_specific": True, "residual_layernorm": True}
#: the official code throughout (its readout: the K layer outputs only)
_REFERENCE = {**_OFFICIAL, "readout": [1, 2, 3]}


class GraphFMLayer(nn.Module):
    """One GraphFM layer (Eq. 7-14) on all n fields of a batch at once."""

    def __init__(self, cfg: GraphFMConfig, n: int, d_in: int, d_out: int, m: int):
        super().__init__()
        self.cfg, self.n, self.m = cfg, n, m
        H = cfg.heads
        self.d_head = d_out // H if cfg.head_merge == "concat" else d_out
        if cfg.metric == "nmf":  # Eq. 7: W1, b1 (hidden metric_hidden), ReLU, W2, b2
            self.metric = nn.Sequential(nn.Linear(d_in, cfg.metric_hidden), nn.ReLU(), nn.Linear(cfg.metric_hidden, 1))
        else:  # §4.2.1's Euclidean distance, DGM's form: p_ij = exp(-t ||W_s h_i - W_s h_j||^2), t = exp(log_t)
            self.metric_proj = nn.Linear(d_in, cfg.metric_hidden, bias=False)  # W_s
            self.log_t = nn.Parameter(torch.zeros(()))
        self.score = nn.Linear(d_in, H, bias=cfg.score_bias)  # a_h of Eq. 10, one per head
        # the n(n+1)/2 unordered pairs in the order of the fused pair products of Eq. 7 / 10, and a 0/1
        # matrix that mirrors the T pair values onto the n x n grid (its backward is a matmul, not a scatter)
        iu, ju = circulant_pairs(n)
        T = iu.numel()
        mirror = torch.zeros(n * n, T)
        mirror[iu * n + ju, torch.arange(T)] = 1.0
        mirror[ju * n + iu, torch.arange(T)] = 1.0
        self.register_buffer("mirror", mirror.t().contiguous(), persistent=False)  # [T, n * n]
        shape = (n, H, d_in, self.d_head) if cfg.field_specific else (H, d_in, self.d_head)
        self.W_a = nn.Parameter(torch.empty(shape))
        nn.init.xavier_uniform_(self.W_a.view(-1, d_in, self.d_head))
        self.act = make_activation(cfg.activation, self.d_head)
        self.drop = nn.Dropout(cfg.attention_dropout)
        if cfg.residual_layernorm:
            rshape = (n, d_in, d_out) if cfg.field_specific else (1, d_in, d_out)
            self.W_r = nn.Parameter(torch.empty(rshape))
            nn.init.xavier_uniform_(self.W_r)
            self.ln_gain = nn.Parameter(torch.ones(n, d_out))
            self.ln_bias = nn.Parameter(torch.zeros(n, d_out))

    def euclidean(self, h: torch.Tensor) -> torch.Tensor:
        """P [B, n, n] of the Euclidean metric: p_ij = exp(-t ||z_i - z_j||^2), z = W_s h [B, n, q],
        the squared distance as ||z_i||^2 + ||z_j||^2 - 2 z_i.z_j (clamped at 0; p_ii = 1)."""
        z = self.metric_proj(h)
        sq = (z * z).sum(-1)
        d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (z @ z.transpose(-1, -2))).clamp_min(0.0)
        return torch.exp(-self.log_t.exp() * d2)

    def edges(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 7-11 -> (scores P [B, n, n], P masked to the selected edges, mask, edge weights
        w^h_ij [B, H, n, n] that multiply the messages)."""
        cfg, n = self.cfg, self.n
        B = h.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=h.device)
        H = cfg.heads
        if cfg.selection and cfg.metric == "nmf":
            # f_s and a_h^T (h_i ⊙ h_j) are symmetric (Eq. 7, 10): the n(n+1)/2 unordered pairs are formed
            # once, the metric's first layer and the attention scores share one fused map of the pair
            # products h_i ⊙ h_j (layers/pair_linear.py: the [T, B, d_in] tensor is never kept), mirrored
            first, score = self.metric[0], self.score
            sb = score.bias if score.bias is not None else score.weight.new_zeros(H)
            z = pair_linear(h, torch.cat([first.weight, score.weight]), torch.cat([first.bias, sb]))  # [T, B, .]
            hidden, cu = z.split([first.out_features, H], dim=-1)
            su = self.metric[2](self.metric[1](hidden))  # [T, B, 1]
            both = (torch.cat([su, cu], dim=-1).permute(1, 2, 0).reshape(B * (1 + H), -1) @ self.mirror).view(B, 1 + H, n, n)
            P, c = torch.sigmoid(both[:, 0]), both[:, 1:]  # Eq. 7; a_h^T (h_i ⊙ h_j) + bias, [B, H, n, n]
        else:
            # a_h^T (h_i ⊙ h_j) = (h ⊙ a_h) h^T, [B, H, n, n], without forming the pair tensor
            c = (h.unsqueeze(1) * self.score.weight[None, :, None, :]) @ h.unsqueeze(1).transpose(-1, -2)
            if self.score.bias is not None:
                c = c + self.score.bias.view(1, -1, 1, 1)
            # -S: the fully connected graph, no p weighting; else the Euclidean metric
            P = self.euclidean(h) if cfg.selection else h.new_ones(B, n, n)
        candidates = torch.ones_like(P, dtype=torch.bool) if cfg.self_interaction else (~eye).expand_as(P)
        if not cfg.selection:
            mask = candidates
        elif cfg.select == "threshold":  # §4.2.2: "a minimum value for the edge probability"
            mask = candidates & (P >= cfg.threshold)
        elif self.m >= n - (not cfg.self_interaction):  # every candidate is kept (e.g. m_1 = n): no sort
            mask = candidates
        else:
            cand = P if cfg.self_interaction else P.masked_fill(eye, -1.0)
            if torch.onnx.is_in_onnx_export():  # ONNX TopK breaks ties by the lower index: the same order
                idx = torch.topk(cand, self.m, dim=-1).indices
            else:
                idx = torch.sort(cand, dim=-1, descending=True, stable=True).indices[..., : self.m]  # Eq. 8
            mask = torch.zeros_like(P, dtype=torch.bool).scatter(-1, idx, torch.ones_like(idx, dtype=torch.bool))  # Eq. 9
        p = P * mask
        c = F.leaky_relu(c, 0.2) if cfg.score_activation == "leaky_relu" else F.relu(c)  # Eq. 10
        if cfg.p_on == "logit":  # official code: p scales the logit, not the message
            c = c * p.unsqueeze(1)
        empty = cfg.select == "threshold" and cfg.softmax_over == "selected"  # a row may keep no edge at all
        if cfg.softmax_over == "selected":
            # -inf outside N_i (Eq. 11); with a threshold, the lowest finite value, so that an empty row gives
            # finite (uniform) weights that the mask below sets to 0 (its node receives no message)
            c = c.masked_fill(~mask.unsqueeze(1), torch.finfo(c.dtype).min if empty else float("-inf"))
        alpha = self.drop(softmax_last(c))  # Eq. 11
        if empty:
            alpha = alpha * mask.unsqueeze(1)
        w = alpha * p.unsqueeze(1) if cfg.p_on == "message" else alpha
        return P, p, mask, w

    def native(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Eq. 7-12 up to W_a by the fused kernel (layers/graphfm_native.py) -> (x [B, n, H, d], the edge weights
        w^h_ij as [B, n, H, n], P [B, n, n], mask [B, n, n]; only x carries gradients), or None where it does not
        apply: another metric, selection or p/softmax switch, attention dropout while training, a non-CPU
        tensor, sizes past the kernel's, export, or no kernel (``CTRGRAPH_NATIVE=0``)."""
        cfg = self.cfg
        if not (cfg.selection and cfg.metric == "nmf" and cfg.select == "top_m" and cfg.p_on == "message"
                and cfg.softmax_over == "selected" and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64)
                and not (self.training and cfg.attention_dropout > 0) and native_applies(self.n, cfg.heads, h.shape[-1])):
            return None
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or native_kernel() is None:
            return None
        first, score = self.metric[0], self.score
        sb = score.bias if score.bias is not None else score.weight.new_zeros(cfg.heads)
        wc, bc = torch.cat([first.weight, score.weight]), torch.cat([first.bias, sb])  # Eq. 7's W1 | Eq. 10's a_h
        slope = 0.2 if cfg.score_activation == "leaky_relu" else 0.0
        return native_aggregate(h, wc, bc, self.metric[2].weight.view(-1), self.metric[2].bias, self.m,
                                cfg.self_interaction, slope, cfg.aggregate == "interaction")

    def forward(self, h: torch.Tensor, trace: list | None = None) -> torch.Tensor:
        """h [B, n, d_in] -> e' [B, n, d_out] (Eq. 7-14)."""
        cfg = self.cfg
        nat = self.native(h)
        if nat is not None:
            agg, wn, P, mask = nat  # agg [B, n, H, d]: Σ_j w^h_ij (h_i ⊙ h_j); wn [B, n, H, n]
            if trace is not None:
                trace.append({"scores": P, "p": P * mask, "mask": mask, "weight": wn.transpose(1, 2)})
            if cfg.head_merge == "concat" and not cfg.field_specific:  # Eq. 12-13: W^h_a per head, heads side by side
                if not cfg.residual_layernorm and isinstance(self.act, nn.ReLU):  # σ = ReLU fused (in place)
                    return native_head_linear(agg, self.W_a, relu=True)
                return self._finish(h, native_head_linear(agg, self.W_a))  # per-head mm on strided views
            agg = agg.transpose(1, 2)  # [B, H, n, d] for the general path below
        else:
            P, p, mask, w = self.edges(h)
            if trace is not None:
                trace.append({"scores": P.detach(), "p": p.detach(), "mask": mask, "weight": w.detach()})
            agg = torch.einsum("bhij,bjd->bhid", w, h)  # Σ_j w_ij h_j per head
            if cfg.aggregate == "interaction":
                agg = agg * h.unsqueeze(1)  # Σ_j w_ij (h_i ⊙ h_j)
        if cfg.field_specific:  # per (field, head) matmuls over the batch; faster than the einsum
            msg = (agg.permute(2, 1, 0, 3) @ self.W_a).permute(2, 1, 0, 3)
        else:
            msg = torch.einsum("bhid,hde->bhie", agg, self.W_a)  # Eq. 12, W^h_a
        if cfg.head_merge == "concat":
            out = msg.permute(0, 2, 1, 3).flatten(2)  # Eq. 13
        else:
            out = msg.mean(dim=1)  # Eq. 14
        return self._finish(h, out)

    def _finish(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """σ of Eq. 12 on the merged heads out [B, n, d_out]; with ``residual_layernorm`` the official code's
        LayerNorm(ReLU(out + ReLU(W_r h)))."""
        cfg = self.cfg
        if not cfg.residual_layernorm:
            return self.act(out)
        res = F.relu((h.transpose(0, 1) @ self.W_r).transpose(0, 1))  # W_r: [n or 1, d_in, d_out]
        out = F.relu(out + res)
        return F.layer_norm(out, self.ln_gain.shape[-1:]) * self.ln_gain + self.ln_bias  # static shape (export)


class GraphFM(CTRModel):
    name = "graphfm"
    Config = GraphFMConfig
    presets = {
        "paper": _PAPER,
        "official": _OFFICIAL,
        "reference": _REFERENCE,
        "reference_ml1m": {**_REFERENCE, "m": [7, 4, 2], "attention_dropout": 0.4, "embedding_dropout": 0.1},
        "ml1m": {"m": [7, 4, 2]},
        "official_ml1m": {**_OFFICIAL, "m": [7, 4, 2]},
    }
    #: the run identity lists the model parameters that differ from these values (runs/identity.py): the
    #: defaults before the paper became the default (issue 17), so every earlier run keeps its key (an
    #: ``official`` run is the earlier default run, a default run the earlier ``preset=paper`` run)
    identity_base = _OFFICIAL
    paper = "Wu et al., GraphFM: Graph Factorization Machines for Feature Interaction Modeling"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        n = len(spec.features)
        if n < 2:
            raise ConfigError(f"graphfm needs at least 2 fields, the schema has {n}")
        self.m = self.neighbours(cfg, n)
        dims = cfg.dims * cfg.layers if len(cfg.dims) == 1 else list(cfg.dims)
        d_in = [embedding.dim] + dims[:-1]
        self.layers_ = nn.ModuleList(GraphFMLayer(cfg, n, d_in[k], dims[k], self.m[k]) for k in range(cfg.layers))
        self.readout_ids = list(range(cfg.layers + 1)) if cfg.readout is None else sorted(set(cfg.readout))
        width = sum(([embedding.dim] + dims)[k] for k in self.readout_ids)
        self.proj = nn.Linear(width, 1)  # p and b of Eq. 17
        self.emb_drop = nn.Dropout(cfg.embedding_dropout)

    @staticmethod
    def neighbours(cfg: GraphFMConfig, n: int) -> list[int]:
        if cfg.m is None:
            auto = [n, math.ceil(n / 2), math.ceil(n / 4)]
            return [auto[min(k, 2)] for k in range(cfg.layers)]
        if max(cfg.m) > n:
            raise ConfigError(f"graphfm: m={cfg.m} keeps more neighbours than the {n} fields")
        return list(cfg.m)

    def output_bias(self):
        return self.proj.bias

    def fields(self) -> list[str]:
        return [f.name for f in self.spec.features]

    def forward(self, batch, trace: list | None = None):
        eb = self.embedding(batch)
        E = self.emb_drop(eb.matrix(seq_pool=self.cfg.seq_pool))
        states, h = [E], E
        for layer in self.layers_:
            h = layer(h, trace)
            states.append(h)
        e_star = torch.cat([states[k].mean(dim=1) for k in self.readout_ids], dim=-1)  # Eq. 15-16 (mean, then concat)
        return self.output(self.proj(e_star).squeeze(-1), eb)  # Eq. 17

    @torch.no_grad()
    def explain(self, batch) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``scores`` (P^(k) of Eq. 7, [B, n, n]), ``p`` (P^(k) after Eq. 8), ``mask`` (selected edges) and ``weight``
        (the edge weights multiplying the messages, [B, H, n, n]) of this batch (Fig. 4)."""
        trace: list = []
        self.forward(batch, trace)
        return trace
