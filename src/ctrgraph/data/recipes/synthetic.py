"""``synthetic``: a CTR generator with planted, documented structure (interest-delay behaviour model).

Everything is drawn from ``numpy.random.default_rng`` streams seeded by ``seed``; the world (items,
users) uses stream ``[seed, 0]`` and the instances stream ``[seed, 1]``, so :func:`world` rebuilds the
ground truth of a data set from its parameters alone. Notation: ``C`` = n_categories, ``K`` =
n_interests, ``T`` = period_len, ``L`` = max_len; times are integer seconds since ``TIME_ORIGIN``
(a midnight), all below 2**24 so that float32 (the encoded ``timestamp``) holds them exactly.

World
-----
* Items: every category gets at least one item, the rest are uniform over categories. Inside a
  category of ``n_c`` items, a random order gives each item a popularity rank ``r = 1..n_c`` and
  ``P(item | c) = r**-popularity_exponent / H_c`` (power law). ``item_pop = log(n_c * P(item | c))``
  (0 for a uniform category). Brand: brands ``b`` with ``b % C == c`` belong to category ``c``; an
  item's brand rank is truncated Zipf(``attr_zipf``) over its category's brands.
* Users: ``K`` distinct interest categories drawn uniformly, interest weights ``pi_u ~ Dirichlet(1)``;
  ``primary`` = the interest of largest weight. ``age`` (7 buckets) = ``age_of[primary]`` (a random
  bucket per category) with probability ``attr_corr``, else uniform. ``city = (z + shift[primary]) %
  n_cities`` with ``z`` ~ truncated Zipf(``attr_zipf``) over ``n_cities`` ranks and a random shift per
  category. ``user_bias = AGE_BIAS[age] + N(0, user_bias_std**2)`` with ``AGE_BIAS =
  linspace(-0.5, 0.5, 7)``. Activity ``w_u ~ LogNormal(0, 1)``, times ``short_activity`` for light
  users (below; default 1: impressions independent of the history length).
* Communities (``n_communities = G > 0``; off by default): from stream ``[seed, 2]``, community
  ``g`` draws ``K`` distinct interests and Dirichlet(1) weights, every user joins a uniform
  community, and each of its ``K`` (interest, weight) slots is the community's with probability
  ``community_purity``, else its own draw above; weights renormalised. ``primary`` (hence age and
  city) is taken after this step. This plants the behaviour-sparsity mechanism of DG-ENN §1/§4.3:
  a light user's interests are recoverable from the users that share its community.

Behaviour streams (interest-delay model, Res-embedding section 3.2)
-------------------------------------------------------------------
A fraction ``short_frac`` of users (light) have ``n_b ~ U{0..short_len}`` behaviours over the whole
180-day timeline, the others ``n_b ~ U{L..3L}``; behaviour times are sorted uniform draws (made
strictly increasing per user). The stream is cut into periods of ``T`` consecutive behaviours
(positions ``pT .. pT+T-1``); each period's latent interest ``z_p ~ Categorical(pi_u)`` over the
user's interests. A behaviour's category is ``z_p`` (with probability ``explore`` a uniform category
instead) and its item is drawn from ``P(item | category)``.

Instances
---------
``n_instances`` impressions are split over users by ``Multinomial(w_u / sum w)``; times are uniform
in the last 60 days. An instance at time ``t`` of user ``u`` sits at stream position ``k`` = number of
u's behaviours with ``ts < t``; its history is behaviours ``k - len .. k-1`` with ``len = min(k, L)``
(``hist_item_id``, ``hist_category``, ``hist_ts``; all strictly before ``t``, most recent last). The
current interest is ``z_t = z_{k // T}``. The candidate is, with probability ``p_interest_candidate``,
an item drawn from ``P(item | z_t)``, else a uniform random item; ``hour = (t // 3600) % 24``.
Impressions do not enter later histories (the stream is the user's click log).

Label (exact)
-------------
::

    m     = K * pi_u(c)                                      # 0 when c is not an interest of u
    s     = share of category c among the last min(len, T) history behaviours (0 when len = 0)
    logit = logit_scale * (m + short_weight * s) + pop_weight * item_pop[item] + user_bias[u]
            + hour_amplitude * cos(2 * pi * (hour - 21) / 24) + bias
    label ~ Bernoulli(sigmoid(logit))

with ``c`` the candidate's category. ``true_prob = sigmoid(logit)`` (float32) is kept as a raw,
non-embedded numeric field for evaluation (Bayes-optimal AUC); models must not read it.
:func:`true_logit` recomputes the logit of any :class:`RawDataset` built here.

Split: ``split="user"`` is :func:`~ctrgraph.data.split.per_user_chronological`, ``"time"`` is
:func:`~ctrgraph.data.split.time_quantile_split` at ``1 - test`` / ``1 - test - valid``. Rows are
ordered train | valid | test, each by (user, time), so ``encode`` reads them sequentially.
Memory: the raw ``[N, L]`` sequences are int32 items, int8/int16 categories and int32 times, filled
in row chunks from the behaviour streams (only users with instances get one: about
``(1 - short_frac) * 2L`` behaviours each, ~35 bytes per behaviour while generating).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field as PField, model_validator

from ...errors import ConfigError
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ..split import per_user_chronological, time_quantile_split
from .base import Recipe

DAY = 86_400
SPAN = 180 * DAY  # behaviour timeline [0, SPAN)
WINDOW_START = 120 * DAY  # instances in [WINDOW_START, SPAN)
TIME_ORIGIN = "2024-01-01T00:00:00Z"
N_AGE = 7
AGE_BIAS = np.linspace(-0.5, 0.5, N_AGE)
ACTIVITY_SIGMA = 1.0
PEAK_HOUR = 21
CHUNK = 1 << 17
_SHIFT = 25  # key = owner << 25 | time (times < 2**24)
_MASK = (1 << _SHIFT) - 1


class SyntheticParams(BaseModel):
    """Generator parameters (see the module docstring for the model they parameterise)."""

    model_config = ConfigDict(extra="forbid")
    n_instances: int = PField(100_000, ge=1_000, le=200_000_000)
    n_users: int = PField(5_000, ge=10)
    n_items: int = PField(20_000, ge=2)
    n_categories: int = PField(50, ge=2, le=32_000)
    n_interests: int = PField(3, ge=1, le=32, description="latent interests per user (K)")
    period_len: int = PField(5, ge=1, description="T: behaviours driven by one interest")
    max_len: int = PField(50, ge=1, le=4096, description="history length cap (L)")
    popularity_exponent: float = PField(1.0, ge=0.0, description="power law of item popularity in a category")
    n_cities: int = PField(2_000, ge=1)
    n_brands: int = PField(2_000, ge=2)
    attr_zipf: float = PField(1.0, ge=0.0, description="Zipf exponent of city and brand; lower = more rare values")
    attr_corr: float = PField(0.7, ge=0.0, le=1.0, description="P(age = the primary interest's age bucket)")
    short_frac: float = PField(0.3, ge=0.0, le=1.0, description="fraction of light users (short histories)")
    short_len: int = PField(5, ge=0, description="light users have at most this many behaviours")
    short_activity: float = PField(1.0, gt=0.0, description="light users' impression weight multiplier")
    n_communities: int = PField(0, ge=0, description="G: latent user communities (0 = independent users)")
    community_purity: float = PField(1.0, ge=0.0, le=1.0,
                                     description="P(an interest slot is inherited from the user's community)")
    explore: float = PField(0.1, ge=0.0, le=1.0, description="P(behaviour ignores the period's interest)")
    p_interest_candidate: float = PField(0.5, ge=0.0, le=1.0)
    logit_scale: float = PField(1.0, ge=0.0, description="a: weight of the affinity (label noise is lower when larger)")
    short_weight: float = PField(1.0, ge=0.0, description="weight of the recent-history share s")
    pop_weight: float = PField(0.3)
    user_bias_std: float = PField(0.5, ge=0.0)
    hour_amplitude: float = PField(0.3)
    bias: float = PField(-2.5, description="intercept c")
    split: Literal["user", "time"] = "user"
    valid: float = PField(0.1, ge=0.0, lt=1.0)
    test: float = PField(0.1, gt=0.0, lt=1.0)
    emit_true_prob: bool = PField(True, description="keep the raw true_prob column (evaluation only)")
    chunk_rows: int = PField(0, ge=0, description="> 0: generate and encode out of core, in parts of about this "
                                                  "many instances (another draw than 0, which builds in memory)")
    seed: int = PField(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "SyntheticParams":
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories")
        if self.n_brands < self.n_categories:
            raise ValueError("n_brands must be >= n_categories")
        if self.n_interests > self.n_categories:
            raise ValueError("n_interests must be <= n_categories")
        if self.valid + self.test >= 1.0:
            raise ValueError("valid + test must be < 1")
        return self


def _int_dtype(max_value: int) -> np.dtype:
    """Smallest signed integer dtype holding ``0..max_value``."""
    for dt in (np.int8, np.int16, np.int32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _offsets(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    c = np.cumsum(w)
    return c / c[-1]


def _zipf_ranks(rng: np.random.Generator, cdf: np.ndarray, size: int, n_max: np.ndarray | int | None = None):
    """0-based ranks from a Zipf cdf, optionally truncated to the first ``n_max`` ranks (per draw)."""
    u = rng.random(size)
    if n_max is not None:
        u *= cdf[np.asarray(n_max) - 1]
    r = np.searchsorted(cdf, u, side="right")
    hi = cdf.size - 1 if n_max is None else np.asarray(n_max) - 1
    return np.minimum(r, hi)


def _sorted_in_group(owner: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sort ``x`` (< 2**25) inside each group of the group-sorted int64 ``owner``; returns the keys."""
    key = (owner << _SHIFT) | x.astype(np.int64)
    key.sort()
    return key


