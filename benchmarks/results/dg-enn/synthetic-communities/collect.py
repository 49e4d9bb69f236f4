"""Collect the per-setting Fig. 6 / Table 6 CSVs of run.sh into one table (summary.md / summary.csv).

    python benchmarks/results/dg-enn/synthetic-communities/collect.py OUTROOT DEST sw0 act comm planted ...
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def main(root: str, dest: str, settings: list[str]) -> None:
    out, md = [], []
    for s in settings:
        for m in ("din", "pnn"):
            p = Path(root) / s / f"fig6-{m}" / "fig6.csv"
            if not p.exists():
                continue
            for r in rows(p):
                out.append({"setting": s, "model": m, **r})
    if not out:
        raise SystemExit("no fig6.csv found")
    keys = list(out[0])
    Path(dest).mkdir(parents=True, exist_ok=True)
    with open(Path(dest) / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(out)
    buckets = list(dict.fromkeys(r["bucket"] for r in out))
    md.append("| setting | model | " + " | ".join(f"hist {b}" for b in buckets) + " |")
    md.append("|---|---|" + "---|" * len(buckets))
    for s in settings:
        for m in ("din", "pnn"):
            cells = {r["bucket"]: r for r in out if r["setting"] == s and r["model"] == m}
            if not cells:
                continue
            fmt = [(f"{float(c['gain_auc']):+.4f} ± {float(c['gain_auc_std']):.4f} ({float(c['rel_gain_auc_pct']):.1f}%)"
                    if (c := cells.get(b)) else "") for b in buckets]
            md.append(f"| {s} | {m} → dg-{m} | " + " | ".join(fmt) + " |")
    md.append("")
    md.append("| setting | model | " + " | ".join(f"hist {b}: rows / base AUC" for b in buckets) + " |")
    md.append("|---|---|" + "---|" * len(buckets))
    for s in settings:
        for m in ("din", "pnn"):
            cells = {r["bucket"]: r for r in out if r["setting"] == s and r["model"] == m}
            if cells:
                md.append(f"| {s} | {m} | " + " | ".join(
                    f"{int(float(c['n']))} / {float(c['base_auc']):.4f}" if (c := cells.get(b)) else "" for b in buckets) + " |")
    (Path(dest) / "summary.md").write_text(
        "# Fig. 6 AUC gain (DG - base, mean ± std over seeds 1-3; RelaImpr) per behaviour-length bucket\n\n"
        "Measured on the shared 2-core machine while other jobs ran.\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
