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
from .native import augru_last
from .native import kernel as native_kernel

GRU_TYPES = ("gru", "aigru", "agru", "augru")


def last_valid(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """states [B, L, H], post-padded mask [B, L] -> state at the last valid step [B, H] (0 if none)."""
    lens = mask.sum(dim=1)
    idx = (lens - 1).clamp_min(0)
    h = states.gather(1, idx.view(-1, 1, 1).expand(-1, 1, states.shape[-1])).squeeze(1)
    return h * (lens > 0).unsqueeze(-1).to(h.dtype)


def _attentional_loop(gx: torch.Tensor, w: torch.Tensor, att: torch.Tensor, kind: str, keep: bool) -> torch.Tensor:
    """The ``augru`` / ``agru`` recurrence over gx [B, L, 3H] (input projections W i_t + b of all
    steps, gates u, r, h~), w [H, 3H] (U^u, U^r, U^h transposed) and att [B, L, 1] (0 on padding):
    h' = h + u' (h~ - h) with u' = a * u (augru) or a (agru). Returns all states [B, L, H]
    (``keep``) or the last one [B, H].

    Gates are taken apart with ``split`` (whose gradient is one cat) rather than by slicing (each
    slice's gradient is a zero-filled [B, 3H] tensor plus a copy, 4 per step); the update and reset
    gates share one add and one sigmoid over [B, 2H].
    """
    B, L, _ = gx.shape
    H = w.shape[0]
    h = gx.new_zeros(B, H)
    out = []
    gxs = gx.unbind(1)  # one UnbindBackward (a stack) for all steps, not L zero-filled slice gradients
    atts = att.unbind(1)
    for t in range(L):
        gs, gn = gxs[t].split((2 * H, H), dim=1)
        ghs, ghn = torch.mm(h, w).split((2 * H, H), dim=1)
        u, r = torch.sigmoid(gs + ghs).split((H, H), dim=1)
        cand = torch.tanh(gn + r * ghn)
        u = atts[t] * u if kind == "augru" else atts[t]
        h = h + u * (cand - h)  # (1 - u) h + u h~
        if keep:
            out.append(h)
    return torch.stack(out, dim=1) if keep else h


class AttentionalGRU(nn.Module):
    """One GRU layer driven by per-step attention scores (``augru`` or ``agru``).

    The input projections W i_t of all steps are one batched matmul; the loop runs over time steps
    only, each step batched over the whole batch ([B, H] x [H, 3H], :func:`_attentional_loop`).
    :meth:`final` returns the last state only (what DIEN reads), :meth:`forward` all states.
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
        return self._run(x, att, mask, keep=True)

    def final(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The state after the last step [B, H]: h is kept on padded steps, so for post-padded
        sequences this is the state at the last valid step (0 for an empty sequence), what
        ``last_valid(self(x, att, mask), mask)`` reads, without stacking the L states."""
        return self._run(x, att, mask, keep=False)

    def _run(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor, keep: bool) -> torch.Tensor:
        # the update u = a * sigmoid(.) (augru) or a (agru) is exactly 0 where a is, and then
        # h + u (h~ - h) = h: with a zeroed on padded steps no torch.where is needed per step
        # (a * 1 = a on valid steps: the same numbers as masking h with torch.where)
        a = (att * mask.to(att.dtype)).unsqueeze(-1)
        gx, w = self.x2h(x), self.h2h.weight.t()
        if (not keep and self.gru_type == "augru" and torch.is_grad_enabled() and gx.device.type == "cpu"
                and gx.dtype == w.dtype == a.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and not torch.jit.is_tracing() and not torch.jit.is_scripting() and native_kernel() is not None):
            return augru_last(gx, w, a)  # the same loop in one native call, bit for bit
        return _attentional_loop(gx, w, a, self.gru_type, keep)


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
