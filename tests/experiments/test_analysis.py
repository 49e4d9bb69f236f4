"""What study items compute, against brute-force references: buckets and grouped metrics, feature
frequencies and history lengths, data statistics (DG-ENN Fig. 1), t-SNE, Wilcoxon and RelaImpr."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ctrgraph.config import load_config
from ctrgraph.errors import ConfigError
from ctrgraph.experiments import analysis as A
from ctrgraph.experiments import stats as S
from ctrgraph.runs.assemble import dataset_for
from ctrgraph.train.metrics import auc, expected_auc, logloss

PARAMS = ("data.params={n_instances: 1500, n_users: 60, n_items: 100, n_categories: 4, n_cities: 10, "
          "n_brands: 10, emit_true_prob: false}")


@pytest.fixture(scope="module")
def syn():
    return dataset_for(load_config(None, ["data.name=synthetic", "data.cache=false", PARAMS]))


def test_bucket_index_equals_a_loop():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 130, 500)
    edges = [1, 5, 10, 20, 50, 100]
    want = np.array([sum(x >= e for e in edges) for x in v])  # brute force: edges passed
    np.testing.assert_array_equal(S.bucket_index(v, edges), want)
    assert S.bucket_names(edges) == ["0", "1-4", "5-9", "10-19", "20-49", "50-99", ">=100"]
    for bad in ([], [5, 5], [10, 3]):
        with pytest.raises(ConfigError, match="strictly increasing"):
            S.bucket_index(v, bad)


def test_grouped_metrics_equal_per_group_loops():
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.4).astype(np.int8)
    p = np.clip(rng.random(n) * 0.6 + 0.3 * y, 0, 1)
    p[:50] = np.round(p[:50], 1)  # ties
    q = rng.random(n)
    rows = np.concatenate([np.arange(n), rng.integers(0, n, 300)])  # rows in several groups
    groups = np.concatenate([rng.choice([0, 1, 2, 4], n), np.full(300, 5)])  # group 3 is empty
    one_class = np.flatnonzero(y == 1)[:7]
    rows, groups = np.concatenate([rows, one_class]), np.concatenate([groups, np.full(7, 6)])
    m = S.grouped_metrics(y, p, rows, groups, 8, truth=q)  # groups 3 and 7 are empty
    for g in (0, 1, 2, 4, 5):
        r = rows[groups == g]
        assert m["n"][g] == r.size
        assert m["pos_rate"][g] == pytest.approx(y[r].mean())
        assert m["logloss"][g] == pytest.approx(logloss(y[r], p[r]), rel=1e-10)
        assert m["auc"][g] == pytest.approx(auc(y[r], p[r]), rel=1e-10)
        assert m["eauc"][g] == pytest.approx(expected_auc(np.clip(p[r], 1e-7, 1 - 1e-7), q[r]), rel=1e-10)
    assert np.isnan(m["auc"][6]) and m["logloss"][6] == pytest.approx(logloss(y[one_class], p[one_class]))
    for g in (3, 7):
        assert m["n"][g] == 0 and np.isnan(m["auc"][g]) and np.isnan(m["logloss"][g])


def test_frequencies_and_history_lengths_equal_loops(planted):
    tr, te = planted.split("train"), planted.split("test")
    freq = A.feature_frequencies(planted, ["user_id", "item_id", "cat"])
    for j, f in enumerate(["user_id", "item_id", "cat"]):
        want = [int(np.sum(tr[f] == v)) for v in te[f]]
        np.testing.assert_array_equal(freq[:, j], want)
    np.testing.assert_array_equal(A.history_lengths(planted, "hist"),
                                  [int(np.count_nonzero(h)) for h in te["hist_item_id"]])
    np.testing.assert_array_equal(A.history_lengths(planted, "user_rows"),
                                  [int(np.sum(tr["user_id"] == u)) for u in te["user_id"]])
    with pytest.raises(ConfigError, match="by must be"):
        A.history_lengths(planted, "bogus")
    with pytest.raises(ConfigError, match="categorical fields only"):
        A.categorical_fields(planted.schema, ["tags"], "table6")
    with pytest.raises(ConfigError, match="unknown field"):
        A.categorical_fields(planted.schema, ["nope"], "table6")


def test_value_frequencies_match_a_brute_force_count(syn):
    edges = [1, 3, 10, 30]
    rows = A.value_frequency_rows(syn, ["item_id", "city"], edges)
    tr = syn.split("train")
    for f in ("item_id", "city"):
        freq = Counter(np.asarray(tr[f]).tolist())  # seen values only
        want = [sum(1 for c in freq.values() if lo <= c < hi) for lo, hi in zip(edges, edges[1:] + [10**9])]
        got = [r for r in rows if r["field"] == f]
        assert [r["bucket"] for r in got] == ["1-2", "3-9", "10-29", ">=30"]
        assert [r["count"] for r in got] == want and sum(want) == len(freq)
        assert sum(r["share"] for r in got) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="categorical"):
        A.value_frequency_rows(syn, ["hist_item_id"])


def test_behaviour_lengths_count_each_users_distinct_timed_behaviours(syn):
    tr = syn.split("train")
    users, hist, ts = (np.asarray(tr[k]) for k in ("user_id", "hist_item_id", "hist_ts"))
    seen: dict[int, set] = {}
    for u, h, t in zip(users, hist, ts):  # reference: per row, its valid (ts, item) behaviours
        seen.setdefault(int(u), set()).update((int(a), int(b)) for a, b in zip(t, h) if b != 0)
    want = np.array([len(seen[u]) for u in sorted(seen)])
    np.testing.assert_array_equal(A.behaviour_lengths(syn), want)
    assert (want <= 5).any() and (want > 20).any()  # the generator's light and heavy users
    rows = A.behaviour_rows(syn, [1, 6])
    assert [r["count"] for r in rows] == [int((want < 1).sum()), int(((want >= 1) & (want < 6)).sum()),
                                          int((want >= 6).sum())]


def test_tsne_preserves_two_planted_clusters():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (60, 10)), rng.normal(6, 1, (60, 10))]
    lab = np.r_[np.zeros(60), np.ones(60)]
    y = A.tsne(x, perplexity=15, iters=300, seed=0)
    d = np.linalg.norm(y[:, None] - y[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (lab[d.argmin(1)] == lab).all()  # nearest neighbour in the map has the same cluster
    c0, c1 = y[lab == 0].mean(0), y[lab == 1].mean(0)
    spread = max(np.linalg.norm(y[lab == 0] - c0, axis=1).mean(), np.linalg.norm(y[lab == 1] - c1, axis=1).mean())
    assert np.linalg.norm(c0 - c1) > 2 * spread
    with pytest.raises(ConfigError, match="perplexity"):
        A.tsne(x[:10], perplexity=30)


def test_wilcoxon_and_relaimpr():
    from scipy.stats import wilcoxon

    better = {1: 0.85, 2: 0.86, 3: 0.84, 4: 0.87, 5: 0.86}
    worse = {1: 0.83, 2: 0.85, 3: 0.845, 4: 0.84, 5: 0.80}
    d = np.array([better[s] - worse[s] for s in better])
    assert S.wilcoxon_greater(better, worse) == pytest.approx(wilcoxon(d, alternative="greater").pvalue)
    assert S.wilcoxon_greater(better, worse) == pytest.approx(2 / 32)  # one negative difference, the smallest
    assert S.wilcoxon_greater({1: 0.8}, {1: 0.7}) is None and S.wilcoxon_greater(worse, dict(worse)) is None
    assert S.relaimpr(0.85, 0.8) == pytest.approx((0.35 / 0.3 - 1) * 100)


def test_user_cluster_sampler_draws_whole_users():
    users = np.array([5, 5, 7, 9, 9, 9, 7])
    draw = S.user_cluster_sampler(users)
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = draw(rng)
        cnt = Counter(users[rows].tolist())
        for u, c in cnt.items():  # a drawn user brings all its rows, possibly several times
            assert c % int((users == u).sum()) == 0
        assert len(rows) >= 3


def test_candidate_rows_keep_the_users_context_and_each_items_own_fields(planted):
    from ctrgraph.experiments.items import candidate_rows

    arrays, ids = candidate_rows(planted, template=5, n=7)
    te, tr = planted.split("test"), planted.split("train")
    assert ids.size == 7 and np.array_equal(arrays["item_id"], ids)
    for k in ("user_id", "hist_item_id", "hist_cat"):  # the user's context: the template row's
        assert (arrays[k] == np.asarray(te[k])[5]).all()
    for n, item in enumerate(ids):  # the item side: the item's first train row
        first = int(np.flatnonzero(np.asarray(tr["item_id"]) == item)[0])
        for k in ("cat", "tags", "price"):
            assert np.array_equal(arrays[k][n], np.asarray(tr[k])[first])


def _exact_circle_radius(p: np.ndarray) -> float:
    """Smallest enclosing circle in 2-D by brute force: circles on every pair (diameter) and every
    triple (circumcircle) of points, the smallest that holds all points."""
    best = np.inf
    n = len(p)
    cands = []
    for i in range(n):  # reference: loops over pairs and triples
        for j in range(i + 1, n):
            cands.append(((p[i] + p[j]) / 2, np.linalg.norm(p[i] - p[j]) / 2))
            for k in range(j + 1, n):
                a, b, c = p[i], p[j], p[k]
                d = 2 * (a[0] * (b[1] - c[1]) + b[0] * (c[1] - a[1]) + c[0] * (a[1] - b[1]))
                if abs(d) < 1e-12:
                    continue
                ux = ((a @ a) * (b[1] - c[1]) + (b @ b) * (c[1] - a[1]) + (c @ c) * (a[1] - b[1])) / d
                uy = ((a @ a) * (c[0] - b[0]) + (b @ b) * (a[0] - c[0]) + (c @ c) * (b[0] - a[0])) / d
                u = np.array([ux, uy])
                cands.append((u, np.linalg.norm(a - u)))
    for centre, r in cands:
        if np.all(np.linalg.norm(p - centre, axis=1) <= r + 1e-9):
            best = min(best, r)
    return best


def test_envelope_radii_equal_the_smallest_enclosing_ball():
    """Theorem 1's phi(V) per group, against the exact 2-D smallest enclosing circle; all groups at once."""
    rng = np.random.default_rng(0)
    pts, grp, exact = [], [], []
    for g in range(6):
        p = rng.normal(size=(rng.integers(2, 9), 2)) * rng.uniform(0.5, 3) + rng.normal(size=2) * 5
        pts.append(p)
        grp.append(np.full(len(p), g))
        exact.append(_exact_circle_radius(p))
    x, groups = np.concatenate(pts), np.concatenate(grp)
    perm = rng.permutation(len(x))
    got = A.envelope_radii(x[perm], groups[perm], iters=2000)
    exact = np.array(exact)
    assert np.all(got >= exact - 1e-9) and np.all(got <= exact * (1 + 1 / np.sqrt(2000)))
    np.testing.assert_allclose(got, exact, rtol=5e-3)
    # a scaled copy has a scaled radius; the ratios of envelope_summary are scale-free
    emb = rng.normal(size=(40, 3))
    dom = np.repeat([2, 3, 4, 5], 10)
    s1 = A.envelope_summary(emb, dom, np.arange(40))
    s2 = A.envelope_summary(emb * 7, dom, np.arange(40))
    assert s2["r_max"] == pytest.approx(7 * s1["r_max"], rel=1e-3)
    assert s2["r_max_ratio"] == pytest.approx(s1["r_max_ratio"], rel=1e-3) and s1["domains"] == 4
