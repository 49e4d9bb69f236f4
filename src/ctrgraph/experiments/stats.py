"""What a study reports about its runs: mean ± std over seeds, RelaImpr, the paired one-sided
Wilcoxon signed-rank test, metrics per bucket of test rows, and a user-cluster bootstrap.

- RelaImpr (Yan et al. 2014, as DIN and DG-ENN report it): ((AUC(x) - 0.5) / (AUC(base) - 0.5) - 1) x 100%.
- Wilcoxon: the exact one-sided signed-rank p-value of "row ``vs`` has the higher test AUC than
  this row", paired by seed (DG-ENN Table 2's ★: p < 0.05). With n seeds the smallest attainable
  p is 2^-n (0.125 for 3 seeds, 0.031 for the paper's 5 runs).
- Standard deviations are population std (ddof 0) over seeds, as in every earlier table.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..train.metrics import _group_rank_auc, expected_auc


def mean_std(values) -> tuple[float, float]:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if a.size == 0 or np.isnan(a).all():
        return math.nan, math.nan
    return float(np.nanmean(a)), float(np.nanstd(a))


def relaimpr(auc: float, base_auc: float) -> float:
    """RelaImpr in percent of ``auc`` over ``base_auc``."""
    return ((auc - 0.5) / (base_auc - 0.5) - 1) * 100 if base_auc != 0.5 else math.nan


def wilcoxon_greater(better: dict[int, float], worse: dict[int, float]) -> float | None:
    """Exact one-sided Wilcoxon signed-rank p of ``better > worse`` over the seeds both hold (None:
    fewer than 2 pairs, or every difference 0)."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(better) & set(worse))
    d = np.array([better[s] - worse[s] for s in seeds], dtype=float)
    if d.size < 2 or not np.any(d != 0):
        return None
    return float(wilcoxon(d, alternative="greater", method="exact").pvalue)


# ----- buckets of test rows ----------------------------------------------------------------------
def bucket_index(values: np.ndarray, edges) -> np.ndarray:
    """Bucket of each value: 0 for ``v < edges[0]``, b for ``edges[b-1] <= v < edges[b]``,
    ``len(edges)`` for ``v >= edges[-1]``. ``edges`` must be strictly increasing."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or np.any(np.diff(e) <= 0):
        raise ConfigError(f"bucket edges must be a non-empty, strictly increasing list; got {list(edges)}")
    return np.digitize(np.asarray(values, dtype=np.float64), e, right=False)


def bucket_names(edges, lowest: int = 0) -> list[str]:
    """Inclusive integer ranges of the buckets of :func:`bucket_index` ("0", "1-4", ">=100")."""
    lo = [lowest] + [int(e) for e in edges]
    hi = [int(e) - 1 for e in edges]
    names = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(lo[:-1], hi)]
    return names + [f">={lo[-1]}"]


def quantile_edges(values: np.ndarray, n_buckets: int = 5) -> list[int]:
    """Integer edges at the inner quantiles of ``values`` (duplicates and the minimum dropped)."""
    q = np.ceil(np.quantile(values, np.linspace(0, 1, n_buckets + 1)[1:-1])).astype(int)
    e = np.unique(q)
    return [int(x) for x in e[e > np.min(values)]] or [int(np.max(values))]


def grouped_metrics(labels: np.ndarray, probs: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                    n_groups: int, truth: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Metrics of the instances ``rows[k]`` assigned to group ``groups[k]`` (a row may be in several
    groups): ``n``, ``pos_rate``, ``logloss`` (mean BCE, probabilities clipped to [1e-7, 1 - 1e-7]
    as ``metrics.logloss``), ``auc`` (tie-aware, NaN for an empty or one-class group); with
    ``truth`` (planted click probabilities) also ``eauc``, the AUC in expectation over
    Bernoulli(truth) labels (:func:`ctrgraph.train.metrics.expected_auc`; a loop over groups)."""
    rows, groups = np.asarray(rows, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    y = np.asarray(labels, dtype=np.float64)[rows]
    p = np.clip(np.asarray(probs, dtype=np.float64)[rows], 1e-7, 1 - 1e-7)
    n = np.bincount(groups, minlength=n_groups).astype(np.float64)
    pos = np.bincount(groups, weights=y, minlength=n_groups)
    bce = np.bincount(groups, weights=-(y * np.log(p) + (1 - y) * np.log(1 - p)), minlength=n_groups)
    out_auc = np.full(n_groups, np.nan)
    if rows.size:
        a, _, valid = _group_rank_auc(y, p, groups)
        present = np.unique(groups)
        out_auc[present] = np.where(valid, a, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"n": n, "pos_rate": pos / n, "logloss": bce / n, "auc": out_auc}
    if truth is not None:
        q = np.asarray(truth, dtype=np.float64)[rows]
        out["eauc"] = np.array([expected_auc(p[groups == g], q[groups == g]) if n[g] > 1 else np.nan
                                for g in range(n_groups)])
    return out


def user_cluster_sampler(users: np.ndarray):
    """A function ``rng -> row indices`` of one user-cluster bootstrap replicate: as many users as there
    are, drawn with replacement, each bringing all its rows (vectorised: no loop over users)."""
    uniq, inv = np.unique(users, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(uniq.size))
    cnt = np.bincount(inv, minlength=uniq.size)

    def draw(rng) -> np.ndarray:
        pick = rng.integers(0, uniq.size, uniq.size)
        n = cnt[pick]
        return order[np.repeat(starts[pick] - np.cumsum(n) + n, n) + np.arange(n.sum())]

    return draw
