"""``synthetic_search``: a search log with planted, documented structure (EGIN's query mode).

Everything is drawn from ``numpy.random.default_rng`` streams: the world from ``[seed, 0]``, the
log from ``[seed, 1]``. Times are integer seconds from 0. Notation: ``C`` = n_categories, ``G`` =
clusters_per_category (fine intents inside a category), ``K`` = n_interests.

World
-----
* Items: every category gets at least one item, the rest uniform over categories; inside its
  category an item belongs to one of ``G`` clusters (uniform). Inside a category of ``n_c`` items a
  random order gives ranks ``r`` and ``P(item | c) = r**-popularity_exponent / H_c``;
  ``item_pop = log(n_c P(item | c))``. Draws "from a cluster" are uniform over the cluster's items.
* Queries: ``queries_per_cluster`` per cluster, so every query has one intent (cluster) and its
  category; within a cluster queries are Zipf(1)-popular (head and tail queries).
* Users: ``K`` distinct interest categories with Dirichlet(1) weights.

Search log (per user)
---------------------
``n_s ~ U{min_sessions..max_sessions}`` sessions; session start times are cumulative gaps
``min_session_gap + Exp(mean_session_gap)``. A session's intent category is drawn from the user's
interest weights (a uniform category with probability ``explore``) and its cluster uniformly inside
it. It holds ``U{1..max_queries}`` queries of that cluster, ``U{query_gap}`` seconds apart; after
each query ``U{0..max_clicks}`` clicks ``U{click_delay}`` seconds later: an item of the query's
cluster with probability ``click_purity``, else of its category with probability
``click_category``, else a uniform item. Clicks and queries form the user's histories.

Impressions
-----------
Every query event (user u, time t, query q) shows ``candidates`` items: from q's cluster with
probability ``p_cluster``, else from q's category with probability ``p_category``, else uniform.
The instance's histories are u's clicks and queries strictly before t (``hist_item_id``,
``hist_category``, ``hist_ts``; ``hist_query_id``, ``hist_query_category``, ``hist_query_ts``; the
most recent ``max_len`` / ``max_query_len``, most recent last). Label (exact)::

    logit = bias + w_cluster [cluster(i) = cluster(q)] + w_category [cat(i) = cat(q)]
            + w_history * share of cluster(i) among the last ``history_window`` clicks
            + w_habit * [cat(q) is one of u's interests] + pop_weight * item_pop[i]
    label ~ Bernoulli(sigmoid(logit))

``true_prob`` (raw, not embedded) is kept for evaluation. Split: global time quantiles
(``test`` last, ``valid`` before it). The query's own category is the ``query_category`` field, in
the item categories' vocabulary (Algorithm 2's CAT(q)).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PField

from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ..split import time_quantile_split
from .base import Recipe
from .search_log import search_fields
from .synthetic import CHUNK, _gather_rows, _offsets, _zipf_cdf


class SearchParams(BaseModel):
    """Generator parameters (see the module docstring for the model they parameterise)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    n_users: int = PField(1500, ge=1)
    n_items: int = PField(4000, ge=1)
    n_categories: int = PField(40, ge=2)
    clusters_per_category: int = PField(4, ge=1)
    queries_per_cluster: int = PField(6, ge=1)
    n_interests: int = PField(3, ge=1)
    popularity_exponent: float = PField(1.0, ge=0)
    min_sessions: int = PField(4, ge=1)
    max_sessions: int = PField(30, ge=1)
    mean_session_gap: float = PField(86_400.0, gt=0)
    min_session_gap: int = PField(7_200, ge=0)
    max_queries: int = PField(4, ge=1, description="queries per session: U{1..max_queries}")
    query_gap: tuple[int, int] = (30, 600)
    max_clicks: int = PField(3, ge=0, description="clicks per query: U{0..max_clicks}")
    click_delay: tuple[int, int] = (5, 900)
    click_purity: float = PField(0.8, ge=0, le=1)
    click_category: float = PField(0.5, ge=0, le=1)
    explore: float = PField(0.1, ge=0, le=1)
    candidates: int = PField(2, ge=1)
    p_cluster: float = PField(0.4, ge=0, le=1)
    p_category: float = PField(0.4, ge=0, le=1)
    bias: float = -2.3
    w_cluster: float = 1.5
    w_category: float = 0.5
    w_history: float = 1.5
    w_habit: float = 1.0
    pop_weight: float = 0.3
    history_window: int = PField(10, ge=1)
    max_len: int = PField(50, ge=1)
    max_query_len: int = PField(30, ge=1)
    valid: float = PField(0.1, ge=0, lt=1)
    test: float = PField(0.2, gt=0, lt=1)
    emit_true_prob: bool = True

    @model_validator(mode="after")
    def _check(self) -> SearchParams:
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories (every category has an item)")
        if self.n_interests > self.n_categories:
            raise ValueError("n_interests must be <= n_categories")
        if self.max_sessions < self.min_sessions:
            raise ValueError("max_sessions must be >= min_sessions")
        if self.query_gap[0] < 1 or self.query_gap[1] < self.query_gap[0]:
            raise ValueError("query_gap must be (lo, hi) with 1 <= lo <= hi")
        if self.click_delay[0] < 1 or self.click_delay[1] < self.click_delay[0]:
            raise ValueError("click_delay must be (lo, hi) with 1 <= lo <= hi")
        if self.valid + self.test >= 1:
            raise ValueError("valid + test must be < 1")
        return self


