"""Shared pieces of the multi-interest baselines (MIND, ComiRec-DR, ComiRec-SA, DMIN).

- :func:`squash` and :func:`dynamic_routing`: capsule routing of behaviour capsules into K interest
  capsules (MIND Eq. 4-8 / Algorithm 1; ComiRec Eq. 1-4 / Algorithm 1), batched over rows and
  interests, with padding masked.
- :func:`positions` and :func:`align`: position ids of a post-padded behaviour sequence, counted
  from its most recent valid behaviour (``"recent"``, 0 = most recent; independent of how much
  padding follows) or from its first column (``"start"``).
- :func:`interest_readout`: the target-aware readout of K interests (MIND's label-aware attention
  Eq. 10 with power p; ComiRec's hard argmax, Eq. 8).
- :func:`masked_softmax` over a chosen dimension.

Shapes: B rows, L behaviour columns, K interests, D vector size.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

POSITION_ORIGINS = ("recent", "start")
READOUTS = ("argmax", "attention")


def check_choice(model: str, key: str, value, allowed) -> None:
    """ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{model}: {key} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def masked_softmax(s: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``s`` over ``dim`` where ``mask`` is True; 0 elsewhere and on rows without a valid
    entry (an empty history gives zero weights, not NaN)."""
    s = s.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, dim=dim), nan=0.0)


def squash(z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """squash(z) = ||z||^2 / (1 + ||z||^2) * z / ||z|| over the last dimension (MIND Eq. 7,
    ComiRec Eq. 3); ``eps`` inside the square root keeps the zero vector at zero with a finite
    gradient (as the ComiRec authors' code)."""
    n2 = z.pow(2).sum(dim=-1, keepdim=True)
    return z * (n2 / (1.0 + n2) / torch.sqrt(n2 + eps))


def sequence_end(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1]: one past the last valid column of each row (0 for an empty row)."""
    L = mask.shape[1]
    idx = torch.arange(1, L + 1, device=mask.device)
    return (mask.long() * idx).amax(dim=1, keepdim=True) if L else mask.new_zeros(mask.shape[0], 1).long()


def positions(mask: torch.Tensor, origin: str, max_len: int) -> torch.Tensor:
    """Position id [B, L] of every column: ``recent`` = steps back from the row's last valid
    behaviour (0 = most recent), ``start`` = column index; clamped to [0, max_len - 1] (padding
    columns get some id in range, their values are masked by the caller)."""
    B, L = mask.shape
    col = torch.arange(L, device=mask.device).expand(B, L)
    p = sequence_end(mask) - 1 - col if origin == "recent" else col
    return p.clamp(0, max(max_len - 1, 0))


def align(x: torch.Tensor, mask: torch.Tensor, origin: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder ``x`` [B, L, ...] so that column p holds position p (see :func:`positions`):
    ``recent`` reverses each row's valid prefix (most recent first), ``start`` keeps the order.
    Returns (x [B, P, ...], mask [B, P]) with P = min(L, max_len) columns; positions >= max_len
    can hold padding only. Used where a weight is indexed by position (ComiRec-DR's per-position
    maps, MIND's fixed initial routing logits, ComiRec-SA's position embedding); routing and
    attention pooling are order-free otherwise."""
    B, L = mask.shape
    P = min(L, max_len)
    if origin == "start":
        return x[:, :P], mask[:, :P]
    col = torch.arange(P, device=mask.device).expand(B, P)
    src = sequence_end(mask) - 1 - col  # [B, P]
    ok = src >= 0
    src = src.clamp_min(0)
    m = mask.gather(1, src) & ok
    idx = src.view(B, P, *([1] * (x.dim() - 2))).expand(B, P, *x.shape[2:])
    return x.gather(1, idx), m


def dynamic_routing(u_hat: torch.Tensor, mask: torch.Tensor, b0: torch.Tensor, iterations: int,
                    stop_gradient: bool = True, capsule_mask: torch.Tensor | None = None,
                    return_weights: bool = False):
    """Behaviour-to-interest dynamic routing.

    ``u_hat`` [B, K, L, D]: the prediction vectors ê_{j|i} (behaviour i's vector mapped for interest
    j: MIND's shared S e_i, ComiRec-DR's W_ij e_i); ``mask`` [B, L] valid behaviours; ``b0``
    [B, K, L] initial routing logits; ``capsule_mask`` [B, K] interests in use (MIND's K'_u).

    Per iteration: w_ij = softmax_j(b_ij) (over the interests, MIND Eq. 5 / ComiRec Eq. 4), then
    0 on padded behaviours; z_j = sum_i w_ij ê_{j|i} (Eq. 6 / 2); v_j = squash(z_j) (Eq. 7 / 3);
    between iterations b_ij += <ê_{j|i}, v_j> (Eq. 8 / Algorithm 1). ``stop_gradient`` (both
    authors' codes): every iteration but the last sees ê without gradient, so the routing logits
    and weights are constants to the optimiser and only the last iteration's ê carries gradient.
    Returns v [B, K, D] (and the last weights w [B, K, L] with ``return_weights``).
    """
    if iterations < 1:
        raise ConfigError(f"routing_iterations must be >= 1, got {iterations}")
    valid = mask.unsqueeze(1).to(u_hat.dtype)  # [B, 1, L]
    cap = None if capsule_mask is None else capsule_mask.unsqueeze(-1).expand_as(b0)
    b = b0
    u_iter = u_hat.detach() if stop_gradient else u_hat
    for it in range(iterations):
        last = it == iterations - 1
        w = torch.softmax(b, dim=1) if cap is None else masked_softmax(b, cap, dim=1)
        w = w * valid
        u = u_hat if last else u_iter
        v = squash(torch.einsum("bkl,bkld->bkd", w, u))
        if not last:
            b = b + torch.einsum("bkld,bkd->bkl", u, v)
    return (v, w) if return_weights else v


def interest_readout(V: torch.Tensor, q: torch.Tensor, mode: str, p: float = 1.0,
                     capsule_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The candidate's view of the K interests V [B, K, D] (q [B, D] the candidate's vector).

    ``attention``: sum_k softmax_k(pow(V_k . q, p)) V_k (MIND Eq. 10, label-aware attention; pow is
    applied sign-preserving, sign(s) |s|^p, so that a fractional or even p keeps the order of
    negative scores; p = 1 is the plain softmax, p -> inf tends to ``argmax``).
    ``argmax``: V_k with k = argmax_k V_k . q (ComiRec Eq. 8, its training readout); the choice
    itself carries no gradient, the chosen interest does.
    Interests outside ``capsule_mask`` [B, K] are never chosen."""
    s = torch.einsum("bkd,bd->bk", V, q)
    if capsule_mask is not None:
        s = s.masked_fill(~capsule_mask, float("-inf"))
    if mode == "argmax":
        k = s.argmax(dim=1)
        return V[torch.arange(V.shape[0], device=V.device), k]
    if p != 1.0:
        s = torch.sign(s) * s.abs().pow(p)
    w = torch.nan_to_num(torch.softmax(s, dim=1), nan=0.0)
    return torch.einsum("bk,bkd->bd", w, V)


def target_groups(spec, model: str) -> list[tuple[list, list, list]]:
    """The behaviour groups of ``spec`` as DIN reads them: per group (members with a ``target``,
    their target fields, members without one). The interest extractors run on the concatenation of
    the first list (e.g. ``hist_item_id`` ‖ ``hist_cat``), compared with the concatenation of the
    second (``item_id`` ‖ ``cat``); the third is mean-pooled into the tower as extra fields."""
    groups = []
    for members in spec.behavior_groups():
        att = [m for m in members if m.target is not None]
        rest = [m for m in members if m.target is None]
        if att:
            groups.append((att, [spec.schema[m.target] for m in att], rest))
    if not groups:
        raise ConfigError(f"{model} needs a behaviour sequence field with a target (e.g. hist_item_id -> item_id)")
    return groups


class CapsuleInterests(torch.nn.Module):
    """K interest capsules from a behaviour sequence by dynamic routing (MIND's B2I routing and
    ComiRec-DR), on sequences aligned by :func:`align` (position p = column p).

    ``bilinear="shared"``: ê_{j|i} = S e_i, one matrix for every behaviour and interest (MIND Eq. 8);
    ``"per_position"``: ê_{j|i} = W_{p(i), j} e_i, one matrix per position and interest (ComiRec
    Eq. 1; the authors' code's "bilinear type 2", positions up to ``max_len``). Both without bias,
    initialised N(0, std^2), std = 1/sqrt(D) unless ``bilinear_std`` is given (the ComiRec
    authors' code draws W from N(0, 1)).

    ``routing_init``: ``zeros`` (ComiRec-DR code), ``fixed`` (N(0, 1) logits per interest and
    position drawn once at construction and kept in a buffer: MIND's Gaussian initialisation made
    deterministic, so a prediction does not depend on the random state), ``sampled`` (fresh
    truncated N(0, 1) per row and forward in training, as both authors' codes for MIND; the fixed
    buffer at evaluation). With a shared S, zero logits would make every capsule identical.

    ``dynamic_k`` (MIND Eq. 9): row u uses K'_u = max(1, min(K, floor(log2 n_u))) capsules, n_u its
    number of valid behaviours; the others are masked in routing and readout. ``relu_layer``: one
    Linear + ReLU shared by the capsules after routing (MIND Fig. 2's H-layers, without the user
    profile, which reaches the tower directly; the ComiRec authors' MIND code has it too).
    """

    def __init__(self, dim: int, max_len: int, interests: int, bilinear: str, routing_init: str,
                 iterations: int, stop_gradient: bool, origin: str, bilinear_std: float | None = None,
                 dynamic_k: bool = False, relu_layer: bool = False):
        super().__init__()
        K, D = interests, dim
        self.K, self.max_len, self.origin = K, max_len, origin
        self.bilinear, self.routing_init = bilinear, routing_init
        self.iterations, self.stop_gradient = iterations, stop_gradient
        self.dynamic_k = dynamic_k
        std = bilinear_std if bilinear_std is not None else D ** -0.5
        if bilinear == "shared":
            self.S = torch.nn.Parameter(torch.randn(D, D) * std)  # [out, in]
        else:
            self.W = torch.nn.Parameter(torch.randn(max_len, K, D, D) * std)  # [position, interest, out, in]
        self.register_buffer("b_init", torch.randn(K, max_len))
        self.proj = torch.nn.Linear(D, D) if relu_layer else None

    def capsule_mask(self, mask: torch.Tensor) -> torch.Tensor | None:
        """[B, K] interests in use (MIND Eq. 9), or None when all K are."""
        if not self.dynamic_k:
            return None
        n = mask.sum(dim=1, keepdim=True).clamp_min(1).to(torch.float32)
        k = torch.floor(torch.log2(n)).clamp(1, self.K)
        return torch.arange(self.K, device=mask.device) < k

    def initial_logits(self, B: int, P: int, ref: torch.Tensor) -> torch.Tensor:
        if self.routing_init == "zeros":
            return ref.new_zeros(B, self.K, P)
        if self.routing_init == "sampled" and self.training:
            b = torch.empty(B, self.K, P, dtype=ref.dtype, device=ref.device)
            return torch.nn.init.trunc_normal_(b, std=1.0, a=-2.0, b=2.0)
        return self.b_init[:, :P].to(ref.dtype).unsqueeze(0).expand(B, -1, -1)

    def forward(self, e: torch.Tensor, mask: torch.Tensor, return_weights: bool = False):
        """e [B, L, D], mask [B, L] -> (interests V [B, K, D], capsule mask [B, K] or None)."""
        e, m = align(e, mask, self.origin, self.max_len)
        B, P, D = e.shape
        if self.bilinear == "shared":
            u_hat = (e @ self.S.t()).unsqueeze(1).expand(B, self.K, P, D)
        else:
            u_hat = torch.einsum("pkoi,bpi->bkpo", self.W[:P], e)
        cap = self.capsule_mask(m)
        out = dynamic_routing(u_hat, m, self.initial_logits(B, P, e), self.iterations, self.stop_gradient,
                              cap, return_weights)
        V = out[0] if return_weights else out
        if self.proj is not None:
            V = torch.relu(self.proj(V))
        return (V, cap, out[1]) if return_weights else (V, cap)
