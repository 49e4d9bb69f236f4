"""``ctrgraph``: datasets, models, train, evaluate, predict, compare, explain, demo, download and the
papers' analysis commands."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import ConfigError, CtrGraphError

DEMO_MODELS = ["lr", "fm", "deepfm", "pnn", "dnn", "din"]


def _overrides(a) -> list[str]:
    ov = []
    if getattr(a, "dataset", None):
        ov.append(f"data.name={a.dataset}")
    if getattr(a, "model", None):
        ov.append(f"model.name={a.model}")
    if getattr(a, "data_dir", None):
        ov.append(f"data.data_dir={a.data_dir}")
    if getattr(a, "seed", None) is not None:
        ov.append(f"train.seed={a.seed}")
    if getattr(a, "device", None):
        ov.append(f"train.device={a.device}")
    return ov + list(a.set or [])


def _config(a):
    from .config import load_config

    return load_config(a.config, _overrides(a))


def cmd_datasets(a) -> int:
    from .data.recipes import RECIPES, _import_all

    _import_all()
    for name, r in sorted(RECIPES.items()):
        tag = " [bundled]" if r.bundled else (" [download]" if r.download else "")
        print(f"{name:<12s}{tag:<12s} {r.description}")
        if a.verbose:
            for k, f in r.params.model_fields.items():
                print(f"    {k} = {f.default!r}  {f.description or ''}")
    return 0


def cmd_models(a) -> int:
    from .embeddings import PROVIDERS
    from .models.base import MODELS, _import_all

    _import_all()
    for name, cls in sorted(MODELS.items()):
        presets = f" presets: {', '.join(sorted(cls.presets))}" if cls.presets else ""
        print(f"{name:<10s} {cls.paper}{presets}")
        if a.verbose:
            for k, f in cls.Config.model_fields.items():
                print(f"    {k} = {f.default!r}")
    print(f"\nembedding providers (use as <provider>-<model>): {', '.join(sorted(PROVIDERS))}")
    return 0


def _print_metrics(res: dict) -> None:
    t, v = res.get("test", {}), res.get("valid", {})
    print(f"model {res['model']} on {res['dataset']} (seed {res['seed']}): best epoch {res['best_epoch']}/"
          f"{res['epochs_run']}, {res['seconds_per_epoch']:.2f} s/epoch, {res['train_samples_per_s']:,.0f} samples/s")
    if v:
        print(f"  valid: AUC {v['auc']:.4f}  logloss {v['logloss']:.4f}")
    if t:
        print(f"  test:  AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  gAUC {t.get('gauc', float('nan')):.4f}")


def cmd_train(a) -> int:
    from .train.run import run_experiment

    cfg = _config(a)
    out = a.out or f"runs/{cfg.data.name}-{cfg.model.name}-seed{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = run_experiment(cfg, out, resume=a.resume)
    res.pop("_model", None)
    _print_metrics(res)
    print(f"run directory: {out}")
    return 0


def cmd_evaluate(a) -> int:
    from .train.run import dataset_for, load_run
    from .train.trainer import evaluate_split

    cfg, model, _, _ = load_run(a.run, a.checkpoint)
    if a.data_dir:
        cfg.data.data_dir = a.data_dir
    data = dataset_for(cfg)
    out = {s: evaluate_split(model, data, s) for s in a.split}
    print(json.dumps(out, indent=1))
    return 0


def cmd_predict(a) -> int:
    from .predict import predict_file

    res = predict_file(a.run, a.input, a.output, sep=a.sep, which=a.checkpoint)
    print(json.dumps(res, indent=1))
    return 0


def cmd_compare(a) -> int:
    from .experiments.compare import print_summary, run_compare

    cfg = _config(a)
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else cfg.compare.models
    if not models:
        raise ConfigError("compare: give --models or a config file with compare.models")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()] if a.seeds else (cfg.compare.seeds or [1, 2, 3])
    except ValueError:
        raise ConfigError(f"--seeds {a.seeds!r}: expected integers separated by commas") from None
    out = a.out or f"runs/compare-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_compare(cfg, models, seeds, out, base=a.base or cfg.compare.base or models[0])
    print()
    print_summary(Path(out))
    print(f"results: {out}/results.csv, {out}/summary.md")
    return 0


def cmd_export(a) -> int:
    from .embeddings.dg_export import export_run

    print(json.dumps(export_run(a.run, a.out, a.checkpoint, a.data_dir), indent=1))
    return 0


def cmd_demo(a) -> int:
    from .config import load_config
    from .experiments.compare import print_summary, run_compare

    ov = ["data.name=movielens", f"train.epochs={a.epochs}"] + list(a.set or [])
    cfg = load_config(None, ov)
    models = [m.strip() for m in a.models.split(",")]
    out = a.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"ctrgraph demo: {', '.join(models)} on the bundled MovieLens latest-small (ml100k-ctr rules), "
          f"seed {cfg.train.seed}, at most {a.epochs} epochs each\n")
    run_compare(cfg, models, [cfg.train.seed], out, base=models[0])
    print()
    print_summary(Path(out))
    print(f"run directories and results.csv: {out}")
    return 0


def cmd_explain(a) -> int:
    from .explain import explain_run, summary_lines

    try:
        rows = [int(r) for r in a.rows.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--rows {a.rows!r}: expected integers separated by commas") from None
    out = Path(a.out or Path(a.run) / "explain")
    table = explain_run(a.run, out, rows, a.split, a.data_dir, a.checkpoint)
    print("\n".join(summary_lines(table, a.top)))
    print(f"written: {out}/explain.csv and {out}/explain_row<k>.png")
    return 0


def cmd_graphfm_analysis(a) -> int:
    """GraphFM's ablations (Fig. 2) and m2 x m3 sweep (Fig. 3): experiments/graphfm_analysis.py."""
    from .config import load_config
    from .experiments import graphfm_analysis as ga

    ov = _overrides(a)
    if not a.model:
        ov.insert(0, "model.name=graphfm")
    cfg = load_config(a.config, ov)
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        m2 = [int(s) for s in a.m2.split(",") if s.strip()]
        m3 = [int(s) for s in a.m3.split(",") if s.strip()]
    except ValueError:
        raise ConfigError("--seeds, --m2 and --m3 take integers separated by commas") from None
    out = Path(a.out)
    if a.what == "ablation":
        ga.ablation(cfg, seeds, out)
    else:
        ga.sweep(cfg, seeds, out, m2, m3)
    print((out / f"{a.what}.md").read_text())
    print(f"written under {out}")
    return 0


