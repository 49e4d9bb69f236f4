"""DG-ENN's ablations as one command each (paper §5.3-5.4), on any recipe:

    ctrgraph dg-analysis table5 --dataset ml100k --data-dir DIR --out OUT
    ctrgraph dg-analysis fig3|fig4|fig5|layers|compat ...
    ctrgraph dg-analysis table6|fig6 --base-runs DIRS --dg-runs DIRS --out OUT   # §5.5, on finished runs

(``table6`` / ``fig6``: Table 6 and Fig. 6, the sparsity case studies, in ``dg_sparsity.py``.)

Each variant is ``dg-<base>`` with provider parameters (``embedding.params``), trained over the
seeds into ``OUT/<variant>/`` (compare's layout) (finished
runs are reused); the base model without the graph is the first row. Writes ``OUT/<what>.md`` and
``OUT/<what>.csv`` (mean ± std of test AUC / logloss over the seeds, seconds per epoch).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..config import load_config
from .compare import run_compare, summarize

#: variant name -> provider parameters (relative to the defaults of the ``dg`` provider)
ANALYSES: dict[str, dict[str, dict]] = {
    "table5": {"attribute graph": {"graphs": "attr"}, "uu & vv graph": {"graphs": "uu,vv"},
               "uv graph": {"graphs": "uv"}, "DG (all graphs)": {"graphs": "all"}},
    "fig3": {"GCN": {"aggregator": "gcn"}, "NGCF": {"aggregator": "ngcf"}, "LightGCN": {"aggregator": "lightgcn"}},
    "fig4": {"linear ID+attribute": {"attr_mode": "linear"}, "one mixed attribute graph": {"attr_mode": "mixed"},
             "divide-and-conquer": {"attr_mode": "field"}},
    "fig5": {"element-sum": {"collab": "sum"}, "element-mean": {"collab": "mean"},
             "attention": {"collab": "attention"}, "organized learning": {"collab": "organized"}},
    "layers": {f"L={n}": {"layers": n} for n in (1, 2, 3, 4)},
}


def run_analysis(what: str, out: str | Path, dataset: str = "ml100k", data_dir: str | None = None,
                 base: str = "pnn", seeds: list[int] | None = None, overrides: list[str] | None = None,
                 extra: dict | None = None, log=print) -> list[dict]:
    """Train the base model and every variant of ``what``; returns one summary row per variant."""
    if what not in ANALYSES:
        raise ValueError(f"unknown analysis {what!r}; known: {sorted(ANALYSES)}")
    seeds = seeds or [1, 2, 3]
    out = Path(out)
    common = [f"data.name={dataset}"] + ([f"data.data_dir={data_dir}"] if data_dir else []) + list(overrides or [])
    rows = []
    variants = [(base, None)] + [(name, dict(extra or {}, **p)) for name, p in ANALYSES[what].items()]
    data = None
    for name, params in variants:
        model = base if params is None else f"dg-{base}"
        sets = [f"embedding.params.{k}={v}" for k, v in (params or {}).items()]
        cfg = load_config(None, common + sets + [f"model.name={model}"])
        if data is None:
            from ..train.run import dataset_for

            data = dataset_for(cfg)
        slug = name.lower().replace(" ", "_").replace("&", "and").replace("+", "_").replace("(", "").replace(")", "")
        res = run_compare(cfg, [model], seeds, out / slug, log=log, data=data)  # one encode for all variants
        s = summarize(res)[0]
        s["variant"] = name
        s["params"] = params or {}
        rows.append(s)
    _write(rows, out, what)
    return rows


def _write(rows: list[dict], out: Path, what: str) -> str:
    head = "| variant | provider params | runs | test AUC | test logloss | s/epoch |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['variant']} | {', '.join(f'{k}={v}' for k, v in r['params'].items()) or '(base model)'} | {r['runs']} | "
        f"{r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} | {r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f} | "
        f"{r['seconds_per_epoch']:.2f} |\n" for r in rows)
    md = head + body
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{what}.md").write_text(md)
    with open(out / f"{what}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["variant", "params", "runs", "test_auc_mean", "test_auc_std",
                                          "test_logloss_mean", "test_logloss_std", "seconds_per_epoch"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (r[k] if k != "params" else repr(r[k])) for k in w.fieldnames})
    return md


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["table6"], ["fig6"]):  # §5.5 case studies on finished runs (dg_sparsity.py)
        from .dg_sparsity import main as sparsity_main

        return sparsity_main(argv)
    p = argparse.ArgumentParser(prog="ctrgraph dg-analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=sorted(ANALYSES))
    p.add_argument("--dataset", default="ml100k")
    p.add_argument("--data-dir")
    p.add_argument("--base", default="pnn", help="base model wrapped as dg-<base>")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run, e.g. train.num_threads=1")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    rows = run_analysis(a.what, a.out, a.dataset, a.data_dir, a.base, [int(s) for s in a.seeds.split(",")], a.set)
    print((Path(a.out) / f"{a.what}.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