@dataclass
class SyntheticWorld:
    """Ground truth of the item and user tables (all arrays indexed by raw id)."""

    item_category: np.ndarray  # [n_items]
    item_brand: np.ndarray  # [n_items]
    item_pop: np.ndarray  # [n_items] float64, log(n_c * P(item | c))
    items_by_category: np.ndarray  # item ids sorted by (category, popularity rank)
    cdf_key: np.ndarray  # [n_items] float64, category + within-category cdf (for sampling)
    user_interests: np.ndarray  # [n_users, K] categories
    user_weights: np.ndarray  # [n_users, K] Dirichlet(1) weights pi_u
    user_age: np.ndarray  # [n_users]
    user_city: np.ndarray  # [n_users]
    user_bias: np.ndarray  # [n_users] float64
    user_activity: np.ndarray  # [n_users] float64
    user_light: np.ndarray  # [n_users] bool
    user_n_behaviours: np.ndarray  # [n_users] stream length over the whole timeline
    user_community: np.ndarray | None = None  # [n_users] community id (n_communities > 0), else None

    def sample_items(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Items drawn from ``P(item | cats)`` with uniforms ``u`` in [0, 1)."""
        pos = np.searchsorted(self.cdf_key, cats.astype(np.float64) + u * (1.0 - 1e-9), side="right")
        return self.items_by_category[np.minimum(pos, self.cdf_key.size - 1)]

    def interest_strength(self, users: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """``m = K * pi_u(c)`` (0 where ``c`` is not an interest of ``u``)."""
        k = self.user_interests.shape[1]
        m = np.zeros(users.shape[0], dtype=np.float64)
        for j in range(k):
            hit = self.user_interests[:, j][users] == cats
            m += np.where(hit, self.user_weights[:, j][users], 0.0)
        return k * m


def world(p: SyntheticParams) -> SyntheticWorld:
    """Build the item and user tables of ``p`` (stream ``[seed, 0]``); cheap, no instances."""
    rng = np.random.default_rng([p.seed, 0])
    C, n_i, n_u, K = p.n_categories, p.n_items, p.n_users, p.n_interests
    cdt = _int_dtype(C)
    # items
    cat = np.concatenate([np.arange(C), rng.integers(0, C, n_i - C)])
    cat = rng.permutation(cat).astype(cdt)
    by_cat = np.argsort(rng.random(n_i))  # random order, then stable by category
    by_cat = by_cat[np.argsort(cat[by_cat], kind="stable")].astype(np.int32)
    n_c = np.bincount(cat, minlength=C)
    c_off = _offsets(n_c)
    sc = cat[by_cat].astype(np.int64)
    rank = np.arange(n_i) - c_off[sc]  # 0-based popularity rank inside the category
    w = (rank + 1.0) ** -p.popularity_exponent
    cw = np.cumsum(w)
    base = np.concatenate([[0.0], cw])[c_off[:-1]]
    tot = cw[c_off[1:] - 1] - base
    within = (cw - base[sc]) / tot[sc]
    within[c_off[1:] - 1] = 1.0
    cdf_key = sc + within
    item_pop = np.empty(n_i)
    item_pop[by_cat] = np.log(n_c[sc] * w / tot[sc])
    nb = (p.n_brands - np.arange(C) + C - 1) // C  # brands per category
    bcdf = _zipf_cdf(int(nb.max()), p.attr_zipf)
    brand = _zipf_ranks(rng, bcdf, n_i, nb[cat]) * C + cat
    brand = brand.astype(_int_dtype(p.n_brands))
    # users
    inter = _distinct_categories(rng, n_u, C, K)
    wts = rng.standard_exponential((n_u, K))
    wts /= wts.sum(axis=1, keepdims=True)
    community = None
    if p.n_communities > 0:  # own stream [seed, 2]: the default world stream is untouched
        inter, wts, community = _communities(p, inter, wts)
    primary = inter[np.arange(n_u), wts.argmax(axis=1)]
    age_of = rng.integers(0, N_AGE, C)
    age = np.where(rng.random(n_u) < p.attr_corr, age_of[primary], rng.integers(0, N_AGE, n_u)).astype(np.int8)
    shift = rng.integers(0, p.n_cities, C)
    city = ((_zipf_ranks(rng, _zipf_cdf(p.n_cities, p.attr_zipf), n_u) + shift[primary]) % p.n_cities)
    ubias = AGE_BIAS[age] + p.user_bias_std * rng.standard_normal(n_u)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n_u)
    light = rng.random(n_u) < p.short_frac
    if p.short_activity != 1.0:
        activity = np.where(light, p.short_activity * activity, activity)
    n_b = np.where(light, rng.integers(0, p.short_len + 1, n_u), rng.integers(p.max_len, 3 * p.max_len + 1, n_u))
    return SyntheticWorld(
        item_category=cat, item_brand=brand, item_pop=item_pop, items_by_category=by_cat, cdf_key=cdf_key,
        user_interests=inter.astype(cdt), user_weights=wts, user_age=age,
        user_city=city.astype(_int_dtype(p.n_cities)), user_bias=ubias, user_activity=activity,
        user_light=light, user_n_behaviours=n_b.astype(np.int64), user_community=community,
    )


def _distinct_categories(rng: np.random.Generator, n: int, C: int, K: int) -> np.ndarray:
    """``[n, K]`` rows of ``K`` distinct uniform categories (a loop over the ``K`` slots only)."""
    out = np.empty((n, K), dtype=np.int64)
    for j in range(K):
        x = rng.integers(0, C - j, n)
        if j:
            prev = np.sort(out[:, :j], axis=1)
            for q in range(j):
                x += x >= prev[:, q]
        out[:, j] = x
    return out


def _communities(p: SyntheticParams, inter: np.ndarray, wts: np.ndarray):
    """Planted communities (stream ``[seed, 2]``): community ``g`` has ``K`` distinct interests and
    Dirichlet(1) weights; each user joins a uniform community and each of its ``K`` slots (interest,
    weight) is, with probability ``community_purity``, the community's slot, else its own draw;
    weights are renormalised. Our choice: slot-wise inheritance keeps ``K`` slots per user, so a
    user may hold one category in two slots (``m`` then sums their weights)."""
    rng = np.random.default_rng([p.seed, 2])
    G, n_u, K = p.n_communities, inter.shape[0], inter.shape[1]
    c_inter = _distinct_categories(rng, G, p.n_categories, K)
    c_wts = rng.standard_exponential((G, K))
    c_wts /= c_wts.sum(axis=1, keepdims=True)
    comm = rng.integers(0, G, n_u)
    inherit = rng.random((n_u, K)) < p.community_purity
    inter = np.where(inherit, c_inter[comm], inter)
    wts = np.where(inherit, c_wts[comm], wts)
    wts /= wts.sum(axis=1, keepdims=True)
    return inter, wts, comm.astype(np.int32)


def hour_effect(p: SyntheticParams, hour: np.ndarray) -> np.ndarray:
    return p.hour_amplitude * np.cos(2 * np.pi * (hour.astype(np.float64) - PEAK_HOUR) / 24)


def logit_of(p: SyntheticParams, w: SyntheticWorld, user, item, category, hour, share) -> np.ndarray:
    """The planted logit (module docstring) from its inputs; ``share`` is ``s``."""
    m = w.interest_strength(user, category)
    return (p.logit_scale * (m + p.short_weight * share) + p.pop_weight * w.item_pop[item]
            + w.user_bias[user] + hour_effect(p, hour) + p.bias)


def recent_share(hist_category: np.ndarray, lengths: np.ndarray, category: np.ndarray, period_len: int) -> np.ndarray:
    """``s``: share of ``category`` among the last ``min(len, T)`` entries of each history row."""
    n, L = hist_category.shape
    W = min(period_len, L)
    out = np.zeros(n, dtype=np.float64)
    ar = np.arange(W)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        ln = lengths[s:e].astype(np.int64)
        win = np.minimum(ln, W)
        pos = np.maximum(ln - win, 0)[:, None] + ar[None, :]
        valid = ar[None, :] < win[:, None]
        vals = np.take_along_axis(hist_category[s:e], np.minimum(pos, L - 1), axis=1)
        hit = (vals == category[s:e, None]) & valid
        out[s:e] = hit.sum(axis=1) / np.maximum(win, 1)
    return out


def true_logit(raw: RawDataset) -> np.ndarray:
    """Recompute the planted logit of every instance of a ``synthetic`` RawDataset."""
    p = SyntheticParams(**raw.meta["params"])
    w = world(p)
    c = raw.columns
    share = recent_share(c["hist_category"], raw.lengths["hist_category"], c["category_id"], p.period_len)
    return logit_of(p, w, c["user_id"], c["item_id"], c["category_id"], c["hour"], share)


def sources(p, data_dir):
    return []


def _stream_share(b_cat: np.ndarray, start: np.ndarray, ln: np.ndarray, category: np.ndarray, T: int) -> np.ndarray:
    """``s`` computed on the behaviour stream: share of ``category`` among the last ``min(len, T)``."""
    n = start.size
    W = min(T, int(ln.max()) if n else 0)
    out = np.zeros(n, dtype=np.float64)
    if W == 0 or b_cat.size == 0:
        return out
    ar = np.arange(W)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        win = np.minimum(ln[s:e], T)
        idx = np.minimum((start[s:e] + ln[s:e] - win)[:, None] + ar[None, :], b_cat.size - 1)
        hit = (b_cat[idx] == category[s:e, None]) & (ar[None, :] < win[:, None])
        out[s:e] = hit.sum(axis=1) / np.maximum(win, 1)
    return out


def _gather_rows(dst: np.ndarray, stream: np.ndarray, start: np.ndarray, ln: np.ndarray, rows: slice) -> None:
    """``dst[rows, j] = stream[start + j]`` for ``j < ln``, 0 after."""
    L = dst.shape[1]
    ar = np.arange(L)
    st, n = start[rows], ln[rows]
    valid = ar[None, :] < n[:, None]
    if stream.size == 0:
        dst[rows] = 0
        return
    idx = np.minimum(st[:, None] + ar[None, :], stream.size - 1)
    vals = stream[idx]
    vals[~valid] = 0
    dst[rows] = vals


def build(p: SyntheticParams, data_dir: Path | None = None) -> RawDataset:
    w = world(p)
    rng = np.random.default_rng([p.seed, 1])
    counts = rng.multinomial(p.n_instances, w.user_activity / w.user_activity.sum())
    return _instances(p, w, rng, np.arange(p.n_users, dtype=np.int64), counts)


def user_blocks(counts: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive user ranges [a, b) holding about ``rows`` instances each (at least one user)."""
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(rows, int(cum[-1]), rows), side="left") + 1
    edges = np.unique(np.concatenate([[0], cuts, [counts.size]]))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def chunks(p: SyntheticParams, data_dir: Path | None = None):
    """With ``chunk_rows`` > 0: the data set in parts of about ``chunk_rows`` instances, one block of
    consecutive users each (instance counts per user from stream ``[seed, 1]`` as in :func:`build`;
    block ``b`` from stream ``[seed, 1, b + 1]``), for out-of-core encoding. Another draw than the
    in-memory data set of the same seed (same world and model, other random streams)."""
    if p.chunk_rows == 0:
        return None
    if p.split != "user":
        raise ConfigError("synthetic: chunk_rows needs split=user (a time split needs every user's instances at once)")

    def parts():
        w = world(p)
        counts = np.random.default_rng([p.seed, 1]).multinomial(p.n_instances, w.user_activity / w.user_activity.sum())
        for b, (a, z) in enumerate(user_blocks(counts, p.chunk_rows)):
            raw = _instances(p, w, np.random.default_rng([p.seed, 1, b + 1]), np.arange(a, z, dtype=np.int64),
                             counts[a:z])
            raw.meta.update(part=b, behaviours=None, active_users=None)
            yield raw

    return parts()


