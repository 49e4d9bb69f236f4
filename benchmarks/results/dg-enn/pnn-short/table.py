"""Variant table of docs/dg-enn-pnn-short.md from the jsonl files of bootstrap.py / eauc_boot.py.

    python benchmarks/results/dg-enn/pnn-short/table.py VARIANT_ROOT OUT_DIR

VARIANT_ROOT/SETTING/VARIANT/summary.md (``ctrgraph compare``) gives the overall test AUC;
VARIANT_ROOT/bootstrap.jsonl (label AUC, user bootstrap) and VARIANT_ROOT/eauc_var.jsonl (expected
AUC, user bootstrap) the short / heavy gains against the base ``pnn`` runs. The ``default`` rows
are the same commands on the existing dg-pnn runs (VARIANT_ROOT/eauc_default.jsonl and the
synthetic-communities bootstrap.jsonl). Writes OUT_DIR/variants.{md,csv}.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

PARAMS = {"default": "(defaults: graphs=all, knn_k 10, knn_alpha 0.5, isolated zero, layers 2, prior bias)",
          "none": "graphs=none", "uv": "graphs=uv", "uu-vv": "graphs=uu,vv", "uu": "graphs=uu", "vv": "graphs=vv",
          "attr": "graphs=attr", "cf": "graphs=uu,vv,uv", "nouu": "graphs=attr,vv,uv", "novv": "graphs=attr,uu,uv",
          "attr-uv": "graphs=attr,uv", "uu-uv": "graphs=uu,uv", "isokeep": "isolated=keep",
          "a02": "knn_alpha=0.2", "k20": "knn_k=20", "a02k20": "knn_alpha=0.2, knn_k=20",
          "leaveout": "knn_leave_out=true", "L1": "layers=1", "L3": "layers=3", "uvt0": "uv_targets=false",
          "nopb": "train.prior_bias=false (graphs all)", "cf-isokeep": "graphs=uu,vv,uv, isolated=keep",
          "cf-nopb": "graphs=uu,vv,uv, train.prior_bias=false", "novv-isokeep": "graphs=attr,uu,uv, isolated=keep"}
ORDER = list(PARAMS)
SETTINGS = ["act01", "sa01-d1", "planted-d1", "sa01", "planted", "act", "act-d1", "act-d2", "planted-d2", "pur07"]


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def overall_auc(summary: Path) -> str:
    for line in summary.read_text().splitlines():
        if line.startswith("| dg-pnn | 3"):
            return line.split("|")[3].strip()
    return "?"


def main(root: str, out: str) -> None:
    R, O = Path(root), Path(out)
    lab = {}
    for d in load(R / "bootstrap.jsonl"):  # runs = ROOT/SETTING-VARIANT: the longest known setting prefix
        name = Path(d["runs"]).name
        s = max((x for x in SETTINGS if name.startswith(x + "-")), key=len)
        lab[(s, name[len(s) + 1:])] = d
    for d in load(Path(__file__).resolve().parent.parent / "synthetic-communities" / "bootstrap.jsonl"):
        if d["model"] == "pnn":
            lab.setdefault((Path(d["runs"]).name, "default"), d)
    eauc = {}
    for d in load(R / "eauc_var.jsonl"):
        p = Path(d["dg"]).parts  # /tmp/s5_pnn/S/V/runs/dg-pnn-seed*
        eauc[(p[-4], p[-3])] = d
    for d in load(R / "eauc_default.jsonl"):
        if "dg-pnn" in d["dg"]:
            eauc.setdefault((Path(d["dg"]).parts[-3], "default"), d)
    rows = []
    for s in SETTINGS:  # a handful of settings x variants
        for v in ORDER:
            if (s, v) not in eauc and (s, v) not in lab:
                continue
            l, e = lab.get((s, v), {}), eauc.get((s, v), {})
            summ = R / s / v / "summary.md"
            if not summ.exists():
                summ = Path(f"/tmp/s4/runs/{s}/summary.md")
                auc = next((x.split("|")[3].strip() for x in summ.read_text().splitlines()
                            if x.startswith("| dg-pnn | 3")), "?") if summ.exists() else "?"
            else:
                auc = overall_auc(summ)
            rows.append({"setting": s, "variant": v, "params": PARAMS[v], "test_auc": auc,
                         "gain_short": l.get("gain_short"), "gain_heavy": l.get("gain_heavy"),
                         "diff": l.get("diff_short_minus_heavy"), "diff_5": (l.get("diff_5_95") or [None])[0],
                         "diff_95": (l.get("diff_5_95") or [None, None])[1],
                         "egain_short": e.get("eauc_gain_short"), "egain_heavy": e.get("eauc_gain_heavy"),
                         "ediff": e.get("eauc_diff"), "ediff_5": (e.get("eauc_diff_5_95") or [None])[0],
                         "ediff_95": (e.get("eauc_diff_5_95") or [None, None])[1],
                         "p_short_more_eauc": e.get("p_short_gains_more")})
    O.mkdir(parents=True, exist_ok=True)
    with open(O / "variants.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    f4 = lambda x: "—" if x is None else f"{x:+.4f}"
    iv = lambda a, b: "" if a is None else f" [{a:+.4f}, {b:+.4f}]"
    bold = lambda a, b, t: f"**{t}**" if a is not None and (a > 0 or b < 0) else t
    lines = ["# DG-PNN variants: short (behaviour length 0-3) vs heavy (>= 4) test rows, gain over base pnn",
             "", "Mean over seeds 1-3 (base: the existing `pnn` runs of the setting). Label AUC: bootstrap.py of "
             "synthetic-communities (user bootstrap, B 300). Expected AUC (eAUC): eauc_boot.py (AUC in expectation "
             "over the planted probabilities, user bootstrap, B 300). Bold: 5-95% interval excludes 0. "
             "Measured on the shared 2-core machine while other jobs ran.", "",
             "| setting | variant | params | test AUC (all rows) | label-AUC gain short / heavy | short - heavy [5%, 95%] "
             "| eAUC gain short / heavy | eAUC short - heavy [5%, 95%] |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['variant']} | {r['params']} | {r['test_auc']} | {f4(r['gain_short'])} / "
                     f"{f4(r['gain_heavy'])} | {bold(r['diff_5'], r['diff_95'], f4(r['diff']) + iv(r['diff_5'], r['diff_95']))} | "
                     f"{f4(r['egain_short'])} / {f4(r['egain_heavy'])} | "
                     f"{bold(r['ediff_5'], r['ediff_95'], f4(r['ediff']) + iv(r['ediff_5'], r['ediff_95']))} |")
    (O / "variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
