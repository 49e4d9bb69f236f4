"""Models x seeds -> results.csv (one row per run) and a summary table (markdown + CSV).

Every number in the tables is read back from run directories (``DIR/runs/<model>-seed<k>/
metrics.json``), so a table can always be regenerated; finished runs are reused, not retrained.
RelaImpr (Yan et al. 2014, as in DIN/DG-ENN): ((AUC(model) - 0.5) / (AUC(base) - 0.5) - 1) x 100%.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..models import parse_model_name
from ..train.run import dataset_for, run_experiment

RESULT_COLUMNS = ["model", "seed", "test_auc", "test_logloss", "test_gauc", "valid_auc", "valid_logloss",
                  "best_epoch", "epochs_run", "seconds_per_epoch", "train_samples_per_s", "run_dir"]


def _row(model: str, seed: int, m: dict, run_dir: Path) -> dict:
    return {"model": model, "seed": seed, "test_auc": m["test"].get("auc"), "test_logloss": m["test"].get("logloss"),
            "test_gauc": m["test"].get("gauc"), "valid_auc": m["valid"].get("auc"),
            "valid_logloss": m["valid"].get("logloss"), "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
            "seconds_per_epoch": m["seconds_per_epoch"], "train_samples_per_s": m["train_samples_per_s"],
            "run_dir": str(run_dir)}


def run_compare(cfg: RunConfig, models: list[str], seeds: list[int], out: str | Path, base: str | None = None,
                log=print, data=None) -> list[dict]:
    """Train every (model, seed) into ``out/runs`` and write ``results.csv`` and ``summary.{md,csv}``
    (``data``: an encoded data set to use instead of the config's, e.g. a subsampled train split)."""
    if not models:
        raise ConfigError("compare: --models is empty")
    for m in models:
        parse_model_name(m)
    if base is not None and base not in models:
        raise ConfigError(f"compare: base model {base!r} is not among --models {models}")
    params = cfg.model.params
    explicit = "name" in cfg.model.model_fields_set
    if params and len(models) > 1 and not (explicit and cfg.model.name in models):
        raise ConfigError(f"compare: model parameters {sorted(params)} given for several models {models}; "
                          f"name the model they belong to with --set model.name=<one of them>")
    owner = models[0] if len(models) == 1 else cfg.model.name
    variants = {m: (m, params if m == owner else {}) for m in models}
    return run_variants(cfg, variants, seeds, out, base, log, data)


def run_variants(cfg: RunConfig, variants: dict[str, tuple[str, dict]], seeds: list[int], out: str | Path,
                 base: str | None = None, log=print, data=None) -> list[dict]:
    """Train every (label -> (model name, model params)) x seed into ``out/runs/<label>-seed<k>`` (finished
    runs are reused) and write the tables; ablations and sweeps are variants of one model."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = dataset_for(cfg) if data is None else data
    rows = []
    for label, (m, params) in variants.items():
        for s in seeds:
            run_dir = out / "runs" / f"{label}-seed{s}"
            if (run_dir / "metrics.json").exists():
                res = json.loads((run_dir / "metrics.json").read_text())
            else:
                c = cfg.model_copy(deep=True)
                c.model = type(cfg.model)(name=m, **params)
                c.train.seed = s
                res = run_experiment(c, run_dir, resume=(run_dir / "last.pt").exists(), data=data)
                res.pop("_model", None)
            rows.append(_row(label, s, res, run_dir))
            log(f"{label:>12s} seed {s}: test AUC {rows[-1]['test_auc']:.4f}  logloss {rows[-1]['test_logloss']:.4f}  "
                f"best epoch {rows[-1]['best_epoch']}  {rows[-1]['seconds_per_epoch']:.1f} s/epoch")
    write_results(rows, out, base)
    return rows


def summarize(rows: list[dict], base: str | None = None) -> list[dict]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    summ = []
    for m, rs in by.items():
        auc = np.array([r["test_auc"] for r in rs], dtype=float)
        ll = np.array([r["test_logloss"] for r in rs], dtype=float)
        summ.append({"model": m, "runs": len(rs), "test_auc_mean": auc.mean(), "test_auc_std": auc.std(ddof=0),
                     "test_logloss_mean": ll.mean(), "test_logloss_std": ll.std(ddof=0),
                     "test_gauc_mean": float(np.mean([r["test_gauc"] or np.nan for r in rs])),
                     "best_epoch_mean": float(np.mean([r["best_epoch"] for r in rs])),
                     "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in rs])),
                     "train_samples_per_s": float(np.mean([r["train_samples_per_s"] or np.nan for r in rs]))})
    if base is not None:
        b = next(s for s in summ if s["model"] == base)["test_auc_mean"]
        for s in summ:
            s["relaimpr_pct"] = ((s["test_auc_mean"] - 0.5) / (b - 0.5) - 1) * 100 if b != 0.5 else math.nan
    return summ


def markdown_table(summ: list[dict], base: str | None = None) -> str:
    head = ["model", "runs", "test AUC", "test logloss", "test gAUC"]
    if base is not None:
        head.append(f"RelaImpr vs {base}")
    head += ["best epoch", "s/epoch", "train samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summ:
        cells = [s["model"], str(s["runs"]), f"{s['test_auc_mean']:.4f} ± {s['test_auc_std']:.4f}",
                 f"{s['test_logloss_mean']:.4f} ± {s['test_logloss_std']:.4f}", f"{s['test_gauc_mean']:.4f}"]
        if base is not None:
            cells.append(f"{s['relaimpr_pct']:+.2f}%")
        cells += [f"{s['best_epoch_mean']:.1f}", f"{s['seconds_per_epoch']:.2f}", f"{s['train_samples_per_s']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out: Path, base: str | None = None) -> str:
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    summ = summarize(rows, base)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summ[0].keys()))
        w.writeheader()
        w.writerows(summ)
    md = markdown_table(summ, base)
    (out / "summary.md").write_text(md)
    return md


def print_summary(out: Path, file=None) -> None:
    print((Path(out) / "summary.md").read_text(), file=file or sys.stdout)
