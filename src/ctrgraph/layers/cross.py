"""Explicit feature-interaction layers: DCN's cross network, DCN-V2's cross network (full-rank and
low-rank mixture of experts), xDeepFM's CIN, NFM's bi-interaction pooling, AFM's attention over
pairwise interactions and the ANOVA kernel of higher-order FMs.

Inputs are either a flat vector x0 [B, D] (cross networks) or a field matrix E [B, F, d].
All operators are vectorised over the batch, fields and experts; loops run over layers only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .activation import activation
from .interaction import upper_pairs
from .native import cross_v2, pair_attention
from .native import kernel as native_kernel


class CrossNet(nn.Module):
    """DCN cross network (Wang et al., ADKDD 2017, Eq. 3): x_{l+1} = x0 x_l^T w_l + b_l + x_l.

    x0 x_l^T w_l is computed as x0 * <x_l, w_l> (a rank-one product, O(D) per layer).
    Weights start Xavier-normal, biases at 0 (the paper does not say).
    """

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_layers, dim))
        self.b = nn.Parameter(torch.zeros(n_layers, dim))
        nn.init.xavier_normal_(self.w)
        self.n_layers = n_layers

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for l in range(self.n_layers):
            x = x0 * (x @ self.w[l]).unsqueeze(-1) + self.b[l] + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 cross layer (Wang et al., WWW 2021, Eq. 1): x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l,
    with a full D x D matrix W_l per layer."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.fork(x0)[0]

    def fork(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_L, x0 for another branch of the model). Training on contiguous float32 CPU inputs with
        the native kernel: :func:`~ctrgraph.layers.native.cross_v2` (the same values and gradients,
        the elementwise work fused; x0's gradient from the other branch enters through the second
        output, so its terms add up in the plain graph's order); otherwise the modules."""
        params = [t for lin in self.layers for t in (lin.weight, lin.bias)]
        if (len(self.layers) and x0.device.type == "cpu" and x0.dtype == torch.float32 and x0.is_contiguous()
                and x0.dim() == 2
                and torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in params))
                and all(p.dtype == torch.float32 for p in params) and not torch.is_autocast_enabled("cpu")
                and not torch.jit.is_tracing() and not torch.jit.is_scripting() and native_kernel() is not None):
            return cross_v2(x0, [(lin.weight, lin.bias) for lin in self.layers])
        x = x0
        for lin in self.layers:
            # x0 * lin(x) + x, the sum taken in place on the fresh product (the product's backward
            # reads x0 and lin(x), not its result): the same values, one [B, D] tensor less per layer
            x = (x0 * lin(x)).add_(x)
        return x, x0


class CrossNetMix(nn.Module):
    """DCN-V2's low-rank mixture-of-experts cross layer (Wang et al. 2021, Sec. 5, Eq. 3-4):

    E_i(x_l) = x0 ⊙ (U_i g(C_i g(V_i^T x_l)) + b_l),  x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l,

    with K experts of rank r per layer (V_i, U_i: D x r, C_i: r x r). Choices (the paper leaves
    them open): gate G = softmax over experts of a linear map of x_l (no bias); g = tanh by
    default (``activation``). ``n_experts=1`` with ``activation='none'`` and C_i = I is the plain
    low-rank layer W = U V^T (Eq. 2); here C is always learned.
    """

    def __init__(self, dim: int, n_layers: int, rank: int, n_experts: int = 4, act: str = "tanh"):
        super().__init__()
        K, r, L = n_experts, rank, n_layers
        self.V = nn.Parameter(torch.empty(L, K, dim, r))
        self.C = nn.Parameter(torch.empty(L, K, r, r))
        self.U = nn.Parameter(torch.empty(L, K, r, dim))
        self.b = nn.Parameter(torch.zeros(L, dim))
        for p in (self.V, self.C, self.U):
            for t in p.view(-1, *p.shape[-2:]):
                nn.init.xavier_normal_(t)
        self.gate = nn.Parameter(torch.empty(L, dim, K))
        nn.init.xavier_normal_(self.gate)
        self.g = activation(act, r)
        self.n_layers = n_layers

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for l in range(self.n_layers):
            v = self.g(torch.einsum("bd,kdr->bkr", x, self.V[l]))
            v = self.g(torch.einsum("bkr,krs->bks", v, self.C[l]))
            u = torch.einsum("bkr,krd->bkd", v, self.U[l])
            experts = x0.unsqueeze(1) * (u + self.b[l])            # [B, K, D]
            gates = torch.softmax(x @ self.gate[l], dim=-1)         # [B, K]
            x = torch.einsum("bk,bkd->bd", gates, experts) + x
        return x

    def fork(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_L, x0), as :meth:`CrossNetV2.fork`."""
        return self(x0), x0


def _symmetric_products(x: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The products x_i x_j, i <= j, of x [N, m] and the matching weights of W [H, m m] (channel
    i m + j): W_ij + W_ji for i < j, W_ii on the diagonal, so Z' W'^T = (x (x) x) W^T.

    The pairs are picked by one-hot selection matrices (matmuls, whose gradients are matmuls too;
    built from numpy so a traced or exported model holds them as constants)."""
    m = x.shape[1]
    iu = np.triu_indices(m)
    P = len(iu[0])
    sel = np.zeros((2, P, m), dtype=np.float32)
    sel[0, np.arange(P), iu[0]] = 1.0
    sel[1, np.arange(P), iu[1]] = 1.0
    sel = torch.from_numpy(sel).to(device=x.device, dtype=x.dtype)
    Z = (x @ sel[0].t()) * (x @ sel[1].t())                             # [N, P]
    W3 = W.view(W.shape[0], m, m)
    scale = torch.from_numpy(np.where(iu[0] == iu[1], 0.5, 1.0)).to(device=W.device, dtype=W.dtype)
    i0, i1 = torch.from_numpy(iu[0]).to(W.device), torch.from_numpy(iu[1]).to(W.device)
    Ws = (W3 + W3.transpose(1, 2))[:, i0, i1] * scale                  # [H, P]: 2 W_ii * 0.5 = W_ii exactly
    return Z, Ws


