"""Recurrent layers of DIEN (Zhou et al., Deep Interest Evolution Network, AAAI 2019, Sec. 4.2-4.3).

GRU (paper Eq. 2-5)::

    u_t = sigmoid(W^u i_t + U^u h_{t-1} + b^u)              update gate
    r_t = sigmoid(W^r i_t + U^r h_{t-1} + b^r)              reset gate
    h~_t = tanh(W^h i_t + r_t * (U^h h_{t-1}) + b^h)
    h_t = (1 - u_t) * h_{t-1} + u_t * h~_t

Interest-evolving variants with an attention score a_t per step (Sec. 4.3):

- ``augru`` (Eq. 7-8): u'_t = a_t * u_t;  h_t = (1 - u'_t) * h_{t-1} + u'_t * h~_t
- ``agru``  (Eq. 6-like): the score replaces the update gate, h_t = (1 - a_t) * h_{t-1} + a_t * h~_t
- ``aigru``: the input is scaled, i'_t = a_t * i_t, then a plain GRU.

Sequences are post-padded (valid steps first). A GRU is causal, so the states of valid steps never
depend on the padding after them; :func:`last_valid` reads the state at step ``len - 1`` (zeros
for an empty sequence). The attentional cells additionally keep h unchanged on padded steps
(``torch.where`` on the mask), so their last state is the last valid state as well.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

GRU_TYPES = ("gru", "aigru", "agru", "augru")


def last_valid(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """states [B, L, H], post-padded mask [B, L] -> state at the last valid step [B, H] (0 if none)."""
    lens = mask.sum(dim=1)
    idx = (lens - 1).clamp_min(0)
    h = states.gather(1, idx.view(-1, 1, 1).expand(-1, 1, states.shape[-1])).squeeze(1)
    return h * (lens > 0).unsqueeze(-1).to(h.dtype)


class AttentionalGRU(nn.Module):
    """One GRU layer driven by per-step attention scores (``augru`` or ``agru``).

    The input projections W i_t of all steps are one batched matmul; the loop runs over time steps
    only, each step batched over the whole batch ([B, H] x [H, 3H]); the update and reset gates
    share one add and one sigmoid over [B, 2H]. :meth:`final` returns the last state only
    (what DIEN reads), :meth:`forward` all states.
    """

    def __init__(self, input_size: int, hidden_size: int, gru_type: str = "augru"):
        super().__init__()
        if gru_type not in ("augru", "agru"):
            raise ConfigError(f"AttentionalGRU: gru_type must be augru or agru, got {gru_type!r}")
        self.gru_type = gru_type
        self.hidden_size = hidden_size
        self.x2h = nn.Linear(input_size, 3 * hidden_size)  # W^u, W^r, W^h and the biases
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size, bias=False)  # U^u, U^r, U^h
        bound = hidden_size ** -0.5  # the nn.GRU initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, I], att [B, L] (0 on padding), mask [B, L] -> states [B, L, H]."""
        return torch.stack(self._run(x, att, mask, keep=True), dim=1)

    def final(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The state after the last step [B, H]: h is kept on padded steps, so for post-padded
        sequences this is the state at the last valid step (0 for an empty sequence), what
        ``last_valid(self(x, att, mask), mask)`` reads, without stacking the L states."""
        return self._run(x, att, mask, keep=False)[-1]

    def _run(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor, keep: bool) -> list[torch.Tensor]:
        B, L, _ = x.shape
        H = self.hidden_size
        # unbind once: per-step slicing would make autograd zero-fill a [B, L, 3H] gradient per step
        gx = self.x2h(x).unbind(1)  # L x [B, 3H]
        # the update u = a * sigmoid(.) (augru) or a (agru) is exactly 0 where a is, and then
        # h + u (h~ - h) = h: with a zeroed on padded steps no torch.where is needed per step
        # (a * 1 = a on valid steps: the same numbers as masking h with torch.where)
        att_t = (att * mask.to(att.dtype)).unsqueeze(-1).unbind(1)
        w = self.h2h.weight.t()  # [H, 3H]: U^u, U^r, U^h side by side
        augru = self.gru_type == "augru"
        h = x.new_zeros(B, H)
        out = []
        for t in range(L):
            gh = h @ w
            ur = torch.sigmoid(gx[t][:, :2 * H] + gh[:, :2 * H])  # update and reset gates in one op
            r = ur[:, H:]
            cand = torch.tanh(gx[t][:, 2 * H:] + r * gh[:, 2 * H:])
            u = att_t[t] * ur[:, :H] if augru else att_t[t]
            h = h + u * (cand - h)  # (1 - u) h + u h~
            if keep or t == L - 1:
                out.append(h)
        return out if out else [h]


class InterestEvolution(nn.Module):
    """DIEN's interest-evolving layer for any ``gru_type`` in :data:`GRU_TYPES`; returns the final
    evolved interest h'_T [B, H] (the state at the last valid step)."""

    def __init__(self, input_size: int, hidden_size: int, gru_type: str = "augru"):
        super().__init__()
        gru_type = gru_type.lower()
        if gru_type not in GRU_TYPES:
            raise ConfigError(f"unknown gru_type {gru_type!r}; known: {', '.join(GRU_TYPES)}")
        self.gru_type = gru_type
        if gru_type in ("gru", "aigru"):
            self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)
        else:
            self.rnn = AttentionalGRU(input_size, hidden_size, gru_type)

    def forward(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.gru_type in ("gru", "aigru"):
            if self.gru_type == "aigru":
                x = x * att.unsqueeze(-1)
            states, _ = self.rnn(x)
            return last_valid(states, mask)
        return self.rnn.final(x, att, mask)
