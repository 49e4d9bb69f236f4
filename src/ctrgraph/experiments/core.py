"""Studies as data: the experiments core.

A paper's tables and figures are declared, not scripted. A :class:`Variant` is a label plus config
overrides; a :class:`DataSet` is a label plus the overrides that select a recipe; a study item
(:mod:`.items`: a comparison table, paired buckets, a t-SNE figure, data statistics, an
explanation) lists variants x data sets x seeds and what to report. :func:`run_study` resolves
every (variant, data set, seed) into a :class:`~ctrgraph.config.RunConfig`, trains each distinct
run once into ``OUT/runs/<run key>-seed<k>`` (:mod:`ctrgraph.runs.identity`: identical resolved
configs share one run directory, whichever table asked for it), skips finished runs, resumes
interrupted ones from ``last.pt``, then lets every item build its tables (:mod:`.tables`) and
figures (:mod:`ctrgraph.plots`) from the run directories, records them in ``OUT/reproduce.json``
and renders ``OUT/report.html`` (:mod:`.html_report`).

Config layers of a run, later ones winning: the defaults < the study's ``defaults`` < the data
set's overrides < the command line's ``--set`` (and ``--data-dir``) < the variant's overrides <
the seed. A variant thus keeps what it varies even when ``--set`` touches the same key.
"""
from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import RunConfig, config_from_layers
from ..data.dataset import EncodedDataset
from ..errors import ConfigError
from ..runs.assemble import dataset_for, environment, run_experiment
from ..train.run_files import RunFiles
from ..runs.identity import run_dir_name, run_key


@dataclass(frozen=True)
class Variant:
    """One row of a table: ``label``, config overrides ``set`` (dotted keys), grid coordinates
    ``keys`` (shown as columns, used as plot axes), the RelaImpr reference row ``base`` and the row
    ``vs`` whose test AUC the one-sided Wilcoxon test checks to be greater than this row's."""

    label: str
    set: Mapping[str, Any] = field(default_factory=dict)
    keys: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None
    vs: str | None = None


def V(label: str, model: str | None = None, set: Mapping[str, Any] | None = None, *, keys: Mapping | None = None,
      base: str | None = None, vs: str | None = None) -> Variant:
    """Shorthand: ``V("DG-PNN", "dg-pnn", {"embedding.params.graphs": "uv"}, vs=...)``."""
    s = dict(set or {})
    if model is not None:
        s = {"model.name": model, **s}
    return Variant(label, s, dict(keys or {}), base, vs)


@dataclass(frozen=True)
class DataSet:
    """A data set of a study: ``label`` and the overrides that select it (``data.name``, ``data.params``)."""

    label: str
    set: Mapping[str, Any] = field(default_factory=dict)


def D(name: str, label: str | None = None, params: Mapping[str, Any] | None = None, **sets) -> DataSet:
    """Shorthand: ``D("ml100k")``, ``D("synthetic", "sparse", {"n_users": 3000})``."""
    s: dict[str, Any] = {"data.name": name}
    if params:
        s["data.params"] = dict(params)
    s.update({k.replace("__", "."): v for k, v in sets.items()})
    return DataSet(label or name, s)


@dataclass
class Run:
    """One (variant, data set, seed) of an item, resolved; ``status`` and ``metrics`` once ensured."""

    label: str
    dataset: str
    seed: int
    cfg: RunConfig
    dir: Path
    key: str
    status: str | None = None
    metrics: dict | None = None

    def manifest(self, root: Path) -> dict:
        t = (self.metrics or {}).get("test", {})
        return {"label": self.label, "dataset": self.dataset, "seed": self.seed, "key": self.key,
                "dir": str(_rel(self.dir, root)), "status": self.status or "planned", "test_auc": t.get("auc")}


def _rel(p: Path, root: Path) -> Path:
    try:
        return Path(p).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return Path(p)