def cmd_download(a) -> int:
    from .data.recipes import get_recipe

    r = get_recipe(a.dataset)
    if r.download is None:
        raise ConfigError(f"dataset {a.dataset!r} has no downloader"
                          + (" (it is bundled)" if r.bundled else " (give its files with --data-dir)"))
    dest = Path(a.dest) if a.dest else Path.home() / ".cache" / "ctrgraph" / "raw"
    path = r.download(dest)
    print(f"downloaded to {path}; use --data-dir {path}")
    return 0


def cmd_res_analysis(a) -> int:
    """Res-embedding's tables and figures (experiments/res_analysis.py)."""
    from .config import load_config
    from .experiments import res_analysis as ra

    ov = [o for o in _overrides(a)]
    load_config(a.config, ov)  # fail fast on a bad --set
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {a.seeds!r}: expected integers separated by commas") from None
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    floats = lambda v: [float(x) for x in split(v)] if v else None  # noqa: E731
    st = ra.Setting(a.config, ov, seeds)
    out = Path(a.out)
    if a.what == "table3":
        ra.table3(st, out, split(a.models), split(a.variants), a.r_l2)
        print((out / "table3.md").read_text())
    elif a.what == "table4":
        dims = [int(x) for x in split(a.dims)] if a.dims else None
        ra.table4(st, out, dims, split(a.variants))
        print((out / "table4.md").read_text())
    elif a.what == "fraction":
        ra.fraction(st, out, floats(a.fractions), a.g or "gcn", a.sample_seed)
        print((out / "fraction.md").read_text())
    elif a.what == "tsne":
        rows = ra.tsne_figure(st, out, a.g or "gcn", a.n_items, a.color, iters=a.tsne_iters)
        for r in rows:
            print(f"{r['method']}: intra-{r['colour']} cosine {r['intra_cos']:.4f}, inter {r['inter_cos']:.4f}")
    else:
        ra.lam_sweep(st, out, floats(a.lams), a.g or "att")
        print((out / "lambda.md").read_text())
    print(f"written under {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctrgraph", description="Graph-enhanced CTR prediction: train, compare, serve.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("datasets", help="list data set recipes")
    s.add_argument("-v", "--verbose", action="store_true", help="show parameters")
    s.set_defaults(fn=cmd_datasets)
    s = sub.add_parser("models", help="list models and embedding providers")
    s.add_argument("-v", "--verbose", action="store_true", help="show config fields")
    s.set_defaults(fn=cmd_models)

    def common(s, need_model=True):
        s.add_argument("--dataset", help="recipe name (see `ctrgraph datasets`); default movielens")
        if need_model:
            s.add_argument("--model", help="model name (see `ctrgraph models`), e.g. deepfm or res-din")
        s.add_argument("--config", help="YAML file with data/model/embedding/train sections")
        s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.lr=0.01 (repeatable)")
        s.add_argument("--seed", type=int)
        s.add_argument("--data-dir", help="folder with the raw files of a data set that is not bundled")
        s.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")

    s = sub.add_parser("train", help="train one model")
    common(s)
    s.add_argument("--out", help="run directory (default runs/<dataset>-<model>-seed<k>-<time>)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run from DIR/last.pt")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a trained run on its data set")
    s.add_argument("--run", required=True)
    s.add_argument("--split", nargs="+", default=["test"], choices=["train", "valid", "test"])
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--data-dir")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("predict", help="score a CSV/parquet file with a trained run (writes row,pctr)")
    s.add_argument("--run", required=True)
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--sep", default="|", help="separator of sequence / multi-valued columns")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("compare", help="models x seeds -> mean ± std table (markdown + CSV)")
    common(s, need_model=False)
    s.add_argument("--models", help="comma-separated model names (default: compare.models of --config)")
    s.add_argument("--seeds", help="comma-separated seeds (default: compare.seeds of --config, else 1,2,3)")
    s.add_argument("--base", help="base model of RelaImpr (default: the first model)")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_compare)

    s = sub.add_parser("export", help="write a graph-enhanced (dg-|gcn-|kgat-|hgat-<model>) run's tables as a plain <model> run (serving "
                                      "costs the same as the base model)")
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--data-dir", help="raw files of the run's data set, if not where the run found them")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("demo", help="train and compare models on the bundled MovieLens data (offline)")
    s.add_argument("--models", default=",".join(DEMO_MODELS))
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("explain", help="selected feature interactions and their weights per layer (GraphFM Fig. 4)")
    s.add_argument("--run", required=True, help="run directory of a trained model with explain() (graphfm)")
    s.add_argument("--rows", default="0,1", help="row indices of the split, comma-separated")
    s.add_argument("--split", default="test", choices=["train", "valid", "test"])
    s.add_argument("--top", type=int, default=3, help="neighbours printed per field")
    s.add_argument("--out", help="output folder (default RUN/explain)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--data-dir")
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("graphfm-analysis", help="GraphFM ablations (-S, -I, -M, -K_i) or the m2 x m3 sweep")
    s.add_argument("what", choices=["ablation", "sweep"])
    common(s)
    s.add_argument("--seeds", default="1,2,3")
    s.add_argument("--m2", default="2,4,6,8", help="sweep: values of m2 (m1 = number of fields)")
    s.add_argument("--m3", default="1,2,3,4", help="sweep: values of m3")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_graphfm_analysis)

    sub.add_parser("dg-analysis", add_help=False,  # handled in main(): experiments/dg_analysis.py parses
                   help="DG-ENN's Tables 2-6 and Fig. 1, 3-6 (`ctrgraph dg-analysis -h` for options)")

    s = sub.add_parser("download", help="download a public data set (needs network)")
    s.add_argument("dataset")
    s.add_argument("--dest")
    s.set_defaults(fn=cmd_download)
    s = sub.add_parser("res-analysis", help="Res-embedding's Table 3/4 and Fig. 6/7/8 (tables, CSV, PNG)")
    s.add_argument("what", choices=["table3", "table4", "fraction", "tsne", "lambda"])
    common(s, need_model=False)
    s.add_argument("--seeds", default="1")
    s.add_argument("--out", required=True, help="output folder (runs are reused from OUT/runs)")
    s.add_argument("--models", help="table3: subset of MLP,PNN,DIN")
    s.add_argument("--variants", help="table3/4: subset of plain,+R,+R(res),AVG,GCN,ATT,+Skip-gram,+node2vec")
    s.add_argument("--r-l2", type=float, default=0.006, help="table3 '+R': train.embedding_l2 of the plain tables")
    s.add_argument("--dims", help="table4: embedding dims (default 18,36)")
    s.add_argument("--fractions", help="fraction: train fractions (default 0.1,...,0.9)")
    s.add_argument("--sample-seed", type=int, default=0, help="fraction: seed of the train subsets")
    s.add_argument("--lams", help="lambda: values of lambda (default 0,1e-4,1e-3,6e-3,3e-2,1e-1)")
    s.add_argument("--g", choices=["avg", "gcn", "att"], help="res form (fraction/tsne: gcn, lambda: att)")
    s.add_argument("--n-items", type=int, default=1000, help="tsne: most frequent items shown")
    s.add_argument("--color", help="tsne: item attribute table to colour by (default: first genre)")
    s.add_argument("--tsne-iters", type=int, default=1000)
    s.set_defaults(fn=cmd_res_analysis)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dg-analysis"]:  # its own parser (experiments/dg_analysis.py), -h included
        from .experiments.dg_analysis import main as dg_main

        return dg_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CtrGraphError as e:
        print(f"ctrgraph: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctrgraph: interrupted (resume a training run with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
