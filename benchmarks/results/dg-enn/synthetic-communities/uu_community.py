"""Is the planted community visible in DG-ENN's uu kNN graph (Eq. 8, k = 10, built from the train split
as the dg provider does)? Share of a user's kNN edges that stay in its own community, light vs heavy
users, for alpha_Y = 0.5 (the default), 1 (co-clicks only) and 0 (attributes only).

    PYTHONPATH=src python benchmarks/results/dg-enn/synthetic-communities/uu_community.py
"""
import numpy as np
from ctrgraph.data.recipes import load_dataset
from ctrgraph.data.recipes.synthetic import SyntheticParams, world
from ctrgraph.graphs.from_dataset import user_knn_from_dataset
COMMON = dict(n_instances=60000, n_users=3000, n_items=4000, n_categories=20, n_cities=500, n_brands=500, emit_true_prob=False, attr_zipf=1.5, popularity_exponent=1.5, short_frac=0.5, short_len=3, short_weight=0.0, n_communities=30)
for extra in [dict(short_activity=0.2), dict(short_activity=1.0), dict(short_activity=0.2, community_purity=0.7)]:
    prm = dict(COMMON, **extra)
    ds = load_dataset("synthetic", prm)
    w = world(SyntheticParams(**prm))
    vals = np.asarray(ds.vocabs["user_id"].values)
    n = len(ds.vocabs["user_id"])
    raw = np.full(n, -1); raw[n - vals.size:] = vals  # encoded index -> raw id (leading specials, if any, -1)
    for alpha in (0.5, 1.0, 0.0):
        g = user_knn_from_dataset(ds, k=10, alpha=(alpha, 1 - alpha)).tocsr()
        g.setdiag(0); g.eliminate_zeros()
        rows = np.repeat(np.arange(n), np.diff(g.indptr)); cols = g.indices
        ok = (raw[rows] >= 0) & (raw[cols] >= 0)
        rows, cols = rows[ok], cols[ok]
        same = w.user_community[raw[rows]] == w.user_community[raw[cols]]
        light = w.user_light[raw[rows]]
        deg = np.bincount(rows, minlength=n)
        print(extra, f"alpha_Y={alpha}: same-community share of uu edges: light {same[light].mean():.3f} heavy {same[~light].mean():.3f} (chance {1/30:.3f}); mean degree light {deg[raw>=0][w.user_light[raw[raw>=0]]].mean():.1f} heavy {deg[raw>=0][~w.user_light[raw[raw>=0]]].mean():.1f}")