class RunStore:
    """Run directories under ``root``: trains a run once, reuses it when finished, resumes it when
    interrupted; encoded data sets are loaded once per distinct data configuration."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.log = log
        self._data: dict[str, EncodedDataset] = {}

    @staticmethod
    def _data_key(cfg: RunConfig) -> str:
        return json.dumps(cfg.data.model_dump(exclude={"cache"}), sort_keys=True, default=str)

    def data(self, cfg: RunConfig) -> EncodedDataset:
        key = self._data_key(cfg)
        if key not in self._data:
            self._data[key] = dataset_for(cfg)
        return self._data[key]

    def use_data(self, cfg: RunConfig, data: EncodedDataset) -> None:
        """Train runs of ``cfg``'s data configuration on ``data`` (an already encoded data set)."""
        self._data[self._data_key(cfg)] = data

    def ensure(self, run: Run, where: str = "", shown: str = "test") -> Run:
        """Train ``run`` unless finished (then reuse it) or interrupted (then resume it). The progress
        line shows the AUC of split ``shown`` (a tuning trial shows ``valid``: no test number while
        choosing)."""
        done = run.dir / "metrics.json"
        if done.exists():
            run.status, run.metrics = "reused", json.loads(RunFiles(run.dir).verify(done.name).read_text())
            self.log(f"{where}{run.label} · {run.dataset} · seed {run.seed}: reused {run.dir.name} "
                     f"({shown} AUC {run.metrics[shown].get('auc', float('nan')):.4f})")
            return run
        resume = (run.dir / "last.pt").exists()
        t0 = time.time()
        res = run_experiment(run.cfg, run.dir, resume=resume, data=self.data(run.cfg))
        res.pop("_model", None)
        run.status, run.metrics = ("resumed" if resume else "trained"), res
        self.log(f"{where}{run.label} · {run.dataset} · seed {run.seed}: {run.status} {run.dir.name} "
                 f"({shown} AUC {res[shown].get('auc', float('nan')):.4f}, {time.time() - t0:.0f} s)")
        return run


@dataclass
class Context:
    """What the command line gives a study: output folder, ``--set`` overrides, ``--data-dir``,
    ``--seeds`` (replacing each item's own), ``--only`` (variant labels, shell patterns),
    ``--datasets`` (data set labels); ``base``: a whole config under every layer (``compare``)."""

    out: Path
    sets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    seeds: list[int] | None = None
    only: list[str] | None = None
    datasets: list[str] | None = None
    log: Callable[[str], None] = print
    store: RunStore | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    base: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)
        if self.store is None:
            self.store = RunStore(self.out / "runs", self.log)

    def selected(self, label: str) -> bool:
        return not self.only or any(_matches(label, p) for p in self.only)

    def selected_data(self, datasets: list[DataSet]) -> list[DataSet]:
        return [d for d in datasets if not self.datasets or any(_matches(d.label, p) for p in self.datasets)]

    def resolve(self, variant: Variant, dataset: DataSet, seed: int) -> Run:
        """The run of one (variant, data set, seed) under the config layers of the module docstring."""
        cli: list = list(self.sets) + ([f"data.data_dir={self.data_dir}"] if self.data_dir else [])
        cfg = config_from_layers([dict(self.base), dict(self.defaults), dict(dataset.set), cli, dict(variant.set),
                                  {"train.seed": seed}])
        return Run(variant.label, dataset.label, seed, cfg, self.store.root / run_dir_name(cfg), run_key(cfg))


def _matches(label: str, pattern: str) -> bool:
    """The exact label, or a shell pattern (``DG-PNN *``); labels may hold ``[`` (``m=[12,6,1]``)."""
    return label == pattern or fnmatch.fnmatchcase(label, pattern)


class Item:
    """A table or figure of a study: ``name`` (the command's handle), ``title``, ``caption`` (what
    departs from the paper), the runs it needs and the report it builds from them."""

    name: str
    title: str
    caption: str = ""
    seeds: tuple[int, ...] = (1,)

    def item_seeds(self, ctx: Context) -> list[int]:
        return list(ctx.seeds) if ctx.seeds else list(self.seeds)

    def runs(self, ctx: Context) -> list[Run]:
        return []

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        """Write the outputs under ``stem`` (``<stem>.md``, ``.csv``, ``.png``); returns
        ``{"tables": [...], "figures": [...]}`` for the manifest."""
        raise NotImplementedError


@dataclass
class Study:
    """A paper's studies: ``paper`` (the command's handle), ``title``, ``doc`` (its page), the items,
    config ``defaults`` shared by all of them, and the ``spaces`` its grids are tuned over."""

    paper: str
    title: str
    doc: str
    items: list[Item]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the paper's tuning grids (:class:`~ctrgraph.experiments.tuning.Space`; ``ctrgraph tune``)
    spaces: list = field(default_factory=list)

    def item(self, name: str) -> Item:
        for it in self.items:
            if it.name == name:
                return it
        raise ConfigError(f"{self.paper} has no table or figure {name!r}; it has: {', '.join(i.name for i in self.items)}")

    def space(self, name: str):
        """The tuning space ``name`` (a :class:`~ctrgraph.experiments.tuning.Space`)."""
        for sp in self.spaces:
            if sp.name == name:
                return sp
        raise ConfigError(f"{self.paper} has no tuning space {name!r}; it has: "
                          f"{', '.join(s.name for s in self.spaces) or 'none'}")


