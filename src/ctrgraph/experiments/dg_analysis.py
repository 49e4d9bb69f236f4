"""DG-ENN's comparison tables and ablations as one command each (paper §5.2-5.4), on any recipe:

    ctrgraph dg-analysis table2|table3|table4 --dataset ml100k --data-dir DIR --out OUT [--skip M,...]
    ctrgraph dg-analysis table5|fig3|fig4|fig5|layers --dataset ml100k --data-dir DIR --out OUT
    ctrgraph dg-analysis table6|fig6 --base-runs DIRS --dg-runs DIRS --out OUT   # §5.5, on finished runs
    ctrgraph dg-analysis fig1 --dataset ml100k --data-dir DIR --out OUT          # §1, the data's sparsity

(``table6`` / ``fig6``: Table 6 and Fig. 6, the sparsity case studies, in ``dg_sparsity.py``; ``fig1``:
Fig. 1's feature-frequency and behaviour-length distributions, in ``dg_data_stats.py``.)

Model lists (``table2``, ``table3``, ``table4``; :data:`MODEL_LISTS`): every listed model trained over
the seeds into ``OUT/runs/<model>-seed<k>`` (compare's layout, finished runs reused; ``--skip``
leaves models out, ``--base`` is not used). Every name is resolved before anything trains, so a
model or provider that is not registered (e.g. Table 4's ``gcn``, ``kgat``, ``hgat`` providers)
stops the command with the registry's error.

Provider variants (``table5``, ``fig3``, ``fig4``, ``fig5``, ``layers``; :data:`ANALYSES`): each variant
is ``dg-<base>`` with provider parameters (``embedding.params``), trained over the seeds into
``OUT/<variant>/`` (finished runs are reused); the base model without the graph is the first row.

Both write ``OUT/<what>.md`` and ``OUT/<what>.csv`` (mean ± std of test AUC / logloss over the
seeds, seconds per epoch). The model lists add the paper's significance mark (Table 2: "★ indicates a
statistically significant improvement", Wilcoxon signed-rank test over its 5 runs): for each model x
that is not a DG model (Table 4's gcn-/kgat-/hgat- rows included), the one-sided exact Wilcoxon signed-rank p-value of ``dg-x`` (if listed, else the
table's ``dg-pnn``) beating x in test AUC, paired by seed; ★ where p < 0.05. With n seeds the
smallest attainable p is 2^-n (0.125 for 3 seeds: pass ``--seeds 1,2,3,4,5`` as the paper did).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from ..config import load_config
from ..errors import ConfigError, CtrGraphError
from .compare import run_compare, summarize

#: model-list analyses: (the paper's row label, our model name); DG-ENN = ``dg-pnn`` (paper §5.3.1)
MODEL_LISTS: dict[str, list[tuple[str, str]]] = {
    "table2": [("LR", "lr"), ("FM", "fm"), ("AutoInt+", "autoint+"), ("DeepFM", "deepfm"), ("PNN", "pnn"),
               ("DIN", "din"), ("DIEN", "dien"), ("GIN", "gin"), ("FiGNN", "fignn"), ("DG-ENN", "dg-pnn")],
    "table3": [("PNN", "pnn"), ("DG-PNN", "dg-pnn"), ("DIN", "din"), ("DG-DIN", "dg-din"), ("FiGNN", "fignn"),
               ("DG-FiGNN", "dg-fignn")],
    "table4": [("PNN", "pnn"), ("GCN-PNN", "gcn-pnn"), ("KGAT-PNN", "kgat-pnn"), ("HGAT-PNN", "hgat-pnn"),
               ("DG-PNN", "dg-pnn")],
}

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
                 extra: dict | None = None, log=print, skip: list[str] | None = None) -> list[dict]:
    """Train the models of a model list, or the base model and every variant of a provider
    ablation; returns one summary row per model / variant (``skip``: model-list entries left out)."""
    if what not in ANALYSES and what not in MODEL_LISTS:
        raise ConfigError(f"unknown analysis {what!r}; known: {sorted([*MODEL_LISTS, *ANALYSES])} "
                          f"(table6 and fig6 run on finished runs: `ctrgraph dg-analysis table6 -h`)")
    seeds = seeds or [1, 2, 3]
    out = Path(out)
    common = [f"data.name={dataset}"] + ([f"data.data_dir={data_dir}"] if data_dir else []) + list(overrides or [])
    if what in MODEL_LISTS:
        return _run_models(what, out, common, seeds, skip or [], log)
    if skip:
        raise ConfigError(f"--skip applies to the model lists {sorted(MODEL_LISTS)}, not to {what!r}")
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


def _run_models(what: str, out: Path, common: list[str], seeds: list[int], skip: list[str], log) -> list[dict]:
    """One compare over the model list (all names resolved first, finished runs reused)."""
    entries = MODEL_LISTS[what]
    unknown = sorted(set(skip) - {m for _, m in entries})
    if unknown:
        raise ConfigError(f"--skip {unknown}: not in {what} ({', '.join(m for _, m in entries)})")
    entries = [(label, m) for label, m in entries if m not in skip]
    if not entries:
        raise ConfigError(f"--skip leaves no model of {what}")
    cfg = load_config(None, common + [f"model.name={entries[0][1]}"])
    res = run_compare(cfg, [m for _, m in entries], seeds, out, log=log)
    by = {s["model"]: s for s in summarize(res)}
    rows = [dict(by[m], paper=label, **significance(res, m, [e for _, e in entries])) for label, m in entries]
    _write_models(rows, out, what)
    return rows


def significance(results: list[dict], model: str, listed: list[str]) -> dict:
    """``vs`` (the graph model compared with ``model``: ``dg-<model>`` if listed, else ``dg-pnn``) and ``p``,
    the exact one-sided Wilcoxon signed-rank p-value of ``vs`` having the higher test AUC, paired by seed
    (None for DG models and when fewer than 2 seeds pair up or every difference is 0)."""
    from scipy.stats import wilcoxon

    if model.startswith("dg-"):
        return {"vs": None, "p": None}
    vs = f"dg-{model}" if f"dg-{model}" in listed else "dg-pnn" if "dg-pnn" in listed else None
    if vs is None:
        return {"vs": None, "p": None}
    auc = {(r["model"], r["seed"]): r["test_auc"] for r in results}
    seeds = sorted({sd for m, sd in auc if m == model} & {sd for m, sd in auc if m == vs})
    d = np.array([auc[(vs, sd)] - auc[(model, sd)] for sd in seeds], dtype=float)
    if d.size < 2 or not np.any(d != 0):
        return {"vs": vs, "p": None}
    return {"vs": vs, "p": float(wilcoxon(d, alternative="greater", method="exact").pvalue)}


def _save(md: str, rows: list[dict], fields: list[str], out: Path, what: str) -> str:
    """Write ``OUT/<what>.md`` and ``OUT/<what>.csv`` (the given fields; dicts written as repr)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{what}.md").write_text(md)
    with open(out / f"{what}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(r[k]) if isinstance(r[k], dict) else r[k] for k in fields})
    return md


def _write_models(rows: list[dict], out: Path, what: str) -> str:
    head = ("| paper row | model | runs | test AUC | test logloss | best epoch | s/epoch | graph model better: Wilcoxon p |\n"
            "|---|---|---|---|---|---|---|---|\n")

    def sig(r):
        if r["vs"] is None:
            return "—"
        return f"`{r['vs']}`: " + ("n/a" if r["p"] is None else f"{r['p']:.3f}" + (" ★" if r["p"] < 0.05 else ""))

    body = "".join(
        f"| {r['paper']} | `{r['model']}` | {r['runs']} | {r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} | "
        f"{r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f} | {r['best_epoch_mean']:.1f} | "
        f"{r['seconds_per_epoch']:.2f} | {sig(r)} |\n" for r in rows)
    return _save(head + body, rows, ["paper", "model", "runs", "test_auc_mean", "test_auc_std", "test_logloss_mean",
                                     "test_logloss_std", "best_epoch_mean", "seconds_per_epoch", "vs", "p"], out, what)


def _write(rows: list[dict], out: Path, what: str) -> str:
    head = "| variant | provider params | runs | test AUC | test logloss | s/epoch |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['variant']} | {', '.join(f'{k}={v}' for k, v in r['params'].items()) or '(base model)'} | {r['runs']} | "
        f"{r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} | {r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f} | "
        f"{r['seconds_per_epoch']:.2f} |\n" for r in rows)
    return _save(head + body, rows, ["variant", "params", "runs", "test_auc_mean", "test_auc_std", "test_logloss_mean",
                                     "test_logloss_std", "seconds_per_epoch"], out, what)


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["table6"], ["fig6"]):  # §5.5 case studies on finished runs (dg_sparsity.py)
        from .dg_sparsity import main as sparsity_main

        return sparsity_main(argv)
    if argv[:1] == ["fig1"]:  # §1's data statistics (dg_data_stats.py)
        from .dg_data_stats import main as stats_main

        return stats_main(argv)
    p = argparse.ArgumentParser(prog="ctrgraph dg-analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=sorted([*MODEL_LISTS, *ANALYSES]))
    p.add_argument("--dataset", default="ml100k")
    p.add_argument("--data-dir")
    p.add_argument("--base", default="pnn", help="provider variants: base model wrapped as dg-<base>")
    p.add_argument("--skip", default="", help="model lists (table2-4): comma-separated models to leave out")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run, e.g. train.num_threads=1")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        rows = run_analysis(a.what, a.out, a.dataset, a.data_dir, a.base, [int(s) for s in a.seeds.split(",")], a.set,
                            skip=[m.strip() for m in a.skip.split(",") if m.strip()])
    except CtrGraphError as e:
        print(f"ctrgraph: error: {e}", file=sys.stderr)
        return 2
    print((Path(a.out) / f"{a.what}.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
