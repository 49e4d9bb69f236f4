"""``ctrgraph compare``: models x seeds on one data set -> ``results.csv`` (one row per run) and a summary
table (``summary.md`` / ``summary.csv``: mean ± std, RelaImpr against ``base``).

An ad-hoc :class:`~ctrgraph.experiments.items.Table` run by the same core as ``ctrgraph reproduce``:
runs go to ``OUT/runs/<run key>-seed<k>`` (a finished run is reused, an interrupted one resumed),
every number is read back from run directories, so a table can always be regenerated.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import RunConfig
from ..data.dataset import EncodedDataset
from ..errors import ConfigError
from ..registry import parse_model_name
from .core import Context, DataSet, Variant, ensure_all, plan
from .items import Table
from .tables import write_csv

RESULT_COLUMNS = ["model", "seed", "test_auc", "test_logloss", "test_gauc", "valid_auc", "valid_logloss",
                  "best_epoch", "epochs_run", "seconds_per_epoch", "train_samples_per_s", "run_dir"]


def run_compare(cfg: RunConfig, models: list[str], seeds: list[int], out: str | Path, base: str | None = None,
                log=print, data: EncodedDataset | None = None) -> list[dict]:
    """Train every (model, seed) under ``cfg`` into ``out/runs`` and write ``results.csv`` and
    ``summary.{md,csv}``; returns the per-run rows (``data``: an encoded data set to use instead of
    loading the config's). Model parameters of ``cfg`` belong to ``cfg.model.name`` only."""
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
    variants = [Variant(m, {"model": {"name": m, **(params if m == owner else {})}}) for m in models]
    table = Table("summary", f"compare on {cfg.data.name}", variants, [DataSet(cfg.data.name)], seeds=tuple(seeds),
                  base=base, row_header="model")
    out = Path(out)
    base_cfg = cfg.model_dump(exclude={"compare"})
    ctx = Context(out, log=log, base=base_cfg)
    per, todo = plan([table], ctx)
    runs = per[table.name]
    if data is not None:
        for r in runs:
            ctx.store.use_data(r.cfg, data)
    ensure_all(per, todo, ctx)
    rows = [_row(r) for r in runs]
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    table.report(ctx, runs, out / "summary")
    return rows


def _row(r) -> dict:
    m = r.metrics
    return {"model": r.label, "seed": r.seed, "test_auc": m["test"].get("auc"), "test_logloss": m["test"].get("logloss"),
            "test_gauc": m["test"].get("gauc"), "valid_auc": m["valid"].get("auc"),
            "valid_logloss": m["valid"].get("logloss"), "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
            "seconds_per_epoch": m["seconds_per_epoch"], "train_samples_per_s": m["train_samples_per_s"],
            "run_dir": str(r.dir)}


def print_summary(out: Path, file=None) -> None:
    print((Path(out) / "summary.md").read_text(), file=file or sys.stdout)
