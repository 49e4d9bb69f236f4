"""EGIN's light-weight graph sampling (Peng et al., §3.2, Algorithms 1-2): the edges of each
instance's own query-item graph, built inside the training step from the padded batch, with no
stored graph.

Every function takes padded ``[B, L]`` sequences (valid positions first, ``mask`` True there) and
returns a :class:`PairSet`: for each edge the instance ``b`` and the positions ``src`` / ``dst`` in
the two sequences. Each is a few masks and ``nonzero`` calls (i2i: one [B, L] mask per window
offset; q2q and q2i: one [B, M, M'] mask): no Python loop over instances, positions or edges. On
the CPU, where the native kernel is built (:func:`ctrgraph.graphs.native.search_graph_kernel`;
``CTRGRAPH_NATIVE=0`` turns it off), one C++ pass per relation enumerates the same edges in the same
order (tested), and :meth:`PairSet.ids` reads both ends in one pass.

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

import math
from dataclasses import dataclass

import torch

from .native import search_graph_kernel


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
        """The entity ids at the two ends, from the padded id sequences [B, L] and [B, L'] (flat
        ``index_select``: ``src_ids[b, src]`` without advanced indexing's overhead; int64 CPU ids: one
        pass of the native kernel)."""
        if src_ids.dtype == dst_ids.dtype == torch.long and src_ids.device.type == "cpu" and src_ids.dim() == 2:
            ext = search_graph_kernel()
            if ext is not None:
                a, b = ext.pair_ids(self.b, self.src, self.dst, src_ids, dst_ids)
                return a, b
        return (src_ids.reshape(-1).index_select(0, self.b * src_ids.shape[1] + self.src),
                dst_ids.reshape(-1).index_select(0, self.b * dst_ids.shape[1] + self.dst))


def _pairs(m: torch.Tensor) -> PairSet:
    b, i, j = m.nonzero(as_tuple=True)
    return PairSet(b, i, j)


def _check(name: str, *xs: torch.Tensor) -> None:
    shapes = {tuple(x.shape[:2]) for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"{name}: the sequences do not share one [B, L] shape: {[tuple(x.shape) for x in xs]}")


def window_pairs(mask: torch.Tensor, w: int, both: bool = True) -> PairSet:
    """i2i edges: valid positions i != j with |i - j| <= ``w`` (mask [B, L]); one [B, L] mask per
    offset (no [B, L, L] tensor), grouped by offset. ``both=False``: each undirected edge once
    (i < j), for losses that take both directions of a pair in one pass."""
    if w < 1:
        raise ValueError(f"window_pairs: the window must be >= 1, got {w}")
    ext = search_graph_kernel() if mask.device.type == "cpu" else None
    if ext is not None:  # the same edges in the same order, one pass (csrc/search_graph.cpp)
        return PairSet(*ext.window_pairs(mask, w, both))
    B, L = mask.shape
    bs, srcs, dsts = [], [], []
    for o in [o for o in range(-w if both else 1, w + 1) if o != 0 and abs(o) < L]:  # 2w (w) offsets
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
    e.g. token overlap) is below ``min_similarity``; and at a row's first valid query (position 0
    with valid positions first)."""
    _check("query_sessions", ts, mask, *([cats] if cats is not None else []))
    B, M = mask.shape
    new = torch.ones(B, M, dtype=torch.bool, device=mask.device)
    if M > 1:
        cut = (ts[:, 1:] - ts[:, :-1]) > max_gap
        if cats is not None and cats.dim() == 2:  # one category each: consecutive ones differ or are 0
            cut |= (cats[:, 1:] != cats[:, :-1]) | (cats[:, 1:] <= 0)
        elif cats is not None:
            prev, cur = cats[:, :-1], cats[:, 1:]
            cut |= ~torch.diagonal(_intersect(cur, prev), dim1=1, dim2=2)
        if similarity is not None:
            cut |= similarity[:, 1:] < min_similarity
        new[:, 1:] = cut
    new |= mask & (torch.cumsum(mask, dim=1) == 1)  # a row's first valid query (also after a padding hole)
    session = torch.cumsum(new & mask, dim=1) - 1
    return torch.where(mask, session, torch.full_like(session, -1))


