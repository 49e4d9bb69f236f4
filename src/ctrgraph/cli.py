"""``ctrgraph``: datasets, models, train, evaluate, predict, compare, explain, export, demo, download,
``reproduce`` (every table and figure of the implemented papers, declared in
:mod:`ctrgraph.experiments.studies`) and ``tune`` (their tuning grids, :mod:`ctrgraph.experiments.tuning`)."""
from __future__ import annotations

import argparse
import json
import os
import shlex
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


def _ints(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected integers separated by commas") from None


def cmd_datasets(a) -> int:
    from .registry import RECIPES

    for name, r in sorted(RECIPES.items()):
        tag = " [bundled]" if r.bundled else (" [download]" if r.download else "")
        print(f"{name:<12s}{tag:<12s} {r.description}")
        if a.verbose:
            for k, f in r.params.model_fields.items():
                print(f"    {k} = {f.default!r}  {f.description or ''}")
    return 0


def cmd_models(a) -> int:
    from .registry import MODELS, PROVIDERS

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


def _default_out(cfg) -> str:
    """``runs/<dataset>-<model>-seed<k>-<time>``; under torchrun the time part is the job's rendezvous
    id, the same on every process (``--out`` is needed when torchrun runs without one)."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        stamp = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if stamp == "none":
            raise ConfigError("torchrun without --rdzv-id: give --out DIR, the one run directory of every process")
    return f"runs/{cfg.data.name}-{cfg.model.name}-seed{cfg.train.seed}-{stamp}"


def _launch_nproc(a, argv: list[str]) -> int:
    """``ctrgraph train --nproc N ...`` = ``torchrun --standalone --nproc-per-node N -m ctrgraph train ...``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for x in argv:  # the same command without --nproc
        if skip:
            skip = False
        elif x == "--nproc":
            skip = True
        elif not x.startswith("--nproc="):
            rest.append(x)
    try:
        torchrun(["--standalone", f"--nproc-per-node={a.nproc}", "-m", "ctrgraph", *rest])
    except ChildFailedError:  # each rank's own error is printed above
        print(f"ctrgraph: error: a process of the {a.nproc}-process job failed", file=sys.stderr)
        return 1
    return 0


def cmd_train(a) -> int:
    from .runs.assemble import resume_config, run_experiment
    from .train import distributed

    if a.nproc and a.nproc > 1 and not distributed.launched_by_torchrun():
        return _launch_nproc(a, a.argv)
    if a.resume:
        if not a.out:
            raise ConfigError("--resume needs --out DIR: the run directory to continue")
        cfg = resume_config(a.out, a.config, _overrides(a))  # the run's own config.yaml
    else:
        cfg = _config(a)
    out = a.out or _default_out(cfg)
    try:
        res = run_experiment(cfg, out, resume=a.resume, log=lambda s: print(s, flush=True))
    finally:
        distributed.shutdown()
    if not distributed.launched_by_torchrun() or int(os.environ.get("RANK", "0")) == 0:
        res.pop("_model", None)
        if res.get("interrupted"):
            print(f"stopped after epoch {res['epochs_run']} (train.time_limit_minutes); continue with: "
                  f"ctrgraph train --resume --out {out}")
        else:
            _print_metrics(res)
        print(f"run directory: {out}")
    return 0


def cmd_evaluate(a) -> int:
    from .runs.assemble import dataset_for, load_calibrator, load_run
    from .train.trainer import predict_logits, split_metrics

    cfg, model, _, _ = load_run(a.run, a.checkpoint)
    cal = load_calibrator(a.run)
    if a.data_dir:
        cfg.data.data_dir = a.data_dir
    data = dataset_for(cfg)
    out, curves = {}, {}
    for s in a.split:
        z = predict_logits(model, data.split(s), data.schema)
        out[s] = split_metrics(data, s, z)
        curves[s] = [("model", z)]
        if cal is not None:  # the run's calibration: metrics (ECE included) before and after
            out[s] = {"uncalibrated": out[s], f"calibrated ({cal.method})": split_metrics(data, s, cal.apply(z))}
            curves[s].append((f"calibrated ({cal.method})", cal.apply(z)))
    print(json.dumps(out, indent=1))
    if a.reliability:
        from .runs.reliability import reliability_figure

        path = reliability_figure(a.reliability, data, curves, title=f"{a.run}: reliability")
        print(f"reliability diagram: {path} (and {path.with_suffix('.csv')})")
    return 0


def cmd_predict(a) -> int:
    from .runs.predict import predict_file

    res = predict_file(a.run, a.input, a.output, sep=a.sep, which=a.checkpoint)
    # valid JSON: an undefined metric (one class in the labels) is null, not NaN
    print(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in res.items()}, indent=1))
    return 0


