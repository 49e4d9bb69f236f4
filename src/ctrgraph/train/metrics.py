"""Metrics with stated definitions, vectorised over accumulated arrays.

- ``auc``: ROC AUC with ties counted one half (Mann-Whitney U with average ranks).
- ``logloss``: mean binary cross-entropy with probabilities clipped to [1e-7, 1 - 1e-7].
- ``gauc``: per-user AUC averaged with weights = the user's number of impressions (DIN's gAUC,
  Zhou et al. 2018 Eq. 7, as FuxiCTR); users whose instances are all one class are skipped.
"""
from __future__ import annotations

import numpy as np


def _group_rank_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None):
    """Per-group tie-aware AUC -> (auc per group, impressions per group, valid mask); ``groups`` None:
    one group.

    Memory (a split of N rows is held whole: AUC over every prediction): the rows' order (8 bytes per
    row), the labels in that order (8) and two flags (2); the rest is per run of tied scores in a
    group: a group's rank sum of positives is sum over runs of (the run's mean global rank x its
    positives) minus (group start x its positives). With 0/1 labels every term is a multiple of 1/2
    below 2^52 (N up to about 60M), so the sums are exact and equal the row-wise ones bit for bit."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n = scores.size
    if groups is None:  # one group: lexsort with a constant key is this stable argsort
        order = np.argsort(scores, kind="stable")
    else:
        groups = np.asarray(groups).ravel()
        order = np.lexsort((scores, groups))
    new_run = np.ones(n, dtype=bool)
    s = scores[order]
    np.not_equal(s[1:], s[:-1], out=new_run[1:])
    del s
    if groups is not None:
        new_group = np.ones(n, dtype=bool)
        g = groups[order]
        np.not_equal(g[1:], g[:-1], out=new_group[1:])
        del g
        new_run |= new_group
        gstart = np.flatnonzero(new_group)
        del new_group
    else:
        gstart = np.zeros(min(n, 1), dtype=np.int64)
    y = np.asarray(labels).ravel()[order].astype(np.float64, copy=False)
    del order
    run_start = np.flatnonzero(new_run)
    del new_run
    run_pos = np.add.reduceat(y, run_start) if n else np.zeros(0)  # positives per run
    del y
    g_run = np.searchsorted(run_start, gstart)  # each group's first run
    # 1-based global mean rank of each run: (start + end - 1) / 2 + 1, times its positives
    mid = np.empty(run_start.size, dtype=np.float64)
    mid[:-1] = run_start[1:]
    mid[-1:] = n
    mid += run_start
    del run_start
    mid -= 1.0
    mid /= 2.0
    mid += 1.0
    mid *= run_pos
    ng = gstart.size
    n_pos = np.add.reduceat(run_pos, g_run) if ng else np.zeros(0)
    r_glob = np.add.reduceat(mid, g_run) if ng else np.zeros(0)
    del mid, run_pos
    r_pos = r_glob - gstart * n_pos  # ranks inside the group: global rank - group start
    n_all = np.diff(np.append(gstart, n)).astype(np.float64)
    n_neg = n_all - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return a, n_all, valid


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    a, _, valid = _group_rank_auc(labels, scores, None)
    return float(a[0]) if valid.size and valid[0] else float("nan")


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    a, w, valid = _group_rank_auc(labels, scores, groups)
    if not valid.any():
        return float("nan")
    return float(np.sum(a[valid] * w[valid]) / np.sum(w[valid]))


def expected_auc(scores: np.ndarray, probs: np.ndarray) -> float:
    """AUC in expectation over labels ~ Bernoulli(probs) (for data with known click probabilities,
    e.g. the synthetic recipe's planted ones): sum over ordered pairs i != j of p_i (1 - p_j)
    [s_i > s_j] (ties 1/2) over sum of p_i (1 - p_j). With 0/1 probabilities it is the AUC. One sort:
    each row's weight times the negative mass scored strictly below it (half of its ties, itself excluded)."""
    score, q = np.asarray(scores, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    o = np.argsort(score, kind="stable")
    s, qq = score[o], q[o]
    neg = 1.0 - qq
    cneg = np.concatenate([[0.0], np.cumsum(neg)])
    lo = np.searchsorted(s, s, side="left")
    hi = np.searchsorted(s, s, side="right")
    below = cneg[lo] + 0.5 * (cneg[hi] - cneg[lo] - neg)
    den = float(qq.sum() * neg.sum() - (qq * neg).sum())
    return float((qq * below).sum()) / den if den > 0 else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """-mean(y log p + (1 - y) log(1 - p)), p clipped; computed in place (three float64 arrays of the
    rows' length), the same operations and values as the expression."""
    y = np.array(labels, dtype=np.float64)  # a copy: written below
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    t = np.log(p)
    t *= y  # y log p
    np.subtract(1, p, out=p)
    np.log(p, out=p)
    np.subtract(1, y, out=y)
    p *= y  # (1 - y) log(1 - p)
    t += p
    return float(-np.mean(t))


def all_metrics(labels: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    from .calibration import ece

    probs = np.array(logits, dtype=np.float64)  # 1 / (1 + exp(-z)) in place, the same operations
    np.negative(probs, out=probs)
    np.exp(probs, out=probs)
    probs += 1.0
    np.divide(1.0, probs, out=probs)
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs), "ece": ece(labels, probs)}
    if groups is not None:
        out["gauc"] = gauc(labels, probs, groups)
    return out
