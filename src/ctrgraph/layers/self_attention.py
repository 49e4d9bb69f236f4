"""Multi-head self-attention over fields (AutoInt, Fi-GNN, InterHAt) and Fi-GNN's graph layer.

All operators act on a field matrix ``[B, F, d]`` at once: heads and fields are batched through
``einsum`` / fused projections, never looped over.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as Fn

from .native import kernel as native_kernel
from .native import small_attention


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the F fields: ``[B, F, in_dim] -> [B, F, heads * head_dim]``.

    AutoInt's interacting layer (Song et al., CIKM 2019):
    Eq. 5-6   alpha^h_{m,k} = softmax_k(<W_Q^h e_m, W_K^h e_k>)    (scaled by 1/sqrt(d') if ``scale``)
    Eq. 7     e~^h_m = sum_k alpha^h_{m,k} W_V^h e_k
    Eq. 8     e~_m = e~^1_m (+) ... (+) e~^H_m                      (heads concatenated)
    Eq. 9     e^Res_m = ReLU(e~_m + W_Res e_m)                      (``residual``, ``relu``)

    Options for the reference codes: ``projection="relu"`` (dense layers with bias and ReLU on Q, K,
    V as AutoInt's and GraphCTR's TF code), ``layer_norm`` (LayerNorm after the ReLU, same codes).
    The paper's own layer is linear projections without bias, no scaling, no LayerNorm.
    """

    def __init__(self, in_dim: int, head_dim: int, heads: int, residual: bool = True, scale: bool = False,
                 projection: str = "linear", relu: bool = True, layer_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        if projection not in ("linear", "relu"):
            raise ValueError(f"projection must be 'linear' or 'relu', got {projection!r}")
        self.heads, self.head_dim = heads, head_dim
        self.out_dim = heads * head_dim
        self.qkv = nn.Linear(in_dim, 3 * self.out_dim, bias=projection == "relu")  # W_Q, W_K, W_V fused
        self.proj_relu = projection == "relu"
        self.res = nn.Linear(in_dim, self.out_dim, bias=False) if residual else None
        self.scale = scale
        self.relu = relu
        self.norm = nn.LayerNorm(self.out_dim) if layer_norm else None
        self.dropout = dropout

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights alpha [B, H, F, F] (for inspection and tests)."""
        q, k, _ = self._qkv(x)
        s = q @ k.transpose(-1, -2)
        if self.scale:
            s = s / math.sqrt(self.head_dim)
        return torch.softmax(s, dim=-1)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V [B, H, F, dh]: three matmuls with the fused weight's row blocks (one [in, 3 H dh]
        matmul then a permute made SDPA's gradients arrive in the interleaved layout, one zero fill
        and one copy of [B, F, 3, H, dh] more per layer: measured 12.5 vs 10.9 ms forward + backward
        per AutoInt layer at B 1024, F 12, 2 heads of 8, one thread)."""
        B, F, _ = x.shape
        ws = self.qkv.weight.split(self.out_dim, dim=0)
        bs = self.qkv.bias.split(self.out_dim) if self.qkv.bias is not None else (None, None, None)
        out = []
        for w, b in zip(ws, bs):
            t = Fn.linear(x, w, b)
            if self.proj_relu:
                t = torch.relu(t)
            out.append(t.view(B, F, self.heads, self.head_dim).transpose(1, 2))
        q, k, v = out
        return q, k, v

    def _native(self, x: torch.Tensor) -> bool:
        """Whether :func:`~ctrgraph.layers.native.small_attention` computes Eq. 5-8 (CPU, no
        attention dropout in this mode, not traced, the extension built)."""
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and not (self.training and self.dropout > 0) and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and native_kernel() is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, F, _ = x.shape
        if self._native(x):
            # one projection matmul for Q, K, V and the fused kernel, which reads them from its
            # [B, F, 3 H dh] output and returns the heads concatenated (Eq. 8); the backward writes
            # their gradients in the same layout (one matmul back). On CPU at 12 fields and 2 heads
            # of 8: 1.6 (3.6 before the kernel was vectorised over query rows) vs 8.9 ms forward +
            # backward per layer (B 1024, one thread).
            qkv = Fn.linear(x, self.qkv.weight, self.qkv.bias)
            if self.proj_relu:
                qkv = torch.relu(qkv)
            out = small_attention(qkv, self.heads, 1.0 / math.sqrt(self.head_dim) if self.scale else 1.0)
        else:
            q, k, v = self._qkv(x)
            out = Fn.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0,
                scale=None if self.scale else 1.0)  # [B, H, F, dh]
            out = out.transpose(1, 2).reshape(B, F, self.out_dim)  # Eq. 8: concatenate heads
        if self.res is not None:
            # the residual projection accumulated onto the attention output by the matmul itself
            # (addmm: the same sums as out + res(x), no separate [B F, H dh] add), then ReLU in place
            # (addmm's gradient does not read its result)
            out = torch.addmm(out.reshape(B * F, self.out_dim), x.reshape(B * F, -1), self.res.weight.t())
            out = (torch.relu_(out) if self.relu else out).view(B, F, self.out_dim)
        elif self.relu:
            out = torch.relu(out)
        if self.norm is not None:
            out = self.norm(out)
        return out