def cmd_verify(a) -> int:
    from .train.run_files import RunFiles

    bad = 0
    for run in a.runs:
        files = RunFiles(run)
        if a.adopt:
            done = files.adopt()
            print(f"{run}: recorded {len(done)} files in {files.path}")
            continue
        if not files.exists():
            print(f"{run}: no checksums.json (written by an older ctrgraph?); `ctrgraph verify --adopt {run}` "
                  f"records its files if you trust them")
            bad += 1
            continue
        for rel, status in files.check_all():
            if status != "ok" or a.verbose:
                print(f"{run}/{rel}: {status}")
            bad += status in ("missing", "modified")
        print(f"{run}: {'ok' if not bad else 'FAILED'}")
    return 1 if bad else 0


def cmd_serve(a) -> int:
    try:
        import uvicorn

        from .serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"ctrgraph serve needs FastAPI and uvicorn: pip install 'ctrgraph[serve]' ({e})") from None
    app = create_app(a.run, max_rows=a.max_rows, which=a.checkpoint)
    print(f"serving {a.run} on http://{a.host}:{a.port} (POST /score, /score/batch; GET /health, /schema, /metrics)",
          flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level)
    return 0


def cmd_compare(a) -> int:
    from .experiments.compare import print_summary, run_compare

    cfg = _config(a)
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else cfg.compare.models
    if not models:
        raise ConfigError("compare: give --models or a config file with compare.models")
    seeds = _ints(a.seeds, "--seeds") or cfg.compare.seeds or [1, 2, 3]
    out = a.out or f"runs/compare-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_compare(cfg, models, seeds, out, base=a.base or cfg.compare.base or models[0])
    print()
    print_summary(Path(out))
    print(f"results: {out}/results.csv, {out}/summary.md")
    return 0


def cmd_export(a) -> int:
    if a.format in ("torchscript", "onnx"):
        from .runs.model_export import export_model

        print(json.dumps(export_model(a.run, a.out, a.format, a.checkpoint), indent=1))
        return 0
    from .runs.export import export_run

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
    from .runs.explain import explain_run, summary_lines

    rows = _ints(a.rows, "--rows") or []
    out = Path(a.out or Path(a.run) / "explain")
    table = explain_run(a.run, out, rows, a.split, a.data_dir, a.checkpoint)
    print("\n".join(summary_lines(table, a.top)))
    print(f"written: {out}/explain.csv and {out}/explain_row<k>.png")
    return 0


def cmd_download(a) -> int:
    from .registry import get_recipe

    r = get_recipe(a.dataset)
    if r.download is None:
        raise ConfigError(f"dataset {a.dataset!r} has no downloader"
                          + (" (it is bundled)" if r.bundled else " (give its files with --data-dir)"))
    dest = Path(a.dest) if a.dest else Path.home() / ".cache" / "ctrgraph" / "raw"
    path = r.download(dest)
    print(f"downloaded to {path}; use --data-dir {path}")
    return 0


