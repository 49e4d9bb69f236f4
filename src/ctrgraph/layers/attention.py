"""DIN's local activation unit (Zhou et al., KDD 2018, Sec. 4.3 and Fig. 2)."""
from __future__ import annotations

import torch
from torch import nn

from .mlp import MLP
from .pooling import weighted_sum


class TargetAttention(nn.Module):
    """Weights each behaviour by an MLP of [q, k, q - k, q * k] and sum-pools them.

    ``use_softmax=False`` is the paper's unnormalised weighting (w_j = a(e_j, v_A), Eq. 3);
    ``True`` is the official code's masked softmax. Scores are computed only on valid (non-padded)
    positions, so padding never enters the MLP or Dice's batch statistics.
    """

    def __init__(self, dim: int, hidden: list[int], act: str = "dice", use_softmax: bool = False):
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, act=act, out_dim=1)
        self.use_softmax = use_softmax

    def _first_layer(self, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The MLP's first Linear on [q_r, k, q_r - k, q_r * k] (q_r = q[rows]) without the 4d input:
        with W = [W_q | W_k | W_d | W_p] it is q (W_q + W_d)^T + b, computed once per batch row and
        gathered, plus k (W_k - W_d)^T + (q_r * k) W_p^T over the valid positions, both accumulated
        onto it by the matmuls (addmm, addmm_): half the products of the concatenated form and no
        [N, 4d] or [N, 2d] input buffer; equal up to the order of the sums (tested)."""
        lin = self.mlp.net[0]
        wq, wk, wd, wp = lin.weight.split(k.shape[1], dim=1)
        c = nn.functional.linear(q, wq + wd, lin.bias).index_select(0, rows)
        h = torch.addmm(c, k, (wk - wd).t())
        return h.addmm_(q.index_select(0, rows) * k, wp.t())

    def scores(self, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [B, d], keys [B, L, d], mask [B, L] -> weights [B, L] (0 on padding)."""
        B, L = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)  # valid positions b * L + l
        rows = torch.div(flat, L, rounding_mode="floor")
        k = keys.reshape(B * L, -1).index_select(0, flat)
        s = self.mlp.net[1:](self._first_layer(q, k, rows)).squeeze(-1).to(keys.dtype)
        # scattered back with scatter (not index_put, which ONNX export cannot take with this mask)
        if self.use_softmax:
            full = keys.new_full((B * L,), float("-inf")).scatter(0, flat, s).view(B, L)
            w = torch.softmax(full, dim=1)
            return torch.nan_to_num(w, nan=0.0)  # rows with an empty history
        return keys.new_zeros(B * L).scatter(0, flat, s).view(B, L)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.scores(q, keys, mask)
        return weighted_sum(w, keys)
