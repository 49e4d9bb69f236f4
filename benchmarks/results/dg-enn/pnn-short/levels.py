"""Hypothesis (d) table: expected-AUC levels of pnn / dg-pnn / din / dg-din on short and heavy rows.

    PYTHONPATH=src python benchmarks/results/dg-enn/pnn-short/levels.py TRUTH_JSONL EAUC_DEFAULT_JSONL OUT_DIR

TRUTH_JSONL: truth_fit.py output over RUNS/SETTING/runs/{pnn,dg-pnn,din,dg-din}-seed*;
EAUC_DEFAULT_JSONL: eauc_boot.py output (DG vs base, both models) for the same settings. Adds the
Bayes expected AUC (the planted probability scored against itself). Writes OUT_DIR/levels.{md,csv}.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from truth_fit import expected_auc  # noqa: E402

from ctrgraph.data.recipes.synthetic import SyntheticParams, build, true_logit  # noqa: E402

MODELS = ["pnn", "dg-pnn", "din", "dg-din"]


def bayes(run_glob: str) -> tuple[float, float]:
    run = sorted(Path(run_glob).parent.glob(Path(run_glob).name))[0]
    params = yaml.safe_load((run / "config.yaml").read_text())["data"]["params"]
    r = build(SyntheticParams(**dict(params, emit_true_prob=True)))
    te = r.split == 2
    q = 1.0 / (1.0 + np.exp(-true_logit(r)[te].astype(np.float64)))
    short = r.lengths["hist_item_id"][te] < 4
    return expected_auc(q[short], q[short]), expected_auc(q[~short], q[~short])


def main(truth: str, eauc: str, out: str) -> None:
    lv: dict[str, dict] = {}
    for line in Path(truth).read_text().splitlines():
        d = json.loads(line)
        p = Path(d["runs"])
        lv.setdefault(p.parts[-3], {})[p.name.replace("-seed*", "")] = d
    boot = {}
    for line in Path(eauc).read_text().splitlines():
        d = json.loads(line)
        p = Path(d["dg"])
        boot[(p.parts[-3], p.name.replace("-seed*", ""))] = d
    rows = []
    for s, m in lv.items():  # settings (a handful)
        if not all(k in m for k in MODELS):
            continue
        bs, bh = bayes(m["pnn"]["runs"])
        r = {"setting": s, "bayes_short": bs, "bayes_heavy": bh}
        for k in MODELS:
            r[f"{k}_short"], r[f"{k}_heavy"] = m[k]["eauc_short"], m[k]["eauc_heavy"]
        for k in ("dg-pnn", "dg-din"):
            b = boot.get((s, k), {})
            r[f"{k}_diff"], r[f"{k}_diff_5_95"] = b.get("eauc_diff"), b.get("eauc_diff_5_95")
        rows.append(r)
    O = Path(out)
    O.mkdir(parents=True, exist_ok=True)
    with open(O / "levels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    iv = lambda r, k: "—" if r[f"{k}_diff"] is None else (
        ("**{:+.4f}** [{:+.4f}, {:+.4f}]" if r[f"{k}_diff_5_95"][0] > 0 or r[f"{k}_diff_5_95"][1] < 0
         else "{:+.4f} [{:+.4f}, {:+.4f}]").format(r[f"{k}_diff"], *r[f"{k}_diff_5_95"]))
    L = ["# Expected AUC (label noise removed) on short (behaviour length 0-3) / heavy (>= 4) test rows",
         "", "Mean over seeds 1-3 of the existing runs (/tmp/s4/runs, run.sh defaults). eAUC = AUC in expectation "
         "over Bernoulli(planted probability) labels (truth_fit.py). DIN deficit = pnn - din. short - heavy = "
         "eAUC gain difference, user bootstrap 5-95% (eauc_boot.py, B 300), bold where it excludes 0. "
         "Measured on the shared 2-core machine while other jobs ran.", "",
         "| setting | Bayes s / h | pnn s / h | dg-pnn s / h | din s / h | dg-din s / h | DIN deficit s / h "
         "| dg-din s - pnn s | DG-PNN short - heavy | DG-DIN short - heavy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda k: f"{r[k + '_short']:.4f} / {r[k + '_heavy']:.4f}"
        L.append(f"| {r['setting']} | {f('bayes')} | {f('pnn')} | {f('dg-pnn')} | {f('din')} | {f('dg-din')} | "
                 f"{r['pnn_short'] - r['din_short']:+.4f} / {r['pnn_heavy'] - r['din_heavy']:+.4f} | "
                 f"{r['dg-din_short'] - r['pnn_short']:+.4f} | {iv(r, 'dg-pnn')} | {iv(r, 'dg-din')} |")
    (O / "levels.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main(*sys.argv[1:4])
