"""How well does each trained run recover the planted logit on short vs heavy test rows?

    PYTHONPATH=src python benchmarks/results/dg-enn/pnn-short/truth_fit.py RUN_GLOB [RUN_GLOB ...] [--out F.jsonl]

Every RUN_GLOB (e.g. "/tmp/s4/runs/act01/runs/pnn-seed*") is scored on the test split of its
``synthetic`` data set; the planted logit (``synthetic.true_logit``, regenerated from the run's data
parameters) gives a label-noise-free yardstick: per bucket (behaviour length < 4 "short", else
"heavy") the expected AUC under the planted probabilities (``expected_auc``), the Pearson
correlation of the model's logit with the true logit, and the AUC of the drawn labels, mean over the
runs of the glob. Our choice: the expected AUC is what the label AUC estimates, without the
Bernoulli label noise that dominates on 724 short rows (the user sample remains).
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from ctrgraph.data.recipes.synthetic import SyntheticParams, build, true_logit
from ctrgraph.experiments.dg_sparsity import _read_cfg, history_lengths, load_scoring_model
from ctrgraph.train.metrics import auc, expected_auc  # noqa: F401 (eauc_boot.py imports it from here)
from ctrgraph.train.run import dataset_for
from ctrgraph.train.trainer import predict_logits


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def emit(res: dict, out: str | None) -> None:
    """Print one JSON line and append it to ``out`` when given."""
    print(json.dumps(res))
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(res) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("globs", nargs="+")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cache: dict[str, tuple] = {}
    for g in a.globs:  # loop over run groups (a handful)
        runs = sorted(Path(p) for p in glob.glob(g))
        if not runs:
            raise SystemExit(f"no runs match {g}")
        res = []
        for r in runs:  # loop over seeds
            cfg = _read_cfg(r)
            key = json.dumps(cfg.data.params, sort_keys=True, default=str)
            if key not in cache:
                data = dataset_for(cfg)
                raw = build(SyntheticParams(**dict(cfg.data.params, emit_true_prob=True)))
                te = raw.split == 2
                t = true_logit(raw)[te].astype(np.float64)
                test = data.split("test")
                y = np.asarray(test[data.schema.label]).astype(np.float64)
                if not np.array_equal(y, raw.columns["label"][te].astype(np.float64)):
                    raise SystemExit("raw and encoded test rows are not aligned")
                short = history_lengths(data, "hist") < 4
                cache[key] = (data, test, y, t, short)
            data, test, y, t, short = cache[key]
            z = predict_logits(load_scoring_model(r, data), test, data.schema).astype(np.float64)
            q = 1.0 / (1.0 + np.exp(-t))
            res.append([corr(z[short], t[short]), corr(z[~short], t[~short]),
                        auc(y[short], z[short]), auc(y[~short], z[~short]),
                        expected_auc(z[short], q[short]), expected_auc(z[~short], q[~short])])
        m = np.mean(res, axis=0)
        out = {"runs": g, "n": len(runs), "corr_short": m[0], "corr_heavy": m[1], "auc_short": m[2], "auc_heavy": m[3],
               "eauc_short": m[4], "eauc_heavy": m[5], "eauc_short_per_seed": [x[4] for x in res],
               "eauc_heavy_per_seed": [x[5] for x in res],
               "corr_short_per_seed": [x[0] for x in res], "corr_heavy_per_seed": [x[1] for x in res]}
        emit(out, a.out)


if __name__ == "__main__":
    main()