class FieldLinear(nn.Module):
    """A separate linear map per field (Fi-GNN's edge-wise W_out^j / W_in^i): [B, F, a] -> [B, F, b]."""

    def __init__(self, fields: int, in_dim: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fields, in_dim, out_dim))
        nn.init.xavier_uniform_(self.weight.view(fields * in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(fields, out_dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("nfa,fab->nfb", x, self.weight)
        return y if self.bias is None else y + self.bias


class AttentionalEdges(nn.Module):
    """Fi-GNN's attentional adjacency (Li et al., CIKM 2019, Eq. 4-5):
    A[i, j] = softmax_{j != i}(LeakyReLU(W_attn [e_i || e_j])), self-loops excluded.

    W_attn [e_i || e_j] = w_1 . e_i + w_2 . e_j + b is computed for all pairs from two projections
    (linear in the concatenation), so the [B, F, F, 2d] pair tensor is never built.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Linear(dim, 2)  # column 0: w_1 (node i), column 1: w_2 (node j); bias = b

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        s = self.w(e)  # [B, F, 2]
        logits = Fn.leaky_relu(s[..., :1] + s[..., 1].unsqueeze(1), 0.2)  # [B, F(i), F(j)]
        F = e.shape[1]
        pos = torch.arange(F, device=e.device)
        eye = pos.unsqueeze(1) == pos  # i == j (not torch.eye: ONNX Runtime has no boolean EyeLike)
        return torch.softmax(logits.masked_fill(eye, float("-inf")), dim=-1)


class GraphInteraction(nn.Module):
    """One Fi-GNN state-update step over all fields at once (Eq. 6-9).

    a_i = W_in^i sum_j A[i, j] W_out^j h_j + b_p   (edge-wise transformation, Eq. 6-7)
    h_i = GRU(h_i, a_i)                              (Eq. 8; one GRU cell shared by all nodes)
    The residual h_i += h^1_i (Eq. 9) is added by the caller, who holds h^1.
    """

    def __init__(self, fields: int, dim: int):
        super().__init__()
        self.w_out = FieldLinear(fields, dim, dim)
        self.w_in = FieldLinear(fields, dim, dim)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gru = nn.GRUCell(dim, dim)

    def forward(self, h: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        B, F, d = h.shape
        a = self.w_in(torch.matmul(A, self.w_out(h))) + self.bias  # A: [B, F, F] or [F, F]
        return self.gru(a.reshape(B * F, d), h.reshape(B * F, d)).view(B, F, d)
