import numpy as np

from ctrgraph.train.metrics import auc, expected_auc, gauc, logloss


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


def test_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 300)
        s = rng.integers(0, 10, 300).astype(float)  # many ties
        assert abs(auc(y, s) - brute_auc(y, s)) < 1e-12


def test_gauc_is_impression_weighted_and_skips_one_class_users():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.random(500).round(1)
    g = rng.integers(0, 30, 500)
    g[:10] = 99
    y[:10] = 1  # user 99: all positive -> skipped
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if 0 < y[m].sum() < m.sum():
            num += brute_auc(y[m], s[m]) * m.sum()
            den += m.sum()
    assert abs(gauc(y, s, g) - num / den) < 1e-12


def test_logloss_clips():
    assert logloss(np.array([1, 0]), np.array([1.0, 0.0])) < 1e-6
    assert np.isfinite(logloss(np.array([1]), np.array([0.0])))


def test_expected_auc_equals_the_pairwise_definition_and_the_auc_for_sure_labels():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 40).astype(float)  # many ties
    q = rng.random(40)
    num = den = 0.0
    for i in range(40):  # O(n^2) reference: ordered pairs i != j
        for j in range(40):
            if i != j:
                w = q[i] * (1 - q[j])
                num += w * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
                den += w
    assert np.isclose(expected_auc(s, q), num / den)
    y = (rng.random(40) < 0.4).astype(float)
    assert np.isclose(expected_auc(s, y), auc(y, s))  # 0/1 probabilities: the plain AUC
    assert np.isclose(expected_auc(q, q), expected_auc(q * 3 + 1, q))  # rank-based
