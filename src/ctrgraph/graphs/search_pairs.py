"""EGIN's light-weight graph sampling (Peng et al., §3.2, Algorithms 1-2): the edges of each
instance's own query-item graph, built inside the training step from the padded batch, with no
stored graph.

Every function takes padded ``[B, L]`` sequences (valid positions first, ``mask`` True there) and
returns a :class:`PairSet`: for each edge the instance ``b`` and the positions ``src`` / ``dst`` in
the two sequences. Each is a few masks and ``nonzero`` calls (i2i: one [B, L] mask per window
offset; q2q and q2i: one [B, M, M'] mask): no Python loop over instances, positions or edges.

- :func:`window_pairs` (i2i, Algorithm 1 lines 2-6): every pair of clicks at most ``w`` positions
  apart, both directions, never a position with itself (``C[j-w : j+w]`` holds c_j; research notes
  §3.2 #4).
- :func:`query_sessions` / :func:`session_pairs` (q2q, §3.1): the query sequence is cut into
  sessions where the time gap to the previous query exceeds ``max_gap`` or where two consecutive
  queries are not similar (their category sets do not intersect, or a similarity below
  ``min_similarity`` when one is given); every two queries of a session are connected.
- :func:`span_pairs` (q2i, Algorithm 2): a query and a click with ``0 < t_click - t_query < T``
  (``direction="after"``, the pseudo-code) or ``0 < |t_click - t_query| < T`` (``"both"``, §3.1's
  "before or after") whose categories intersect; each pair is one (query, item) edge, and the loss
  uses it in both directions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PairSet:
    """Edges of one relation in a batch: instance ``b`` [P], positions ``src`` [P] and ``dst`` [P]."""

    b: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor

    def __len__(self) -> int:
        return int(self.b.numel())

    def sample(self, n: int | None) -> PairSet:
        """At most ``n`` of the edges, uniformly without replacement (all when ``n`` is None or enough)."""
        if n is None or len(self) <= n:
            return self
        keep = torch.randperm(len(self), device=self.b.device)[:n].sort().values
        return PairSet(self.b[keep], self.src[keep], self.dst[keep])

    def ids(self, src_ids: torch.Tensor, dst_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The entity ids at the two ends, from the padded id sequences [B, L] and [B, L']."""
        return src_ids[self.b, self.src], dst_ids[self.b, self.dst]


def _pairs(m: torch.Tensor) -> PairSet:
    b, i, j = m.nonzero(as_tuple=True)
    return PairSet(b, i, j)


def _check(name: str, *xs: torch.Tensor) -> None:
    shapes = {tuple(x.shape[:2]) for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"{name}: the sequences do not share one [B, L] shape: {[tuple(x.shape) for x in xs]}")


def window_pairs(mask: torch.Tensor, w: int) -> PairSet:
    """i2i edges: valid positions i != j with |i - j| <= ``w`` (mask [B, L]); one [B, L] mask per
    offset (no [B, L, L] tensor), grouped by offset."""
    if w < 1:
        raise ValueError(f"window_pairs: the window must be >= 1, got {w}")
    B, L = mask.shape
    bs, srcs, dsts = [], [], []
    for o in [o for o in range(-w, w + 1) if o != 0 and abs(o) < L]:  # 2w offsets
        lo, hi = max(0, -o), L - max(0, o)  # src positions whose dst = src + o is in range
        b, i = (mask[:, lo:hi] & mask[:, lo + o:hi + o]).nonzero(as_tuple=True)
        bs.append(b)
        srcs.append(i + lo)
        dsts.append(i + lo + o)
    if not bs:
        e = torch.zeros(0, dtype=torch.long, device=mask.device)
        return PairSet(e, e, e)
    return PairSet(torch.cat(bs), torch.cat(srcs), torch.cat(dsts))


def _intersect(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether the category sets at a [B, M(, Ca)] and b [B, L(, Cb)] intersect -> [B, M, L]; id 0
    is padding (no category)."""
    if a.dim() == 2 and b.dim() == 2:  # one category each: equality
        return (a.unsqueeze(2) == b.unsqueeze(1)) & (a > 0).unsqueeze(2)
    a = a if a.dim() == 3 else a.unsqueeze(-1)
    b = b if b.dim() == 3 else b.unsqueeze(-1)
    eq = (a[:, :, None, :, None] == b[:, None, :, None, :]) & (a[:, :, None, :, None] > 0)
    return eq.flatten(3).any(-1)


def query_sessions(ts: torch.Tensor, mask: torch.Tensor, max_gap: float, cats: torch.Tensor | None = None,
                   similarity: torch.Tensor | None = None, min_similarity: float = 0.0) -> torch.Tensor:
    """Session index of every query [B, M] (-1 on padding): a new session starts at the first query,
    after a gap ``ts[m] - ts[m-1] > max_gap``, where consecutive queries' category sets (``cats``
    [B, M] or [B, M, C]) do not intersect, or where ``similarity`` [B, M] (of query m to query m-1;
    e.g. token overlap) is below ``min_similarity``."""
    _check("query_sessions", ts, mask, *([cats] if cats is not None else []))
    B, M = mask.shape
    new = torch.ones(B, M, dtype=torch.bool, device=mask.device)
    if M > 1:
        cut = (ts[:, 1:] - ts[:, :-1]) > max_gap
        if cats is not None:
            prev, cur = cats[:, :-1], cats[:, 1:]
            cut |= ~torch.diagonal(_intersect(cur, prev), dim1=1, dim2=2)
        if similarity is not None:
            cut |= similarity[:, 1:] < min_similarity
        new[:, 1:] = cut
    session = torch.cumsum(new & mask, dim=1) - 1
    return torch.where(mask, session, torch.full_like(session, -1))


def session_pairs(session: torch.Tensor, mask: torch.Tensor) -> PairSet:
    """q2q edges: two different valid queries of one session (``session`` from :func:`query_sessions`)."""
    _check("session_pairs", session, mask)
    pos = torch.arange(mask.shape[1], device=mask.device)
    same = (session.unsqueeze(2) == session.unsqueeze(1)) & (pos.unsqueeze(1) != pos)
    return _pairs(same & mask.unsqueeze(2) & mask.unsqueeze(1))


def span_pairs(q_ts: torch.Tensor, q_mask: torch.Tensor, q_cats: torch.Tensor, i_ts: torch.Tensor,
               i_mask: torch.Tensor, i_cats: torch.Tensor, span: float, direction: str = "after") -> PairSet:
    """q2i edges (src = query position, dst = click position): ``0 < t_i - t_q < span`` (``after``) or
    ``0 < |t_i - t_q| < span`` (``both``), and the categories intersect."""
    _check("span_pairs (queries)", q_ts, q_mask, q_cats)
    _check("span_pairs (clicks)", i_ts, i_mask, i_cats)
    if direction not in ("after", "both"):
        raise ValueError(f"span_pairs: direction must be 'after' or 'both', got {direction!r}")
    dt = i_ts.unsqueeze(1).to(torch.float64) - q_ts.unsqueeze(2).to(torch.float64)  # [B, M, L]
    if direction == "both":
        dt = dt.abs()
    near = (dt > 0) & (dt < span)
    return _pairs(near & _intersect(q_cats, i_cats) & q_mask.unsqueeze(2) & i_mask.unsqueeze(1))
