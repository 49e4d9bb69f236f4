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


def _reference_group_rank_auc(labels, scores, groups):
    """The row-wise implementation the lean one replaced (per-row ranks, float64 copies of everything)."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    groups = np.asarray(groups).ravel()
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    n = g.size
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    new_run = new_group.copy()
    new_run[1:] |= s[1:] != s[:-1]
    gid = np.cumsum(new_group) - 1
    gstart = np.flatnonzero(new_group)
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)
    run_rank = (run_start + run_end - 1) / 2.0 - gstart[gid[run_start]] + 1.0
    rank = np.repeat(run_rank, run_end - run_start)
    ng = gstart.size
    n_pos = np.bincount(gid, weights=y, minlength=ng)
    n_all = np.bincount(gid, minlength=ng).astype(np.float64)
    n_neg = n_all - n_pos
    r_pos = np.bincount(gid, weights=rank * y, minlength=ng)
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return a, n_all, valid


def test_lean_metrics_equal_the_row_wise_reference_bit_for_bit():
    """AUC and gAUC from per-run sums (less memory per row) equal the row-wise definition exactly, with
    ties, saturated probabilities, one-class groups and float32 labels; logloss and the sigmoid
    computed in place equal the plain expressions exactly."""
    from ctrgraph.train.metrics import _group_rank_auc, all_metrics

    rng = np.random.default_rng(3)
    for n, n_groups in ((1, 1), (2, 1), (500, 7), (20_000, 3_000)):
        y = (rng.random(n) < 0.3).astype(np.float32)
        z = (rng.normal(size=n) + y).astype(np.float32)
        z[: n // 3] = np.round(z[: n // 3], 1)  # ties
        z[n // 2: n // 2 + n // 10] = 60.0  # sigmoid saturates to 1.0: ties in float64 probabilities
        g = rng.integers(0, n_groups, n).astype(np.int32)
        p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        for groups in (g, np.zeros(n, dtype=np.int8)):
            ours = _group_rank_auc(y, p, groups)
            ref = _reference_group_rank_auc(y, p, groups)
            for a, b in zip(ours, ref):
                np.testing.assert_array_equal(a, b)
        ref_auc = _reference_group_rank_auc(y, p, np.zeros(n, dtype=np.int8))
        assert auc(y, p) == float(ref_auc[0][0]) or (np.isnan(auc(y, p)) and not ref_auc[2][0])
        yy = y.astype(np.float64)
        pp = np.clip(p, 1e-7, 1 - 1e-7)
        assert logloss(y, p) == float(-np.mean(yy * np.log(pp) + (1 - yy) * np.log(1 - pp)))
        m = all_metrics(y, z, g)
        if n > 2:
            assert m["gauc"] == gauc(y, p, g) and m["auc"] == auc(y, p)
