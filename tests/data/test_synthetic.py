"""The ``synthetic`` recipe: determinism, planted label model, interest-delay histories, sparsity knobs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctrgraph.data.dataset import is_padded_after
from ctrgraph.data.encode import encode
from ctrgraph.data.raw import TEST, TRAIN, VALID
from ctrgraph.registry import build_raw, load_dataset
from ctrgraph.data.recipes.synthetic import SyntheticParams, true_logit, world
from ctrgraph.data.schema import Role
from ctrgraph.errors import ConfigError

SEQS = ("hist_item_id", "hist_category", "hist_ts")


def gen(**kw):
    return build_raw("synthetic", kw)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    r = pd.Series(s).rank().to_numpy()
    n1 = int(y.sum())
    n0 = y.size - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def valid_mask(raw, name="hist_item_id") -> np.ndarray:
    L = raw.columns[name].shape[1]
    return np.arange(L)[None, :] < raw.lengths[name][:, None]


@pytest.fixture(scope="module")
def big():
    return gen(n_instances=200_000, n_users=5_000, seed=3)


def test_same_seed_identical_different_seed_differs():
    a, b, c = gen(n_instances=1_000, n_users=100), gen(n_instances=1_000, n_users=100), gen(n_instances=1_000,
                                                                                          n_users=100, seed=1)
    for k in a.columns:
        assert a.columns[k].dtype == b.columns[k].dtype and np.array_equal(a.columns[k], b.columns[k]), k
    for k in a.lengths:
        assert np.array_equal(a.lengths[k], b.lengths[k])
    assert np.array_equal(a.split, b.split)
    assert not np.array_equal(a.columns["item_id"], c.columns["item_id"])
    assert not np.array_equal(a.columns["hist_item_id"], c.columns["hist_item_id"])


@pytest.mark.parametrize("n", [1_000, 200_000])
def test_schema_sizes_and_encoding(n, big):
    raw = big if n == 200_000 else gen(n_instances=n, n_users=100)
    raw.validate("synthetic")
    assert len(raw) == n and raw.meta["instances"] == n
    s = raw.schema
    assert s.first(Role.USER).name == "user_id" and s.first(Role.ITEM).name == "item_id"
    assert [f.name for f in s.by_role(Role.USER_ATTR)] == ["age", "city"]
    assert [f.name for f in s.by_role(Role.ITEM_ATTR)] == ["category_id", "brand"]
    assert s["hist_item_id"].target == "item_id" and s["hist_category"].vocab == "category_id"
    assert s.sequence_groups()["hist_item_id"] == [s["hist_item_id"], s["hist_category"], s["hist_ts"]]
    assert not s["hist_ts"].embed and not s["timestamp"].embed and not s["true_prob"].embed
    assert "true_prob" not in [f.name for f in s.features]
    assert raw.columns["hist_item_id"].dtype == np.int32 and raw.columns["hist_ts"].dtype == np.int32
    assert raw.columns["hist_category"].dtype.itemsize <= 2
    assert 0.2 <= raw.columns["label"].mean() <= 0.5
    assert (np.diff(raw.split) >= 0).all()  # rows ordered train | valid | test
    ds = encode(raw)
    assert is_padded_after(ds.schema, ds.arrays)
    tr = ds.split("train")
    assert tr["hist_item_id"].dtype == np.int32 and (tr["item_id"] >= 2).all()
    assert np.array_equal(ds.arrays["timestamp"], raw.columns["timestamp"].astype(np.float32))
    assert np.array_equal(ds.arrays["timestamp"].astype(np.int64), raw.columns["timestamp"])  # float32-exact


def test_registry_and_params(tmp_path, monkeypatch):
    monkeypatch.setenv("CTRGRAPH_CACHE", str(tmp_path))
    ds = load_dataset("synthetic", {"n_instances": 2_000, "n_users": 200}, cache=True)
    again = load_dataset("synthetic", {"n_instances": 2_000, "n_users": 200}, cache=True)
    assert np.array_equal(ds.arrays["hist_item_id"], again.arrays["hist_item_id"])
    with pytest.raises(ConfigError):
        build_raw("synthetic", {"n_instances": 2_000, "colour": 1})
    with pytest.raises(ConfigError):
        build_raw("synthetic", {"n_items": 10, "n_categories": 20})
    raw = gen(n_instances=1_000, n_users=100, emit_true_prob=False)
    assert "true_prob" not in raw.columns and "true_prob" not in raw.schema


def test_labels_follow_planted_model(big):
    y, p = big.columns["label"].astype(np.int64), big.columns["true_prob"].astype(np.float64)
    assert auc(y, p) > 0.75
    edges = np.quantile(p, np.linspace(0, 1, 11))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    rate = np.bincount(b, weights=y, minlength=10) / np.bincount(b, minlength=10)
    mean_p = np.bincount(b, weights=p, minlength=10) / np.bincount(b, minlength=10)
    assert (np.diff(rate) > 0).all(), rate
    assert np.abs(rate - mean_p).max() < 0.02


def test_true_prob_is_the_documented_formula():
    raw = gen(n_instances=20_000, n_users=1_000, seed=5)
    p = SyntheticParams(**raw.meta["params"])
    w = world(p)
    c = raw.columns
    u, it, cat = c["user_id"], c["item_id"], c["category_id"]
    assert np.array_equal(w.item_category[it], cat) and np.array_equal(w.user_age[u], c["age"])
    assert np.array_equal(w.item_brand[it] % p.n_categories, cat)  # brand determines the category
    m = p.n_interests * (w.user_weights[u] * (w.user_interests[u] == cat[:, None])).sum(axis=1)
    ln = raw.lengths["hist_category"]
    win = np.minimum(ln, p.period_len)
    j = np.arange(p.max_len)[None, :]
    recent = (j >= (ln - win)[:, None]) & (j < ln[:, None])
    s = ((c["hist_category"] == cat[:, None]) & recent).sum(axis=1) / np.maximum(win, 1)
    logit = (p.logit_scale * (m + p.short_weight * s) + p.pop_weight * w.item_pop[it] + w.user_bias[u]
             + p.hour_amplitude * np.cos(2 * np.pi * (c["hour"] - 21) / 24) + p.bias)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), c["true_prob"], atol=1e-6)
    np.testing.assert_allclose(true_logit(raw), logit, atol=1e-9)
    assert np.array_equal(c["hour"], (c["timestamp"] // 3600) % 24)


def test_histories_precede_instance_and_are_per_user(big):
    c, ok = big.columns, valid_mask(big)
    ts, t = c["hist_ts"], c["timestamp"]
    assert (ts[ok] < np.broadcast_to(t[:, None], ts.shape)[ok]).all()
    assert ((np.diff(ts.astype(np.int64), axis=1) > 0) | ~ok[:, 1:]).all()  # strictly increasing in a row
    for k in SEQS:
        assert (c[k][~ok] == 0).all() and np.array_equal(big.lengths[k], big.lengths["hist_item_id"])
    # one stream per user: a (user, behaviour time) always names the same item and category
    user = np.broadcast_to(c["user_id"][:, None], ts.shape)[ok].astype(np.int64)
    key = (user << 25) | ts[ok]
    o = np.argsort(key, kind="stable")
    same = np.diff(key[o]) == 0
    for k in ("hist_item_id", "hist_category"):
        v = c[k][ok][o]
        assert (v[1:][same] == v[:-1][same]).all()
    # each user's behaviours number at most the stream length of the world; light users stay short
    p = SyntheticParams(**big.meta["params"])
    w = world(p)
    uniq_users = (key[o][np.r_[True, ~same]] >> 25)
    per_user = np.bincount(uniq_users, minlength=p.n_users)
    assert (per_user <= w.user_n_behaviours).all()
    light = w.user_light[c["user_id"]]
    assert light.any() and (big.lengths["hist_item_id"][light] <= p.short_len).all()
    # later instances of a user never see a shorter history
    o2 = np.lexsort((t, c["user_id"]))
    u2, l2 = c["user_id"][o2], big.lengths["hist_item_id"][o2]
    assert (np.diff(l2)[u2[1:] == u2[:-1]] >= 0).all()


def test_history_categories_follow_interest_delay(big):
    c, ok = big.columns, valid_mask(big)
    hc = c["hist_category"]
    pair = ok[:, 1:]
    same = (hc[:, 1:] == hc[:, :-1])[pair].mean()
    freq = np.bincount(hc[ok].astype(np.int64)) / ok.sum()
    assert same > 0.5 and same > 5 * (freq ** 2).sum()
    w = world(SyntheticParams(**big.meta["params"]))
    interests = w.user_interests[c["user_id"]]
    in_interest = (hc[:, :, None] == interests[:, None, :]).any(axis=2)[ok].mean()
    assert in_interest > 0.85  # 1 - explore (0.1) plus chance hits

    def consecutive_same(T):
        r = gen(n_instances=20_000, n_users=1_000, period_len=T, explore=0.0)
        m = valid_mask(r)[:, 1:]
        h = r.columns["hist_category"]
        return (h[:, 1:] == h[:, :-1])[m].mean()

    assert consecutive_same(20) > consecutive_same(1) + 0.2


def _rare_share(values: np.ndarray, k: int = 20) -> tuple[float, int]:
    """Share of instances whose value occurs < k times, and the number of distinct values."""
    _, inv, cnt = np.unique(values, return_inverse=True, return_counts=True)
    return float((cnt[inv] < k).mean()), int(cnt.size)


def test_feature_sparsity_knob():
    kw = dict(n_instances=50_000, n_users=20_000, n_items=20_000, n_cities=5_000, n_brands=5_000)
    stats = {z: gen(attr_zipf=z, **kw) for z in (1.5, 1.0, 0.5)}  # decreasing exponent = heavier tail
    for name in ("city", "brand"):
        share, distinct = np.array([_rare_share(r.columns[name]) for r in stats.values()]).T
        assert (np.diff(share) > 0.05).all() and (np.diff(distinct) > 0).all(), (name, share, distinct)
    more = gen(attr_zipf=1.5, **dict(kw, n_cities=50_000))
    assert _rare_share(more.columns["city"])[0] > _rare_share(stats[1.5].columns["city"])[0]


def test_behaviour_sparsity_knob():
    kw = dict(n_instances=30_000, n_users=3_000, short_len=5)
    stats = []
    for frac in (0.1, 0.4, 0.8):
        ln = gen(short_frac=frac, **kw).lengths["hist_item_id"]
        stats.append(((ln <= 5).mean(), ln.mean()))
    short, mean = np.array(stats).T
    assert (np.diff(short) > 0.1).all() and (np.diff(mean) < 0).all(), stats
    assert abs(short[1] - 0.4) < 0.1


def test_splits():
    raw = gen(n_instances=20_000, n_users=500, valid=0.1, test=0.2)
    c = raw.columns
    df = pd.DataFrame({"u": c["user_id"], "t": c["timestamp"], "s": raw.split})
    g = df.groupby(["u", "s"])["t"].agg(["min", "max"]).unstack()
    tr_max, va_min, va_max, te_min = g[("max", TRAIN)], g[("min", VALID)], g[("max", VALID)], g[("min", TEST)]
    both = va_min.notna() & te_min.notna()
    assert (tr_max[both] <= va_min[both]).all() and (va_max[both] <= te_min[both]).all()
    assert abs((raw.split == TEST).mean() - 0.2) < 0.03
    tim = gen(n_instances=20_000, n_users=500, split="time")
    s, t = tim.split, tim.columns["timestamp"]
    assert t[s == TRAIN].max() < t[s == VALID].min() and t[s == VALID].max() < t[s == TEST].min()
    assert abs((s == TEST).mean() - 0.1) < 0.01 and (np.diff(s) >= 0).all()