def cmd_reproduce(a) -> int:
    """Every table and figure of the implemented papers (experiments/studies): ``--list`` shows them."""
    from .experiments.core import Context, plan, run_study
    from .experiments.studies import STUDIES, get_study

    if a.list or not a.paper:
        for st in STUDIES.values():
            print(f"{st.paper}: {st.title} ({st.doc})")
            per, _ = plan(st.items, Context(Path("."), defaults=st.defaults))
            for it in st.items:
                runs = per[it.name]
                what = f"{len(runs)} runs, seeds {','.join(map(str, sorted({r.seed for r in runs})))}" if runs \
                    else "no training"
                print(f"  {it.name:<22s} {it.title} [{what}]")
        if not a.list:
            print("\nusage: ctrgraph reproduce <paper> [<table-or-figure> ...] [--seeds] [--data-dir] [--out]")
        return 0
    study = get_study(a.paper)
    for n in a.items:
        study.item(n)  # unknown names fail before any work
    out = Path(a.out or f"runs/reproduce-{a.paper}")
    ctx = Context(out, sets=list(a.set or []), data_dir=a.data_dir, seeds=_ints(a.seeds, "--seeds"),
                  only=a.only, datasets=a.datasets)
    opts = [("--seeds", a.seeds)] + [("--only", x) for x in a.only or []] + \
        [("--datasets", x) for x in a.datasets or []] + [("--set", x) for x in a.set or []]
    command = " ".join(["ctrgraph", "reproduce", a.paper, *a.items] +
                       [f"{k} {shlex.quote(v)}" for k, v in opts if v])
    entries = run_study(study, a.items, ctx, command=command, dry_run=a.dry_run)
    if a.dry_run:
        return 0
    for e in entries:
        for t in e["tables"]:
            print()
            print((out / t["md"]).read_text())
    print(f"tables, figures and run directories under {out}; report: {out / 'report.html'}")
    return 0


def _tune_budget(a) -> None:
    if a.trials is not None and a.trials < 0:
        raise ConfigError(f"--trials {a.trials}: expected a number >= 0")
    if a.timeout is not None and a.timeout <= 0:
        raise ConfigError(f"--timeout {a.timeout}: expected minutes > 0")


def _tune_config(a) -> int:
    """``ctrgraph tune --config FILE --space-file SPACE.yaml``: a search over one's own configuration."""
    from .experiments.core import Context
    from .experiments.tuning import tune_config

    if a.paper or a.space:
        raise ConfigError("tune: give either <paper> <space> or --space-file (with --config / --set), not both")
    if a.datasets:
        raise ConfigError("tune --space-file: the data set is the configuration's (--dataset or data.name)")
    cfg = _config(a)
    out = Path(a.out or f"runs/tune-{cfg.data.name}-{cfg.model.name}")
    ctx = Context(out, seeds=_ints(a.seeds, "--seeds"), log=lambda s: print(s, flush=True))
    command = " ".join(["ctrgraph", "tune"] + [shlex.quote(x) for x in a.argv[1:]])
    results = tune_config(cfg, a.space_file, ctx, a.trials, a.timeout, not a.no_final, command)
    _print_tune(out, "config", results[0].space.name, results)
    return 0


def _print_tune(out: Path, paper: str, space: str, results: list) -> None:
    for name in (f"tune-{space}", f"tune-{space}-chosen"):
        md = out / paper / f"{name}.md"
        if md.exists() and any(r.trials for r in results):
            print()
            print(md.read_text())
    print(f"tuning studies under {out / 'tuning'}; run directories under {out / 'runs'}; report: {out / 'report.html'}")


