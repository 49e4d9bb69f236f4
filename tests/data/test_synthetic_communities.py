"""The behaviour-sparsity knobs of the ``synthetic`` generator: planted communities
(``n_communities``, ``community_purity``) and light users' impression weight (``short_activity``)."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ctrgraph.data.recipes.synthetic import SyntheticParams, build, world

SMALL = dict(n_instances=20_000, n_users=1_000, n_items=600, n_categories=20, n_cities=100, n_brands=100,
             emit_true_prob=False)


def _profile(w) -> np.ndarray:
    """``[n_users, C]`` interest weights pi_u over categories (slots holding one category summed)."""
    n, K = w.user_interests.shape
    C = int(w.item_category.max()) + 1
    out = np.zeros((n, C))
    np.add.at(out, (np.repeat(np.arange(n), K), w.user_interests.ravel().astype(np.int64)), w.user_weights.ravel())
    return out


def _pair_similarity(prof: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Mean overlap sum_c min(pi_a(c), pi_b(c)) of the user pairs (a, b)."""
    return float(np.minimum(prof[a], prof[b]).sum(axis=1).mean())


def test_defaults_leave_the_world_untouched():
    w0 = world(SyntheticParams(**SMALL))
    w1 = world(SyntheticParams(**SMALL, short_activity=1.0, n_communities=0, community_purity=0.3))
    assert w0.user_community is None and w1.user_community is None
    for k in ("user_interests", "user_weights", "user_age", "user_city", "user_activity", "user_light"):
        np.testing.assert_array_equal(getattr(w0, k), getattr(w1, k))


def test_communities_share_interests_more_than_random_pairs():
    rng = np.random.default_rng(0)
    for purity, lo, hi in ((1.0, 0.999, 1.0), (0.6, 0.35, 0.95)):
        w = world(SyntheticParams(**SMALL, n_communities=10, community_purity=purity))
        prof, g = _profile(w), w.user_community
        assert g is not None and set(np.unique(g)) == set(range(10))
        a = rng.integers(0, prof.shape[0], 20_000)
        b = rng.integers(0, prof.shape[0], 20_000)
        same = g[a] == g[b]
        s_same = _pair_similarity(prof, a[same & (a != b)], b[same & (a != b)])
        s_rand = _pair_similarity(prof, a[~same], b[~same])
        assert lo <= s_same <= hi, (purity, s_same)
        assert s_rand < 0.3 and s_same > s_rand + 0.2, (purity, s_same, s_rand)
    # purity 0: community ids are drawn but interests are the users' own (no planted structure)
    w = world(SyntheticParams(**SMALL, n_communities=10, community_purity=0.0))
    np.testing.assert_array_equal(w.user_interests, world(SyntheticParams(**SMALL)).user_interests)


def test_community_interests_drive_labels_and_behaviours():
    """With pure communities, a member's planted affinity m equals its community's for every
    category, and its behaviours fall in the community's categories (up to ``explore``)."""
    p = SyntheticParams(**SMALL, n_communities=5, community_purity=1.0, explore=0.0)
    w, raw = world(p), build(p)
    g = w.user_community
    users = np.arange(p.n_users)
    _, first = np.unique(g, return_index=True)  # one member per community (g is 0..4)
    for c in range(p.n_categories):
        cats = np.full(p.n_users, c)
        np.testing.assert_allclose(w.interest_strength(users, cats), w.interest_strength(first[g], cats))
    u, h, ln = raw.columns["user_id"], raw.columns["hist_category"], raw.lengths["hist_category"]
    valid = np.arange(h.shape[1])[None, :] < ln[:, None]
    owner_slots = w.user_interests[u]  # [N, K]
    in_interest = (h[:, :, None] == owner_slots[:, None, :]).any(axis=2)
    assert in_interest[valid].all()


def test_short_activity_scales_light_users_impressions():
    kw = dict(SMALL, short_frac=0.5, short_len=3)
    w1, w2 = world(SyntheticParams(**kw)), world(SyntheticParams(**kw, short_activity=0.1))
    light = w1.user_light
    np.testing.assert_array_equal(light, w2.user_light)
    np.testing.assert_allclose(w2.user_activity[light], 0.1 * w1.user_activity[light])
    np.testing.assert_array_equal(w2.user_activity[~light], w1.user_activity[~light])
    rows = []
    for w, p in ((w1, SyntheticParams(**kw)), (w2, SyntheticParams(**kw, short_activity=0.1))):
        u = build(p).columns["user_id"]
        rows.append(np.bincount(u, minlength=p.n_users))
    share = [r[light].sum() / r.sum() for r in rows]
    assert 0.35 < share[0] < 0.65 and share[1] < 0.12, share  # ~1/11 of the weight at 0.1
    # light users still have the planted behaviour counts (0..short_len), heavy ones >= max_len
    assert w2.user_n_behaviours[light].max() <= 3 and w2.user_n_behaviours[~light].min() >= 50
    assert set(np.unique(w2.user_n_behaviours[light])) == {0, 1, 2, 3}


def test_short_weight_zero_removes_the_recent_history_term():
    """The hypothesis switch of docs/dg-enn.md: with ``short_weight=0`` two data sets that differ
    only in the history window's composition get the same true logit."""
    from ctrgraph.data.recipes.synthetic import logit_of
    p = SyntheticParams(**SMALL, short_weight=0.0)
    w = world(p)
    n = 50
    args = (np.arange(n), np.arange(n), w.item_category[:n].astype(np.int64), np.zeros(n, dtype=np.int64))
    np.testing.assert_array_equal(logit_of(p, w, *args, np.zeros(n)), logit_of(p, w, *args, np.ones(n)))
    p1 = SyntheticParams(**SMALL)
    assert not np.allclose(logit_of(p1, w, *args, np.zeros(n)), logit_of(p1, w, *args, np.ones(n)))


@pytest.mark.parametrize("bad", [dict(short_activity=0.0), dict(n_communities=-1), dict(community_purity=1.5)])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        SyntheticParams(**SMALL, **bad)