def session_pairs(session: torch.Tensor, mask: torch.Tensor, both: bool = True) -> PairSet:
    """q2q edges: two different valid queries of one session (``session`` from :func:`query_sessions`);
    ``both=False``: each undirected edge once (i < j). Ordered by instance, query, then partner."""
    _check("session_pairs", session, mask)
    M = mask.shape[1]
    b, i = mask.nonzero(as_tuple=True)  # valid queries [Q], row-major
    runs = _session_runs(b, session[b, i], M)
    if runs is not None:
        return _pairs_in_runs(b, i, *runs, both)
    pos = torch.arange(M, device=mask.device)  # any session ids: each valid query against its row, [Q, M]
    s = torch.where(mask, session, -1 - pos)  # padding: a distinct negative value, equal only to itself
    keep = pos.unsqueeze(1) != pos if both else pos.unsqueeze(1) < pos  # [M, M]
    q, j = ((s.index_select(0, b) == session[b, i].unsqueeze(1)) & keep.index_select(0, i)).nonzero(as_tuple=True)
    return PairSet(b.index_select(0, q), i.index_select(0, q), j)


def query_session_pairs(ts: torch.Tensor, mask: torch.Tensor, max_gap: float, cats: torch.Tensor | None = None,
                        similarity: torch.Tensor | None = None, min_similarity: float = 0.0,
                        both: bool = True) -> PairSet:
    """q2q edges: ``session_pairs(query_sessions(ts, mask, max_gap, cats, similarity, min_similarity),
    mask, both)``, on the CPU for integer timestamps, one category per query (or none) and a float32
    (or no) similarity in one pass of the native kernel (the same edges in the same order, tested)."""
    ext = search_graph_kernel() if mask.device.type == "cpu" and mask.numel() else None
    if (ext is not None and not ts.is_floating_point() and (cats is None or (cats.dim() == 2 and not cats.is_floating_point()))
            and (similarity is None or similarity.dtype == torch.float32)):
        _check("query_sessions", ts, mask, *([cats] if cats is not None else []))
        c = torch.ones_like(mask, dtype=torch.int32) if cats is None else cats  # None: no category cut
        sim = similarity if similarity is not None else torch.zeros(0)
        return PairSet(*ext.session_pairs(ts, mask, c, sim, float(max_gap), float(min_similarity), both))
    return session_pairs(query_sessions(ts, mask, max_gap, cats=cats, similarity=similarity,
                                        min_similarity=min_similarity), mask, both)


def _session_runs(b: torch.Tensor, sess: torch.Tensor, M: int):
    """Where the valid queries' sessions are non-decreasing along each row (as :func:`query_sessions`
    numbers them), each session is a run of consecutive valid queries: (start [Q], length [Q]) of
    every query's run; else None."""
    if b.numel() == 0:
        return None
    key = b * (M + 1) + sess  # sessions < M: the rows' keys never overlap
    if bool((sess < 0).any() | (sess >= M).any() | (key[1:] < key[:-1]).any()):
        return None
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    starts = first.nonzero().squeeze(1)  # [S]
    lengths = torch.diff(starts, append=starts.new_tensor([key.numel()]))
    run = torch.cumsum(first, 0) - 1  # each query's run [Q]
    return starts.index_select(0, run), lengths.index_select(0, run)


def _pairs_in_runs(b, i, start, length, both: bool) -> PairSet:
    """Every pair of two queries of one run, query k against the later members (and, with ``both``,
    the earlier ones first), in O(Q + edges)."""
    k = torch.arange(b.numel(), device=b.device)
    offset = k - start  # rank within the run
    count = length - 1 if both else length - 1 - offset
    q = torch.repeat_interleave(k, count)  # [P]
    rank = torch.arange(q.numel(), device=b.device) - (torch.cumsum(count, 0) - count).index_select(0, q)
    if both:  # partners: the run's members except the query itself, in position order
        partner = start.index_select(0, q) + rank + (rank >= offset.index_select(0, q)).long()
    else:
        partner = q + 1 + rank
    return PairSet(b.index_select(0, q), i.index_select(0, q), i.index_select(0, partner))


def span_pairs(q_ts: torch.Tensor, q_mask: torch.Tensor, q_cats: torch.Tensor, i_ts: torch.Tensor,
               i_mask: torch.Tensor, i_cats: torch.Tensor, span: float, direction: str = "after") -> PairSet:
    """q2i edges (src = query position, dst = click position): ``0 < t_i - t_q < span`` (``after``) or
    ``0 < |t_i - t_q| < span`` (``both``), and the categories intersect."""
    _check("span_pairs (queries)", q_ts, q_mask, q_cats)
    _check("span_pairs (clicks)", i_ts, i_mask, i_cats)
    if direction not in ("after", "both"):
        raise ValueError(f"span_pairs: direction must be 'after' or 'both', got {direction!r}")
    if q_cats.dim() == 2 and i_cats.dim() == 2:
        fast = _span_pairs_native(q_ts, q_mask, q_cats, i_ts, i_mask, i_cats, span, direction)
        if fast is not None:
            return fast
        fast = _span_pairs_keyed(q_ts, q_mask, q_cats, i_ts, i_mask, i_cats, span, direction)
        if fast is not None:
            return fast
    dt = i_ts.unsqueeze(1).to(torch.float64) - q_ts.unsqueeze(2).to(torch.float64)  # [B, M, L]
    if direction == "both":
        dt = dt.abs()
    near = (dt > 0) & (dt < span)
    return _pairs(near & _intersect(q_cats, i_cats) & q_mask.unsqueeze(2) & i_mask.unsqueeze(1))