def _pick(groups_sorted: np.ndarray, off: np.ndarray, g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A uniform member of group ``g`` (members ``groups_sorted[off[g]:off[g+1]]``), from uniforms ``u``."""
    n = off[g + 1] - off[g]
    return groups_sorted[off[g] + np.minimum((u * n).astype(np.int64), n - 1)]


def build(p: SearchParams, data_dir: Path | None = None) -> RawDataset:
    wr = np.random.default_rng([p.seed, 0])
    C, G, K, U = p.n_categories, p.clusters_per_category, p.n_interests, p.n_users
    # ----- world
    item_cat = wr.permutation(np.concatenate([np.arange(C), wr.integers(0, C, p.n_items - C)]))
    item_cl = item_cat * G + wr.integers(0, G, p.n_items)  # cluster id c * G + g
    n_c = np.bincount(item_cat, minlength=C)
    by_cat = np.lexsort((wr.permutation(p.n_items), item_cat))  # by category, a random order inside
    cat_off = _offsets(n_c)
    rank = np.empty(p.n_items, dtype=np.int64)
    rank[by_cat] = np.arange(p.n_items) - cat_off[item_cat[by_cat]]  # popularity rank inside the category
    w = (rank + 1.0) ** -p.popularity_exponent
    pcat = w / np.bincount(item_cat, weights=w, minlength=C)[item_cat]  # P(item | its category)
    item_pop = np.log(n_c[item_cat] * pcat)
    cum = np.cumsum(pcat[by_cat])
    before = np.concatenate([[0.0], cum])[cat_off[:-1]]  # mass of the earlier categories
    cdf_sorted = cum - np.repeat(before, n_c) + item_cat[by_cat]  # category c's cdf shifted into (c, c + 1]
    n_cl = C * G
    by_cl = np.argsort(item_cl, kind="stable")
    cl_off = _offsets(np.bincount(item_cl, minlength=n_cl))
    empty = np.flatnonzero(cl_off[1:] == cl_off[:-1])  # a cluster without items borrows its category's
    nq = n_cl * p.queries_per_cluster  # query id = cluster * queries_per_cluster + its rank
    qcdf = _zipf_cdf(p.queries_per_cluster, 1.0)
    interests = np.argsort(wr.random((U, C)), axis=1)[:, :K]
    weights = wr.dirichlet(np.ones(K), U)

    def from_category(c, u):
        return by_cat[np.minimum(np.searchsorted(cdf_sorted, c + u, side="right"), cat_off[c + 1] - 1)]

    def from_cluster(cl, u, v):
        out = _pick(by_cl, cl_off, cl, u)
        bad = np.isin(cl, empty)
        out[bad] = from_category(cl[bad] // G, v[bad])
        return out

    # ----- sessions
    rng = np.random.default_rng([p.seed, 1])
    n_s = rng.integers(p.min_sessions, p.max_sessions + 1, U)
    s_user = np.repeat(np.arange(U), n_s)
    gap = p.min_session_gap + rng.exponential(p.mean_session_gap, s_user.size)
    cs = np.cumsum(gap)
    s_off = _offsets(n_s)
    s_start = (cs - np.repeat(cs[s_off[:-1]] - gap[s_off[:-1]], n_s)).astype(np.int64)
    ki = (rng.random(s_user.size)[:, None] > np.cumsum(weights, 1)[s_user][:, :-1]).sum(1)
    s_cat = interests[s_user, ki]
    expl = rng.random(s_user.size) < p.explore
    s_cat[expl] = rng.integers(0, C, int(expl.sum()))
    s_cl = s_cat * G + rng.integers(0, G, s_user.size)
    # ----- queries (events sorted by user, time)
    n_q = rng.integers(1, p.max_queries + 1, s_user.size)
    q_sess = np.repeat(np.arange(s_user.size), n_q)
    step = rng.integers(p.query_gap[0], p.query_gap[1] + 1, q_sess.size)
    first = _offsets(n_q)[:-1]
    step[first] = 0
    cq = np.cumsum(step)
    q_t = s_start[q_sess] + cq - np.repeat(cq[first], n_q)
    q_user = s_user[q_sess]
    q_id = s_cl[q_sess] * p.queries_per_cluster + np.minimum(  # a Zipf-popular query of the cluster
        np.searchsorted(qcdf, rng.random(q_sess.size), side="right"), p.queries_per_cluster - 1)
    q_cat = s_cat[q_sess]
    # ----- clicks
    n_k = rng.integers(0, p.max_clicks + 1, q_sess.size)
    k_q = np.repeat(np.arange(q_sess.size), n_k)
    k_t = q_t[k_q] + rng.integers(p.click_delay[0], p.click_delay[1] + 1, k_q.size)
    r = rng.random(k_q.size)
    k_item = rng.integers(0, p.n_items, k_q.size)
    in_cl = r < p.click_purity
    in_cat = ~in_cl & (rng.random(k_q.size) < p.click_category)
    k_item[in_cl] = from_cluster(s_cl[q_sess[k_q[in_cl]]], rng.random(int(in_cl.sum())), rng.random(int(in_cl.sum())))
    k_item[in_cat] = from_category(q_cat[k_q[in_cat]], rng.random(int(in_cat.sum())))
    k_user = q_user[k_q]
    order = np.lexsort((k_t, k_user))
    k_user, k_t, k_item = k_user[order], k_t[order], k_item[order]
    span = int(max(q_t.max(initial=0), k_t.max(initial=0))) + 1
    k_key = k_user * span + k_t
    q_key = q_user * span + q_t  # queries are already sorted by (user, time)
    k_start = np.searchsorted(k_key, np.arange(U) * span)
    q_start = np.searchsorted(q_key, np.arange(U) * span)
    # ----- impressions: every query event shows `candidates` items
    ev = np.repeat(np.arange(q_sess.size), p.candidates)
    N = ev.size
    u_, t_, qi, qc = q_user[ev], q_t[ev], q_id[ev], q_cat[ev]
    qcl = s_cl[q_sess[ev]]
    r = rng.random(N)
    item = rng.integers(0, p.n_items, N)
    a = r < p.p_cluster
    b = ~a & (r < p.p_cluster + p.p_category)
    item[a] = from_cluster(qcl[a], rng.random(int(a.sum())), rng.random(int(a.sum())))
    item[b] = from_category(qc[b], rng.random(int(b.sum())))
    key = u_ * span + t_
    kpos = np.searchsorted(k_key, key, side="left")  # clicks strictly before t
    qpos = np.searchsorted(q_key, key, side="left")  # queries strictly before t
    k_len = np.minimum(kpos - k_start[u_], p.max_len).astype(np.int32)
    q_len = np.minimum(qpos - q_start[u_], p.max_query_len).astype(np.int32)
    # ----- labels
    W = p.history_window
    ar = np.arange(W)
    win = np.minimum(k_len, W)
    idx = np.clip((kpos - win)[:, None] + ar, 0, max(k_item.size - 1, 0))
    hit = (item_cl[k_item[idx]] == item_cl[item][:, None]) & (ar < win[:, None]) if k_item.size else np.zeros((N, W), bool)
    share = hit.sum(1) / np.maximum(win, 1)
    habit = (interests[u_] == qc[:, None]).any(1)
    logit = (p.bias + p.w_cluster * (item_cl[item] == qcl) + p.w_category * (item_cat[item] == qc)
             + p.w_history * share + p.w_habit * habit + p.pop_weight * item_pop[item])
    prob = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(N) < prob).astype(np.int8)
    split = time_quantile_split(t_, 1.0 - p.test, (1.0 - p.test - p.valid) if p.valid > 0 else None)
    o = np.argsort(split, kind="stable")  # rows ordered train | valid | test
    u_, t_, qi, qc, item, label, split, prob = (x[o] for x in (u_, t_, qi, qc, item, label, split, prob))
    kpos, qpos, k_len, q_len = kpos[o], qpos[o], k_len[o], q_len[o]
    L, M = p.max_len, p.max_query_len
    seq = {}
    for name, stream, start, ln, width in (
            ("hist_item_id", k_item, kpos - k_len, k_len, L), ("hist_category", item_cat[k_item], kpos - k_len, k_len, L),
            ("hist_ts", k_t, kpos - k_len, k_len, L), ("hist_query_id", q_id, qpos - q_len, q_len, M),
            ("hist_query_category", q_cat, qpos - q_len, q_len, M), ("hist_query_ts", q_t, qpos - q_len, q_len, M)):
        dst = np.empty((N, width), dtype=np.int32)  # times < 2**31 s
        for s0 in range(0, N, CHUNK):  # row chunks: no [N, L] int64 temporaries
            _gather_rows(dst, stream, start, ln, slice(s0, min(N, s0 + CHUNK)))
        seq[name] = dst
    cols = {"user_id": u_.astype(np.int32), "item_id": item.astype(np.int32),
            "category_id": item_cat[item].astype(np.int32), "query_id": qi.astype(np.int32),
            "query_category": qc.astype(np.int32), **seq, "timestamp": t_.astype(np.int32)}
    fields = search_fields(L, M)
    if p.emit_true_prob:
        cols["true_prob"] = prob.astype(np.float32)
        fields.append(Field("true_prob", Kind.NUMERIC, Role.CONTEXT, embed=False))
    cols["label"] = label
    fields.append(Field("label", Kind.NUMERIC, Role.LABEL))
    lengths = {n: (k_len if n.startswith("hist_item") or n in ("hist_category", "hist_ts") else q_len) for n in seq}
    schema = Schema(tuple(fields), label="label", description="synthetic search log (ctrgraph.data.recipes.synthetic_search)")
    meta = {"instances": N, "positives": int(label.sum()), "queries": int(q_sess.size), "clicks": int(k_q.size),
            "sessions": int(s_user.size), "n_queries": nq, "generator": "synthetic search log v1"}
    return RawDataset(schema, cols, lengths, split, meta=meta)


def sources(p, data_dir):
    return []


RECIPE = Recipe("synthetic_search", "synthetic search log (sessions of queries and clicks, planted query intents)",
                SearchParams, build, sources)
