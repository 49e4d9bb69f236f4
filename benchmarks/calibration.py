"""Calibration of the bundled data's models: test logloss and ECE before and after post-hoc scaling
(temperature, Platt; fitted on the validation split of the same trained model), against a constant
prediction (the train split's positive rate). Prints one row per model and seed and the means.

    python benchmarks/calibration.py --models din --seeds 1,2,3 [--set train.monitor=logloss]
"""
from __future__ import annotations

import argparse

import numpy as np

from ctrgraph.config import load_config
from ctrgraph.runs.assemble import dataset_for, run_experiment
from ctrgraph.train.calibration import Calibrator, ece, sigmoid
from ctrgraph.train.metrics import logloss
from ctrgraph.train.trainer import predict_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="din")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--dataset", default="movielens")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    print(f"{'model':<8s} {'seed':>4s} {'AUC':>7s} {'constant':>9s} {'raw':>7s} {'temp.':>7s} {'platt':>7s}"
          f" | {'ECE raw':>8s} {'temp.':>7s} {'platt':>7s}   (test logloss | test ECE)")
    for model in a.models.split(","):
        rows = []
        for seed in map(int, a.seeds.split(",")):
            cfg = load_config(None, [f"data.name={a.dataset}", f"model.name={model}", f"train.seed={seed}",
                                     "train.progress=false", *a.set])
            data = dataset_for(cfg)
            res = run_experiment(cfg, None, data=data)
            m = res["_model"]
            z = {k: predict_logits(m, data.split(k), data.schema) for k in ("valid", "test")}
            y = {k: np.asarray(data.split(k)[data.schema.label], dtype=np.float64) for k in z}
            base = float(np.mean(data.split("train")[data.schema.label]))
            const = logloss(y["test"], np.full_like(y["test"], base))
            cals = {k: Calibrator.fit(k, z["valid"], y["valid"]) for k in ("temperature", "platt")}
            pt = {"raw": sigmoid(z["test"]), **{k: sigmoid(c.apply(z["test"])) for k, c in cals.items()}}
            row = [res["test"]["auc"], const] + [logloss(y["test"], p) for p in pt.values()] + \
                [ece(y["test"], p) for p in pt.values()]
            rows.append(row)
            print(f"{model:<8s} {seed:>4d} {row[0]:7.4f} {row[1]:9.4f} {row[2]:7.4f} {row[3]:7.4f} {row[4]:7.4f}"
                  f" | {row[5]:8.4f} {row[6]:7.4f} {row[7]:7.4f}   (T = {1 / cals['temperature'].a:.3f}; "
                  f"a = {cals['platt'].a:.3f}, b = {cals['platt'].b:+.3f})", flush=True)
        r = np.mean(rows, axis=0)
        print(f"{model:<8s} {'mean':>4s} {r[0]:7.4f} {r[1]:9.4f} {r[2]:7.4f} {r[3]:7.4f} {r[4]:7.4f}"
              f" | {r[5]:8.4f} {r[6]:7.4f} {r[7]:7.4f}")


if __name__ == "__main__":
    main()