def plan(items: list[Item], ctx: Context) -> tuple[dict[str, list[Run]], list[Run]]:
    """The runs of each item (with the item's own labels) and the distinct runs of all of them
    (first occurrence, in order): items asking for the same run directory train it once."""
    per = {it.name: it.runs(ctx) for it in items}
    seen: dict[Path, Run] = {}
    for runs in per.values():
        for r in runs:
            seen.setdefault(r.dir, r)
    return per, list(seen.values())


def ensure_all(per: dict[str, list[Run]], todo: list[Run], ctx: Context) -> None:
    """Train or reuse every distinct run, then give each item's runs their status and metrics."""
    for i, r in enumerate(todo, start=1):
        ctx.store.ensure(r, f"[{i}/{len(todo)}] ")
    done = {r.dir: r for r in todo}
    for runs in per.values():
        for r in runs:
            r.status, r.metrics = done[r.dir].status, done[r.dir].metrics


def run_study(study: Study, names: list[str] | None, ctx: Context, command: str = "",
              dry_run: bool = False) -> list[dict]:
    """Train what the selected items need, build their reports, update the manifest and the HTML
    report of ``ctx.out``; returns the manifest entries of the items (``dry_run``: only the plan)."""
    items = [study.item(n) for n in names] if names else list(study.items)
    ctx.defaults = study.defaults
    per, todo = plan(items, ctx)
    for flag, wanted, have in (("--only", ctx.only, {r.label for runs in per.values() for r in runs}),
                               ("--datasets", ctx.datasets, {r.dataset for runs in per.values() for r in runs})):
        missing = [p for p in wanted or [] if not any(_matches(x, p) for x in have)]
        if missing:
            raise ConfigError(f"{flag} {missing} selects nothing in {', '.join(i.name for i in items)}"
                              f" (selected: {sorted(have) or 'nothing'})")
    if dry_run:
        for r in todo:
            state = "finished" if (r.dir / "metrics.json").exists() else \
                "interrupted" if (r.dir / "last.pt").exists() else "to train"
            ctx.log(f"{r.label} · {r.dataset} · seed {r.seed}: {r.dir} ({state})")
        return []
    ensure_all(per, todo, ctx)
    entries = []
    for it in items:
        stem = ctx.out / study.paper / it.name
        out = it.report(ctx, per[it.name], stem)
        entries.append(_entry(study, it, out, per[it.name], ctx.out, command))
    _update_manifest(ctx.out, study, entries, [r for r in todo if r.metrics is not None])
    return entries


def _entry(study: Study, it: Item, out: dict, runs: list[Run], root: Path, command: str) -> dict:
    def rel(d: dict, key: str) -> dict:
        return {**d, key: str(_rel(Path(d[key]), root))} if d.get(key) else d

    return {"paper": study.paper, "name": it.name, "title": it.title, "caption": it.caption, "command": command,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tables": [rel(rel(t, "md"), "csv") for t in out.get("tables", [])],
            "figures": [rel(f, "png") for f in out.get("figures", [])],
            "runs": [r.manifest(root) for r in runs]}


def _update_manifest(root: Path, study: Study, entries: list[dict], runs: list[Run]) -> None:
    """Merge this call's items into ``root/reproduce.json`` (an item reproduced again replaces its
    entry), then render ``root/report.html``."""
    from ..train.checkpoint import save_json
    from .html_report import MANIFEST, write_report

    path = root / MANIFEST
    man = json.loads(path.read_text()) if path.exists() else {}
    man.setdefault("papers", {})[study.paper] = {"title": study.title, "doc": study.doc}
    new = {(e["paper"], e["name"]) for e in entries}
    man["items"] = [e for e in man.get("items", []) if (e["paper"], e["name"]) not in new] + entries
    configs = man.setdefault("configs", {})
    for r in runs:
        d = r.cfg.model_dump()
        d["train"].pop("seed", None)
        configs[r.key] = d
    env = environment()
    man.update(ctrgraph=env["ctrgraph"], updated=time.strftime("%Y-%m-%dT%H:%M:%S"), environment=env)
    root.mkdir(parents=True, exist_ok=True)
    save_json(man, path)
    write_report(root)
