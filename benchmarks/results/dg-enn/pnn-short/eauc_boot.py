"""Short vs heavy gain in *expected* AUC (label noise removed) with a user-cluster bootstrap.

    PYTHONPATH=src python benchmarks/results/dg-enn/pnn-short/eauc_boot.py BASE_GLOB DG_GLOB [--ref REF_GLOB] [--B 300] [--out F.jsonl]

Same pairing, buckets (behaviour length < 4 = short) and user resampling as
``synthetic-communities/bootstrap.py``, but each bucket's score is ``ctrgraph.train.metrics.expected_auc``: the
AUC in expectation over Bernoulli(planted probability) labels of the rows, so the only noise left is
which users are in the test set. Gain = mean over seeds of eAUC(dg) - eAUC(base). ``--ref`` (another DG variant, same base) adds the
paired change variant - ref of the short gain, the heavy gain and of short - heavy, resampled with
the same users in every replicate.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

from ctrgraph.data.recipes.synthetic import SyntheticParams, build, true_logit
from ctrgraph.data.schema import Role
from ctrgraph.experiments.dg_sparsity import _read_cfg, history_lengths, score_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "synthetic-communities"))
from bootstrap import user_cluster_sampler  # noqa: E402
from truth_fit import emit, expected_auc  # noqa: E402


def gains(q, base, dg, rows, short) -> np.ndarray:
    """[2] seed-mean eAUC gain (short, heavy) on the row multiset ``rows``."""
    out = np.zeros(2)
    for b, d in zip(base, dg):  # loop over seeds
        for k, m in enumerate((short[rows], ~short[rows])):  # two buckets
            r = rows[m]
            out[k] += expected_auc(d[r], q[r]) - expected_auc(b[r], q[r])
    return out / len(base)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("dg")
    ap.add_argument("--ref")
    ap.add_argument("--B", type=int, default=300)
    ap.add_argument("--out")
    a = ap.parse_args()
    base = sorted(Path(p) for p in glob.glob(a.base))
    dg = sorted(Path(p) for p in glob.glob(a.dg))
    data, sb, sd = score_runs(base, dg)
    params = _read_cfg(base[0]).data.params
    raw = build(SyntheticParams(**dict(params, emit_true_prob=True)))
    te_raw = raw.split == 2
    q = 1.0 / (1.0 + np.exp(-true_logit(raw)[te_raw].astype(np.float64)))
    te = data.split("test")
    if not np.array_equal(np.asarray(te[data.schema.label]), raw.columns["label"][te_raw]):
        raise SystemExit("raw and encoded test rows are not aligned")
    short = history_lengths(data, "hist") < 4
    pb = [s.probs for s in sb]
    pd_ = [s.probs for s in sd]
    pr = None
    if a.ref:
        ref = sorted(Path(p) for p in glob.glob(a.ref))
        _, _, sr = score_runs(base, ref)
        pr = [s.probs for s in sr]
    draw = user_cluster_sampler(np.asarray(te[data.schema.first(Role.USER).name], dtype=np.int64))
    point = gains(q, pb, pd_, np.arange(q.size), short)
    per_seed = [gains(q, [b], [d], np.arange(q.size), short).tolist() for b, d in zip(pb, pd_)]
    rng = np.random.default_rng(0)
    reps = np.empty((a.B, 2))
    reps_ref = np.empty((a.B, 2))
    for i in range(a.B):  # bootstrap replicates
        rows = draw(rng)
        reps[i] = gains(q, pb, pd_, rows, short)
        if pr is not None:
            reps_ref[i] = gains(q, pb, pr, rows, short)
    diff = reps[:, 0] - reps[:, 1]
    pct = lambda x: [float(v) for v in np.percentile(x, [5, 95])]
    res = {"base": a.base, "dg": a.dg, "B": a.B, "eauc_gain_short": float(point[0]), "eauc_gain_heavy": float(point[1]),
           "eauc_gain_short_5_95": pct(reps[:, 0]), "eauc_gain_heavy_5_95": pct(reps[:, 1]),
           "eauc_diff": float(point[0] - point[1]), "eauc_diff_5_95": pct(diff),
           "p_short_gains_more": float((diff > 0).mean()), "per_seed_short_heavy": per_seed}
    if pr is not None:
        pref = gains(q, pb, pr, np.arange(q.size), short)
        dd = diff - (reps_ref[:, 0] - reps_ref[:, 1])
        res.update({"ref": a.ref, "vs_ref_short": float(point[0] - pref[0]), "vs_ref_heavy": float(point[1] - pref[1]),
                    "vs_ref_short_5_95": pct(reps[:, 0] - reps_ref[:, 0]), "vs_ref_heavy_5_95": pct(reps[:, 1] - reps_ref[:, 1]),
                    "vs_ref_diff": float((point[0] - point[1]) - (pref[0] - pref[1])), "vs_ref_diff_5_95": pct(dd)})
    emit(res, a.out)


if __name__ == "__main__":
    main()