def _span_pairs_native(q_ts, q_mask, q_cats, i_ts, i_mask, i_cats, span, direction) -> PairSet | None:
    """:func:`span_pairs` by the C++ enumeration (``csrc/search_graph.cpp``: per instance the clicks
    sorted by (category, time), each query's clicks two binary searches away), for integer timestamps
    and one category per position on the CPU: the pairs and the order of :func:`_span_pairs_keyed`
    (tested). None where it does not apply or the kernel is not built."""
    if (q_ts.is_floating_point() or i_ts.is_floating_point() or not math.isfinite(span) or q_ts.device.type != "cpu"
            or q_ts.numel() == 0 or i_ts.numel() == 0):
        return None
    ext = search_graph_kernel()
    if ext is None:
        return None
    b, q, i = ext.span_pairs(q_ts, q_mask, q_cats, i_ts, i_mask, i_cats, int(math.ceil(span)), direction == "both")
    return PairSet(b, q, i)


def _span_pairs_keyed(q_ts, q_mask, q_cats, i_ts, i_mask, i_cats, span, direction) -> PairSet | None:
    """:func:`span_pairs` for integer timestamps and one category per position, without a [B, M, L]
    mask: each row's click keys sorted, each query's matching clicks an interval of keys found by
    ``searchsorted``, the edges enumerated from the intervals (O(B L log L + edges)).

    Each position's key = category * G + (t - t_min), with G larger than every time difference plus
    the span, so that two keys differ by less than the span only within one category, and then by
    exactly their time difference; padded queries, queries of category 0 and padded clicks get keys
    far below every valid one (never within the span of anything). The same pairs as the general
    path (tested), ordered by instance, query, then click time (not click position); None where the
    keys could overflow int64 or the timestamps are not integers: the caller takes the general path."""
    if (q_ts.is_floating_point() or i_ts.is_floating_point() or q_ts.numel() == 0 or i_ts.numel() == 0
            or not math.isfinite(span)):
        return None
    lo = int(torch.minimum(q_ts.min(), i_ts.min()))
    hi = int(torch.maximum(q_ts.max(), i_ts.max()))
    t = int(math.ceil(span))  # integer differences: dt < span <=> dt < ceil(span)
    g = hi - lo + t + 1
    c = int(torch.maximum(q_cats.max(), i_cats.max()).clamp_min(0)) + 1
    far = 4 * g * c  # padded queries at -far, padded clicks at -far/2: |key difference| >= g * c > span
    if far >= 2**61:
        return None
    kq = torch.where(q_mask & (q_cats > 0), q_cats.long() * g + (q_ts - lo), torch.full_like(q_ts, -far, dtype=torch.long))
    ki = torch.where(i_mask, i_cats.long().clamp_min(0) * g + (i_ts - lo), torch.full_like(i_ts, -far // 2, dtype=torch.long))
    srt, order = torch.sort(ki, dim=1, stable=True)  # each row's click keys, ascending [B, L]
    ranges = [(kq, kq + t)] if direction == "after" else [(kq - t, kq), (kq, kq + t)]  # open intervals of keys
    bounds = [(torch.searchsorted(srt, x, right=True), torch.searchsorted(srt, y)) for x, y in ranges]
    counts = [(end - begin).clamp_min(0).reshape(-1) for begin, end in bounds]  # clicks per query, interval [B M]
    per_query = counts[0] if len(counts) == 1 else counts[0] + counts[1]
    B, M = kq.shape
    q = torch.repeat_interleave(torch.arange(B * M, device=kq.device), per_query)  # flat query of every edge [P]
    start = torch.cumsum(per_query, 0) - per_query
    k = torch.arange(q.numel(), device=kq.device) - start.index_select(0, q)  # rank of the edge within its query
    pos = bounds[0][0].reshape(-1).index_select(0, q) + k  # position in the sorted row
    if len(bounds) == 2:  # past the first interval's clicks: the second interval
        c0 = counts[0].index_select(0, q)
        pos = torch.where(k < c0, pos, bounds[1][0].reshape(-1).index_select(0, q) + k - c0)
    b = torch.div(q, M, rounding_mode="floor")
    L = ki.shape[1]
    return PairSet(b, q - b * M, order.reshape(-1).index_select(0, b * L + pos))
