"""Short vs heavy users: paired AUC gain DG - base with a user-cluster bootstrap over the test set.

    python benchmarks/results/dg-enn/synthetic-communities/bootstrap.py RUNS_DIR MODEL [--split 4] [--B 500]

RUNS_DIR/runs holds MODEL-seed* and dg-MODEL-seed* (``run.sh``). Rows are split by the test row's
behaviour length (< --split: "short", else "heavy"). Per bucket the gain is the mean over seeds of
AUC(dg, seed) - AUC(base, seed) (as ``dg-analysis fig6``). The seed spread printed by fig6 misses
the test-sample noise (every seed scores the same rows), so we resample test *users* with
replacement (all rows of a drawn user, B replicates; a loop over replicates only) and report the
gains and the difference short - heavy with 5-95% percentiles and P(short gains more).
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from ctrgraph.data.schema import Role
from ctrgraph.experiments.dg_sparsity import history_lengths, score_runs
from ctrgraph.train.metrics import _group_rank_auc


def gains(y, base, dg, rows, groups):
    """[2] seed-mean AUC gain per group (0 short, 1 heavy) on the row multiset ``rows``."""
    g = groups[rows]
    out = np.zeros(2)
    for b, d in zip(base, dg):  # loop over seeds
        ab, _, _ = _group_rank_auc(y[rows], b.probs[rows], g)
        ad, _, _ = _group_rank_auc(y[rows], d.probs[rows], g)
        out += np.asarray(ad[:2]) - np.asarray(ab[:2])
    return out / len(base)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs_dir")
    ap.add_argument("model")
    ap.add_argument("--split", type=int, default=4)
    ap.add_argument("--B", type=int, default=500)
    ap.add_argument("--out")
    a = ap.parse_args()
    r = Path(a.runs_dir) / "runs"
    base = sorted(Path(p) for p in glob.glob(str(r / f"{a.model}-seed*")))
    dg = sorted(Path(p) for p in glob.glob(str(r / f"dg-{a.model}-seed*")))
    data, sb, sd = score_runs(base, dg)
    te = data.split("test")
    y = np.asarray(te[data.schema.label]).astype(np.float64)
    groups = (history_lengths(data, "hist") >= a.split).astype(np.int64)
    draw = user_cluster_sampler(np.asarray(te[data.schema.first(Role.USER).name], dtype=np.int64))
    point = gains(y, sb, sd, np.arange(y.size), groups)
    rng = np.random.default_rng(0)
    reps = np.empty((a.B, 2))
    for b in range(a.B):  # bootstrap replicates
        reps[b] = gains(y, sb, sd, draw(rng), groups)
    diff = reps[:, 0] - reps[:, 1]
    q = lambda x: [float(v) for v in np.percentile(x, [5, 95])]
    res = {"runs": a.runs_dir, "model": a.model, "split": a.split, "B": a.B,
           "rows_short": int((groups == 0).sum()), "rows_heavy": int((groups == 1).sum()),
           "gain_short": float(point[0]), "gain_short_5_95": q(reps[:, 0]),
           "gain_heavy": float(point[1]), "gain_heavy_5_95": q(reps[:, 1]),
           "diff_short_minus_heavy": float(point[0] - point[1]), "diff_5_95": q(diff),
           "p_short_gains_more": float((diff > 0).mean())}
    print(json.dumps(res))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