class CIN(nn.Module):
    """Compressed Interaction Network (Lian et al., KDD 2018, Eq. 6-7, Fig. 4-5).

    X^k_{h,*} = sum_i sum_j W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*})  (Eq. 6) — the outer product
    over fields [B, H_{k-1} * m, D] compressed by a 1x1 convolution — and p^k_h = sum_D X^k_{h,*}
    (Eq. 7); the output p+ = [p^1, ..., p^T] has sum(H_k) entries.

    ``split_half`` (official code, not in the paper): every layer but the last sends half of its
    feature maps to the output and the other half to the next layer (layer sizes must be even).
    ``act``: an element-wise activation on X^k (the paper's Eq. 6 has none; identity is the
    default).

    Evaluation (the same sums as the 1x1 convolution over the [B, H_{k-1} m, D] outer product, the
    weights kept in ``convs`` as [H_k, H_{k-1} m, 1]): the embedding axis D is moved into the batch,
    the outer product of every (b, d) is one batched matmul [B D, H_{k-1}, 1] @ [B D, 1, m] (so its
    backward is two batched matmuls, not broadcast products summed over an axis) and the
    compression is one matmul [B D, H_{k-1} m] @ [H_{k-1} m, H_k]; the feature maps stay
    [B D, H_k] between layers. The first layer's outer product X^0 (x) X^0 is symmetric, so it
    uses the m (m + 1) / 2 products i <= j with the weights W_ij + W_ji (78 instead of 144 channels
    at m = 12). The last layer's maps are only summed over D (Eq. 7), and with the
    identity activation p^k_h = sum_ij W^{k,h}_ij sum_d X^{k-1}_{i,d} X^0_{j,d}: the per-row
    Gram matrix X^{k-1} X^0^T [B, H_{k-1}, m] (a batched matmul over D) times W, [B, H_{k-1} m] @
    [H_{k-1} m, H_k] -- B rows instead of B D (the same sums in another order; the last layer of
    the default [100, 100] is the largest one).
    """

    def __init__(self, n_fields: int, layer_sizes: list[int], split_half: bool = False, act: str = "none"):
        super().__init__()
        self.split_half = split_half
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        h_prev, out = n_fields, 0
        for k, h in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(h_prev * n_fields, h, kernel_size=1, bias=False))
            self.acts.append(activation(act, h))
            last = k == len(layer_sizes) - 1
            if split_half and not last:
                if h % 2:
                    raise ValueError(f"CIN split_half needs even layer sizes, got {h}")
                h_prev, out = h // 2, out + h // 2
            else:
                h_prev, out = h, out + h
        self.out_dim = out

    def forward(self, X0: torch.Tensor) -> torch.Tensor:
        """X0 [B, m, D] -> p+ [B, out_dim]."""
        B, m, D = X0.shape
        x0 = X0.transpose(1, 2).reshape(B * D, 1, m)                   # [B D, 1, m]
        x, pooled = x0.transpose(1, 2), []                              # X^0 as [B D, m, 1]
        last = len(self.convs) - 1
        for k, (conv, act) in enumerate(zip(self.convs, self.acts)):
            W = conv.weight.view(conv.weight.shape[0], -1)              # [H_k, H_{k-1} m]
            if k == last and isinstance(act, nn.Identity):
                # the last maps only feed p^k = sum_D X^k: sum_d sum_ij W_hij X_id X0_jd
                # = sum_ij W_hij G_ij with G = X X0^T over D (per row) -- D times fewer products
                G = torch.matmul(x.view(B, D, -1).transpose(1, 2), x0.view(B, D, m))   # [B, H_{k-1}, m]
                pooled.append(G.reshape(B, -1) @ W.t())                  # [B, H_k] (Eq. 6-7)
                break
            if k == 0:  # X^0 (x) X^0 is symmetric: the m (m + 1) / 2 products i <= j with W_ij + W_ji
                Z, W = _symmetric_products(x0.view(B * D, m), W)        # [B D, m (m + 1) / 2], [H_1, same]
            else:
                Z = torch.matmul(x, x0).view(B * D, -1)                 # [B D, H_{k-1} m], channel i m + j
            Xk = Z @ W.t()                                              # [B D, H_k] (Eq. 6)
            if not isinstance(act, nn.Identity):  # channel-wise activations (PReLU, Dice) see [B, H_k, D]
                Xk = act(Xk.view(B, D, -1).transpose(1, 2)).transpose(1, 2).reshape(B * D, -1)
            if self.split_half and k < last:
                nxt, direct = torch.split(Xk, Xk.shape[1] // 2, dim=1)
            else:
                nxt, direct = Xk, Xk
            pooled.append(direct.view(B, D, -1).sum(dim=1))             # Eq. 7: sum over D
            if k < last:
                x = nxt.unsqueeze(-1)                                   # [B D, H_k (or H_k / 2), 1]
        return torch.cat(pooled, dim=1)


def bi_interaction(E: torch.Tensor) -> torch.Tensor:
    """NFM's bi-interaction pooling (He & Chua, SIGIR 2017, Eq. 3-4):
    sum_{i<j} e_i ⊙ e_j = 0.5 * ((sum_i e_i)^2 - sum_i e_i^2), E [B, F, d] -> [B, d]."""
    s = E.sum(dim=1)
    return 0.5 * (s.pow(2) - E.pow(2).sum(dim=1))


class PairwiseAttention(nn.Module):
    """AFM's attention-based pooling (Xiao et al., IJCAI 2017, Eq. 4-5):

    a'_ij = h^T ReLU(W (v_i ⊙ v_j) + b), a_ij = softmax over pairs (i < j),
    output sum_{i<j} a_ij (v_i ⊙ v_j) [B, d]. ``dropout`` acts on the pair-wise interacted
    vectors (the paper's dropout on the pair-wise interaction layer).
    """

    def __init__(self, dim: int, attention_size: int, dropout: float = 0.0):
        super().__init__()
        self.W = nn.Linear(dim, attention_size)
        self.h = nn.Linear(attention_size, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def pairs(self, E: torch.Tensor) -> torch.Tensor:
        F = E.shape[1]
        iu = upper_pairs(F, E.device)
        # index_select: its gradient is an index_add, where advanced indexing's is an index_put
        # with accumulation (measured 6.7 vs 9.9 ms forward + backward at B 1024, F 12, d 16)
        return E.index_select(1, iu[0]) * E.index_select(1, iu[1])      # [B, P, d]

    def weights(self, P: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.h(torch.relu(self.W(P))).squeeze(-1), dim=1)   # [B, P]

    def forward(self, E: torch.Tensor) -> torch.Tensor:
        if self._fused(E):
            return pair_attention(E, self.W.weight, self.W.bias, self.h.weight)
        P = self.pairs(E)
        a = self.weights(P)
        return torch.einsum("bp,bpd->bd", a, self.dropout(P))

    def _fused(self, E: torch.Tensor) -> bool:
        """Training on contiguous float32 CPU input with no active dropout and the native kernel:
        :func:`~ctrgraph.layers.native.pair_attention` (the same values and gradients)."""
        params = (self.W.weight, self.W.bias, self.h.weight)
        return (E.device.type == "cpu" and E.dtype == torch.float32 and E.dim() == 3 and E.shape[1] >= 2
                and E.is_contiguous() and torch.is_grad_enabled()
                and (E.requires_grad or any(p.requires_grad for p in params))
                and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
                and not (self.training and self.dropout.p > 0) and not torch.is_autocast_enabled("cpu")
                and not torch.jit.is_tracing() and not torch.jit.is_scripting() and native_kernel() is not None)


def anova_kernels(E: torch.Tensor, order: int) -> list[torch.Tensor]:
    """ANOVA kernels A^t(p, x) for t = 1..order on each embedding coordinate (Blondel et al.,
    NIPS 2016, Eq. 6-7 dynamic programming), E = [x_j p_j] [B, F, d] -> list of [B, d].

    The recursion A^t_j = A^t_{j-1} + p_j x_j A^{t-1}_{j-1} over fields j is evaluated as a
    cumulative sum (A^t over the first j fields = cumsum_j of p_j x_j A^{t-1}_{j-1}); the loop runs
    over orders only.
    """
    B, F, d = E.shape
    prev = torch.ones(B, F, d, dtype=E.dtype, device=E.device)        # A^0 over the first j-1 fields
    out = []
    for _ in range(order):
        cum = torch.cumsum(E * prev, dim=1)                             # A^t over the first j fields
        out.append(cum[:, -1])
        prev = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=1)   # shift: first j-1 fields
    return out