def cmd_tune(a) -> int:
    """A paper's tuning grid with a budget (experiments/tuning.py): ``--list`` shows the spaces."""
    from .experiments.core import Context
    from .experiments.studies import STUDIES, get_study

    _tune_budget(a)
    if a.space_file:
        return _tune_config(a)
    if a.config or a.dataset or a.model:
        raise ConfigError("tune <paper> <space>: --config / --dataset / --model go with --space-file (a paper's space "
                          "tunes its own row; change it with --set)")
    if a.list or not a.paper or not a.space:
        for st in STUDIES.values():
            for sp in st.spaces:
                size = f"{sp.grid_size()}-point grid" if sp.grid_size() else "TPE over ranges"
                print(f"{st.paper + ' ' + sp.name:<28s} {sp.title} [{size}, default budget {sp.budget(None)} trials; "
                      f"chosen config over seeds {','.join(map(str, sp.seeds))}; data sets "
                      f"{', '.join(d.label for d in sp.datasets)}]")
        if not a.list:
            print("\nusage: ctrgraph tune <paper> <space> [--trials N] [--timeout MIN] [--datasets LABEL] [--seeds] "
                  "[--set] [--data-dir] [--out]")
        return 0
    study = get_study(a.paper)
    study.space(a.space)  # an unknown name fails before any work
    out = Path(a.out or f"runs/reproduce-{a.paper}")
    ctx = Context(out, sets=list(a.set or []), data_dir=a.data_dir, seeds=_ints(a.seeds, "--seeds"),
                  datasets=a.datasets, log=lambda s: print(s, flush=True))
    opts = [("--trials", a.trials), ("--timeout", a.timeout), ("--seeds", a.seeds)] + \
        [("--datasets", x) for x in a.datasets or []] + [("--set", x) for x in a.set or []]
    command = " ".join(["ctrgraph", "tune", a.paper, a.space] +
                       [f"{k} {shlex.quote(str(v))}" for k, v in opts if v is not None])
    from .experiments.tuning import tune

    results = tune(study, a.space, ctx, trials=a.trials, timeout_min=a.timeout, final=not a.no_final,
                   command=command)
    _print_tune(out, a.paper, a.space, results)
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
    s.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out DIR from its last.pt, with its own config.yaml "
                        "(options that change the run are refused)")
    s.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training in N processes on this machine (= torchrun --standalone "
                        "--nproc-per-node N -m ctrgraph train ...; docs/distributed.md)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a trained run on its data set")
    s.add_argument("--run", required=True)
    s.add_argument("--split", nargs="+", default=["test"], choices=["train", "valid", "test"])
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--data-dir")
    s.add_argument("--reliability", metavar="PNG", help="write a reliability diagram (and its CSV) of each split")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("predict", help="score a CSV/parquet file with a trained run (writes row,pctr)")
    s.add_argument("--run", required=True)
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--sep", default="|", help="separator of sequence / multi-valued columns")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("serve", help="HTTP scoring service for a trained run or an export (FastAPI + uvicorn)")
    s.add_argument("--run", required=True, help="a run directory, or an export of --format torchscript / onnx")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-rows", type=int, default=10_000, help="rows per batch request (more: 413)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--log-level", default="warning")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("verify", help="check run directories against their checksum manifests",
                       description="Check every file of each run directory against its checksums.json "
                                   "(exit 1 on a missing or modified file); --adopt records the files of a "
                                   "directory written by an older ctrgraph, once you trust it.")
    s.add_argument("runs", nargs="+", metavar="RUN")
    s.add_argument("--adopt", action="store_true", help="write checksums.json for directories without one")
    s.add_argument("-v", "--verbose", action="store_true", help="list every file, not only the bad ones")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("compare", help="models x seeds -> mean ± std table (markdown + CSV)")
    common(s, need_model=False)
    s.add_argument("--models", help="comma-separated model names (default: compare.models of --config)")
    s.add_argument("--seeds", help="comma-separated seeds (default: compare.seeds of --config, else 1,2,3)")
    s.add_argument("--base", help="base model of RelaImpr (default: the first model)")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_compare)

    s = sub.add_parser("export", help="a graph-enhanced (dg-|gcn-|kgat-|hgat-<model>) run's tables as a plain <model> run "
                                      "(serving costs the same as the base model), or any run as TorchScript or ONNX")
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--checkpoint", default="best", choices=["best", "last"])
    s.add_argument("--data-dir", help="raw files of the run's data set, if not where the run found them")
    s.add_argument("--format", default="run", choices=["run", "torchscript", "onnx"],
                   help="run: a graph-enhanced run as a plain run (default); torchscript / onnx: any run as "
                        "model.ts / model.onnx + its vocabularies and calibration, checked against the eager model "
                        "(ctrgraph serve and runs.model_export.ExportedScorer serve it)")
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

    s = sub.add_parser("reproduce", help="a paper's tables and figures (`ctrgraph reproduce --list`)",
                       description="Train what the paper's tables and figures need (finished runs are reused, "
                                   "interrupted ones resumed; identical configurations share one run directory), "
                                   "write each as markdown + CSV (+ PNG) under OUT/<paper>/ and one HTML report "
                                   "OUT/report.html.")
    s.add_argument("paper", nargs="?", help="the paper: dg-enn, graphfm, res-embedding, deminet, egin (`--list` shows each one's tables and figures)")
    s.add_argument("items", nargs="*", help="tables / figures (default: all of the paper's)")
    s.add_argument("--list", action="store_true", help="list the papers and their tables and figures")
    s.add_argument("--seeds", help="comma-separated seeds for every item (default: each item's own)")
    s.add_argument("--data-dir", help="folder holding the data sets (e.g. ../shared/data, with ml-100k/ inside)")
    s.add_argument("--out", help="output folder (default runs/reproduce-<paper>); runs go to OUT/runs")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override for every run, e.g. train.num_threads=1 (a row's own overrides still win)")
    s.add_argument("--only", action="append", metavar="LABEL", help="only rows with this label (shell pattern; "
                                                                     "repeatable)")
    s.add_argument("--datasets", action="append", metavar="LABEL", help="only these data sets (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="list the runs (finished, interrupted, to train) and stop")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("tune", help="a paper's tuning grid with a budget (Optuna; `ctrgraph tune --list`)",
                       description="Search a paper's grid (grid sampler) or ranges (TPE) declared beside its study, "
                                   "selecting on the validation metric only; the Optuna study is keyed by the resolved "
                                   "base configuration + the space and stored under OUT/tuning/, so the same command "
                                   "again resumes it (finished trials and finished runs are reused). The chosen "
                                   "configuration is then re-run over the paper's seeds and its test metrics reported "
                                   "as mean ± std. Needs pip install 'ctrgraph[tune]'. docs/tuning.md")
    s.add_argument("paper", nargs="?", help="dg-enn, graphfm or res-embedding")
    s.add_argument("space", nargs="?", help="the paper's tuning space (`--list`)")
    s.add_argument("--space-file", metavar="YAML", help="instead of <paper> <space>: a space in a YAML file over your "
                                                          "own configuration (--config, --dataset, --model, --set; "
                                                          "docs/tuning.md)")
    s.add_argument("--config", help="with --space-file: the base configuration (YAML)")
    s.add_argument("--dataset", help="with --space-file: the recipe")
    s.add_argument("--model", help="with --space-file: the model")
    s.add_argument("--list", action="store_true", help="list the tuning spaces")
    s.add_argument("--trials", type=int, metavar="N",
                   help="finished trials the study should hold (default: the space's; a resumed study runs only "
                        "the missing ones)")
    s.add_argument("--timeout", type=float, metavar="MIN",
                   help="wall-clock minutes of this call's search (checked before each trial; the chosen "
                        "configuration's seed runs come after it)")
    s.add_argument("--seeds", help="seeds of the chosen configuration's runs (default: the space's, the paper's "
                                   "repeats)")
    s.add_argument("--no-final", action="store_true", help="stop after the search (no seed re-runs)")
    s.add_argument("--datasets", action="append", metavar="LABEL", help="only these data sets of the space "
                                                                         "(repeatable)")
    s.add_argument("--data-dir", help="folder holding the data sets (e.g. ../shared/data)")
    s.add_argument("--out", help="output folder (default runs/reproduce-<paper>, shared with `ctrgraph reproduce` so "
                                 "identical runs are reused; --space-file: runs/tune-<dataset>-<model>)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override of the base configuration (part of the study key; a trial's values win)")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("download", help="download a public data set (needs network)")
    s.add_argument("dataset")
    s.add_argument("--dest")
    s.set_defaults(fn=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except CtrGraphError as e:
        print(f"ctrgraph: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctrgraph: interrupted (train: resume with --resume; reproduce / compare / tune: run the same command "
              "again, finished runs are reused and the interrupted one resumes)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