def _instances(p: SyntheticParams, w: SyntheticWorld, rng: np.random.Generator, uids: np.ndarray,
               counts: np.ndarray) -> RawDataset:
    """The instances of users ``uids`` (``counts`` impressions each) from the random stream ``rng``."""
    N, L, T, C, n_u = int(counts.sum()), p.max_len, p.period_len, p.n_categories, uids.size
    cdt = _int_dtype(C)

    # instances: users and times (sorted by user, time); owner = position in uids
    owner = np.repeat(np.arange(n_u, dtype=np.int64), counts)
    ikey = _sorted_in_group(owner, rng.integers(WINDOW_START, SPAN, N))
    t = (ikey & _MASK).astype(np.int32)
    user = owner.astype(np.int32)  # local until the labels need the raw id
    del owner

    # behaviour streams of active users: strictly increasing times, periods, categories, items
    n_b = np.where(counts > 0, w.user_n_behaviours[uids], 0)
    b_off = _offsets(n_b)
    nbt = int(b_off[-1])
    bowner = np.repeat(np.arange(n_u, dtype=np.int64), n_b)
    bkey = _sorted_in_group(bowner, rng.integers(0, SPAN - n_b[bowner]))
    rank = np.arange(nbt, dtype=np.int64) - b_off[bowner]
    bkey += rank
    b_ts = (bkey & _MASK).astype(np.int32)
    k = np.searchsorted(bkey, ikey, side="left") - b_off[user]
    del bkey, ikey
    n_p = np.where(counts > 0, n_b // T + 1, 0)
    p_off = _offsets(n_p)
    powner = np.repeat(np.arange(n_u, dtype=np.int64), n_p)
    cw = np.cumsum(w.user_weights[uids], axis=1)
    zi = np.zeros(powner.size, dtype=np.int64)
    up = rng.random(powner.size)
    for j in range(p.n_interests - 1):
        zi += up > cw[:, j][powner]
    z = w.user_interests[uids[powner], zi]
    del powner, zi, up
    b_cat = z[p_off[bowner] + rank // T]
    expl = rng.random(nbt) < p.explore
    b_cat[expl] = rng.integers(0, C, int(expl.sum()))
    b_item = w.sample_items(b_cat, rng.random(nbt)).astype(np.int32)
    del bowner, rank, expl

    # candidates, context, history lengths
    zt = z[p_off[user] + k // T]
    from_interest = rng.random(N) < p.p_interest_candidate
    item = np.where(from_interest, w.sample_items(zt, rng.random(N)), rng.integers(0, p.n_items, N)).astype(np.int32)
    del zt, from_interest
    category = w.item_category[item]
    hour = ((t // 3600) % 24).astype(np.int8)
    lengths = np.minimum(k, L).astype(np.int32)
    start = b_off[user] + k - lengths  # first history behaviour in the stream
    del k

    # labels from the planted logistic model (s from the stream window k - min(len, T) .. k-1)
    user = uids[user].astype(np.int32)  # raw user ids from here on
    share = _stream_share(b_cat, start, lengths, category, T)
    prob = 1.0 / (1.0 + np.exp(-logit_of(p, w, user, item, category, hour, share)))
    del share
    label = (rng.random(N) < prob).astype(np.int8)
    true_prob = prob.astype(np.float32) if p.emit_true_prob else None
    del prob
    if p.split == "user":
        split = per_user_chronological(user, t, np.arange(N), valid=p.valid, test=p.test)
    else:
        split = time_quantile_split(t, 1.0 - p.test, (1.0 - p.test - p.valid) if p.valid > 0 else None)
    # rows ordered train | valid | test (each by user, time): encoding then reads rows sequentially
    order = np.argsort(split, kind="stable")
    user, t, item, category, hour, lengths, start, label, split = (
        a[order] for a in (user, t, item, category, hour, lengths, start, label, split))
    if true_prob is not None:
        true_prob = true_prob[order]
    del order

    # sequences, filled in row chunks (no [N, L] int64 temporaries)
    hist_item = np.empty((N, L), dtype=np.int32)
    hist_cat = np.empty((N, L), dtype=cdt)
    hist_ts = np.empty((N, L), dtype=np.int32)
    for s in range(0, N, CHUNK):
        rows = slice(s, min(N, s + CHUNK))
        for dst, stream in ((hist_item, b_item), (hist_cat, b_cat), (hist_ts, b_ts)):
            _gather_rows(dst, stream, start, lengths, rows)
    del start, b_item, b_ts, b_cat

    cols = {
        "user_id": user, "item_id": item, "age": w.user_age[user], "city": w.user_city[user],
        "category_id": category, "brand": w.item_brand[item], "hour": hour,
        "hist_item_id": hist_item, "hist_category": hist_cat, "hist_ts": hist_ts, "timestamp": t,
    }
    fields = [
        Field("user_id", Kind.CATEGORICAL, Role.USER),
        Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("age", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("city", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("category_id", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("brand", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("hour", Kind.CATEGORICAL, Role.CONTEXT),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_category", Kind.SEQUENCE, Role.BEHAVIOR, vocab="category_id", max_len=L,
              target="category_id", group="hist_item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
    ]
    if true_prob is not None:
        cols["true_prob"] = true_prob
        fields.append(Field("true_prob", Kind.NUMERIC, Role.CONTEXT, embed=False))
    cols["label"] = label
    fields.append(Field("label", Kind.NUMERIC, Role.LABEL))
    seq_len = {"hist_item_id": lengths, "hist_category": lengths, "hist_ts": lengths}
    schema = Schema(tuple(fields), label="label",
                    description="synthetic interest-delay CTR data (ctrgraph.data.recipes.synthetic)")
    meta = {
        "instances": N, "positives": int(label.sum()), "behaviours": nbt, "active_users": int((counts > 0).sum()),
        "time_origin": TIME_ORIGIN, "params": p.model_dump(), "generator": "synthetic interest-delay v1",
    }
    return RawDataset(schema, cols, seq_len, split, meta=meta)


RECIPE = Recipe("synthetic", "synthetic CTR generator (interest-delay behaviour, known logistic labels)", SyntheticParams,
                build, sources, chunks=chunks)
