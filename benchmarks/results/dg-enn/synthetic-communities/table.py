"""Build the short-vs-heavy summary (md + csv) from run.sh outputs and bootstrap.py lines.

    python benchmarks/results/dg-enn/synthetic-communities/table.py OUTROOT BOOT.jsonl DEST SETTING [SETTING ...]

Per setting: test rows short (behaviour length 0-3) / heavy (>= 4), Bayes AUC of each group (AUC
of the planted true probability, regenerated from the parameters in the run's config), base and
DG AUC per group (``fig6-MODEL-pooled/fig6.csv``, mean over seeds 1-3), the gain DG - base
(RelaImpr) and the bootstrap difference short - heavy (5-95%, P(short gains more)).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from ctrgraph.data.recipes.synthetic import SyntheticParams, build
from ctrgraph.train.metrics import auc


def bayes(root: Path, setting: str) -> tuple[float, float]:
    run = next((root / setting / "runs").glob("pnn-seed*"))
    params = yaml.safe_load((run / "config.yaml").read_text())["data"]["params"]
    r = build(SyntheticParams(**dict(params, emit_true_prob=True)))
    te = r.split == 2
    y, q, short = r.columns["label"][te], r.columns["true_prob"][te], r.lengths["hist_item_id"][te] < 4
    return auc(y[short], q[short]), auc(y[~short], q[~short])


def main(root: str, boot: str, dest: str, settings: list[str]) -> None:
    R = Path(root)
    bl = {}
    for line in Path(boot).read_text().splitlines():
        r = json.loads(line)
        bl[(Path(r["runs"]).name, r["model"])] = r  # the last line of a (setting, model) wins
    out = []
    for s in settings:
        bs, bh = bayes(R, s)
        for m in ("din", "pnn"):
            rows = {r["bucket"]: r for r in csv.DictReader(open(R / s / f"fig6-{m}-pooled" / "fig6.csv"))}
            sh, hv = rows["0-3"], rows[">=4"]
            b = bl.get((s, m), {})
            out.append({
                "setting": s, "model": m, "rows_short": int(float(sh["n"])), "rows_heavy": int(float(hv["n"])),
                "bayes_short": bs, "bayes_heavy": bh,
                "base_short": float(sh["base_auc"]), "dg_short": float(sh["dg_auc"]),
                "base_heavy": float(hv["base_auc"]), "dg_heavy": float(hv["dg_auc"]),
                "gain_short": float(sh["gain_auc"]), "gain_short_seed_std": float(sh["gain_auc_std"]),
                "relaimpr_short_pct": float(sh["rel_gain_auc_pct"]),
                "gain_heavy": float(hv["gain_auc"]), "gain_heavy_seed_std": float(hv["gain_auc_std"]),
                "relaimpr_heavy_pct": float(hv["rel_gain_auc_pct"]),
                "diff": b.get("diff_short_minus_heavy", np.nan),
                "diff_5": (b.get("diff_5_95") or [np.nan])[0], "diff_95": (b.get("diff_5_95") or [np.nan, np.nan])[1],
                "p_short_gains_more": b.get("p_short_gains_more", np.nan), "bootstrap_B": b.get("B", 0)})
    Path(dest).mkdir(parents=True, exist_ok=True)
    with open(Path(dest) / "short-vs-heavy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)
    md = ["| setting | model | rows short / heavy | Bayes AUC short / heavy | base AUC short / heavy | DG AUC short / heavy "
          "| gain short (RelaImpr) | gain heavy (RelaImpr) | short - heavy [5%, 95%] | P(short > heavy) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out:
        md.append(f"| {r['setting']} | {r['model']} → dg-{r['model']} | {r['rows_short']} / {r['rows_heavy']} "
                  f"| {r['bayes_short']:.4f} / {r['bayes_heavy']:.4f} | {r['base_short']:.4f} / {r['base_heavy']:.4f} "
                  f"| {r['dg_short']:.4f} / {r['dg_heavy']:.4f} "
                  f"| {r['gain_short']:+.4f} ± {r['gain_short_seed_std']:.4f} ({r['relaimpr_short_pct']:.1f}%) "
                  f"| {r['gain_heavy']:+.4f} ± {r['gain_heavy_seed_std']:.4f} ({r['relaimpr_heavy_pct']:.1f}%) "
                  f"| {r['diff']:+.4f} [{r['diff_5']:+.4f}, {r['diff_95']:+.4f}] | {r['p_short_gains_more']:.2f} |")
    (Path(dest) / "short-vs-heavy.md").write_text(
        "# Short (behaviour length 0-3) vs heavy (>= 4) test rows: AUC gain DG - base\n\n"
        "Mean over seeds 1-3 (± std of the per-seed paired gains); short - heavy: difference of the gains with a "
        "user-cluster bootstrap of the test set (bootstrap.py, B replicates, 5-95% percentiles). Bayes AUC: AUC of "
        "the planted true probability. Measured on the shared 2-core machine while other jobs ran.\n\n"
        + "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
