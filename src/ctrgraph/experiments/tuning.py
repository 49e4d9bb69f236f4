"""Tuning a paper's row with a budget: search spaces as data, Optuna as the engine.

A :class:`Space` is declared beside the study it belongs to (``studies/<paper>.py``, the study's
``spaces``): the row it tunes (a :class:`~.core.Variant`), its data sets, the paper's values
(a list per key: a grid) or ranges (:class:`Range`: sampled by TPE), and the seeds of the paper's
repeats. ``ctrgraph tune <paper> <space>`` (:func:`tune`) then, for each selected data set:

1. resolves the base configuration with the config layers of :mod:`.core` (defaults < the study's
   defaults < the data set < ``--set`` < the row < the trial's values < the seed) and keys an
   Optuna study by that resolved configuration's identity (:func:`ctrgraph.runs.identity.run_identity`)
   plus the space (:func:`study_key`): ``OUT/tuning/<space>-<data set>-<key>/journal.log`` (Optuna's
   journal file storage). A second call with the same key resumes it: the budget counts the
   study's finished trials, so a call with the same ``--trials`` trains nothing new; a trial that
   was interrupted is tried again first (its run resumes from ``last.pt``).
2. runs each trial as an ordinary run of the shared run store (``OUT/runs/<run key>-seed<k>``): a
   trial whose resolved configuration was already trained (by an earlier trial, a table of
   ``ctrgraph reproduce`` in the same ``--out``) is reused, not retrained.
3. scores a trial by its **validation** metric only (:func:`validation_value`; ``train.monitor`` or
   the space's ``monitor``, at the run's best epoch, itself chosen on validation). No test number is
   read before the choice is made.
4. re-runs the chosen configuration over the space's seeds (the paper's five repeats where it had
   five; the tuning seed's run is reused) and reports mean ± std of the test metrics, now that the
   choice is fixed: ``OUT/<paper>/tune-<space>.md`` / ``.csv`` (trials) and
   ``OUT/<paper>/tune-<space>-chosen.md`` / ``.csv`` (the chosen configuration over the seeds),
   recorded in ``OUT/reproduce.json`` and ``OUT/report.html`` beside the paper's tables.

``ctrgraph tune --space-file SPACE.yaml --config ...`` (:func:`tune_config`) runs a space read from a
YAML file (:func:`space_from_file`) over one's own configuration, the same way.

Optuna is optional (``pip install 'ctrgraph[tune]'``); only this module imports it, lazily.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import RunConfig
from ..errors import ConfigError
from ..runs.identity import run_identity
from ..train.run_files import RunLock
from .core import Context, DataSet, Run, Study, Variant, _entry, _update_manifest
from .stats import mean_std
from .tables import Column, fmt, pm, write_table

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: metrics where larger is better (the others, logloss, are minimised)
MAXIMISE = {"auc", "gauc"}
#: the default budget of a TPE search that names none
DEFAULT_TPE_TRIALS = 20
#: the seed of the samplers (the grid's order, TPE's draws): part of the study key
SAMPLER_SEED = 0


@dataclass(frozen=True)
class Range:
    """A range the paper gives instead of values: sampled by TPE. ``log``: log-uniform;
    ``integer``: integers in [low, high]."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self):
        if not self.low < self.high:
            raise ConfigError(f"Range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ConfigError(f"Range: a log range needs low > 0, got {self.low}")

    def spec(self) -> dict:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


#: what a space's key maps to: the values of a grid (each a config value, or a mapping of dotted
#: keys to values for a joint choice, e.g. GraphFM's layers with their m) or a :class:`Range`
Values = Sequence[Any] | Range


@dataclass(frozen=True)
class Space:
    """A paper's tuning grid as data (see the module docstring).

    ``params``: dotted config key -> a list of values (a grid axis) or a :class:`Range` (TPE); a
    key whose values are all mappings is a *joint* axis, named by the key, each value a set of
    overrides (``{"model.layers": 2, "model.m": [12, 4]}``). ``sampler``: ``grid`` needs every axis
    to list values; ``auto`` is ``grid`` then, else ``tpe``. ``seeds``: the final re-runs of the
    chosen configuration; ``tune_seed``: the seed of every trial. ``trials``: the default budget
    (None: the whole grid, or :data:`DEFAULT_TPE_TRIALS`). ``monitor``: the validation metric
    (default: the base configuration's ``train.monitor``)."""

    name: str
    title: str
    base: Variant
    datasets: list[DataSet]
    params: Mapping[str, Values]
    seeds: tuple[int, ...] = (1,)
    tune_seed: int = 1
    sampler: Literal["auto", "grid", "tpe"] = "auto"
    monitor: Literal["auc", "gauc", "logloss"] | None = None
    trials: int | None = None
    caption: str = ""

    def __post_init__(self):
        if not self.params:
            raise ConfigError(f"space {self.name!r}: no parameters to tune")
        for k, v in self.params.items():
            if not isinstance(v, Range) and (isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence)
                                             or not v):
                raise ConfigError(f"space {self.name!r}: {k} must be a non-empty list of values or a Range, got {v!r}")
            if not isinstance(v, Range) and any(isinstance(x, Mapping) for x in v) and \
                    not all(isinstance(x, Mapping) for x in v):
                raise ConfigError(f"space {self.name!r}: {k} mixes mappings (a joint axis) and plain values")
        if self.resolved_sampler() == "grid" and any(isinstance(v, Range) for v in self.params.values()):
            raise ConfigError(f"space {self.name!r}: sampler 'grid' needs a list of values for every key; "
                              f"{[k for k, v in self.params.items() if isinstance(v, Range)]} are ranges")

    def resolved_sampler(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "tpe" if any(isinstance(v, Range) for v in self.params.values()) else "grid"

    def grid_size(self) -> int | None:
        if self.resolved_sampler() != "grid":
            return None
        return math.prod(len(v) for v in self.params.values())

    def budget(self, trials: int | None) -> int:
        """Trials the study should hold: ``trials``, else the space's, else the grid or the TPE default."""
        n = trials if trials is not None else self.trials if self.trials is not None else \
            (self.grid_size() or DEFAULT_TPE_TRIALS)
        return min(n, self.grid_size() or n)

    # ----- values <-> Optuna parameters -----------------------------------------------------------
    @staticmethod
    def _encoded(values: Sequence[Any]) -> list:
        """Grid values as Optuna stores them: plain scalars as they are, anything else (lists,
        mappings) as canonical JSON text."""
        if all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
            return list(values)
        return [json.dumps(v, sort_keys=True) for v in values]

    def encoded_grid(self) -> dict[str, list]:
        return {k: self._encoded(v) for k, v in self.params.items() if not isinstance(v, Range)}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config overrides (dotted keys) of a trial's Optuna parameters."""
        out: dict[str, Any] = {}
        for k, spec in self.params.items():
            if k not in params:
                raise ConfigError(f"space {self.name!r}: trial parameters {dict(params)} lack {k!r}")
            v = params[k]
            if not isinstance(spec, Range) and self._encoded(spec) != list(spec):
                v = json.loads(v)
            if isinstance(v, Mapping):
                out.update(v)
            else:
                out[k] = v
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's config overrides, drawn from the space."""
        params: dict[str, Any] = {}
        for k, spec in self.params.items():
            if isinstance(spec, Range):
                params[k] = trial.suggest_int(k, int(spec.low), int(spec.high), log=spec.log) if spec.integer \
                    else trial.suggest_float(k, spec.low, spec.high, log=spec.log)
            else:
                params[k] = trial.suggest_categorical(k, self._encoded(spec))
        return self.decode(params)

    def points(self) -> list[dict[str, Any]]:
        """Overrides that together touch every listed value and both ends of every range (to check
        the space against the base configuration before any training)."""
        out = []
        for k, spec in self.params.items():
            vals = [spec.low, spec.high] if isinstance(spec, Range) else list(spec)
            for v in vals:
                if isinstance(spec, Range) and spec.integer:
                    v = int(v)
                out.append(dict(v) if isinstance(v, Mapping) else {k: v})
        return out

    def spec(self) -> dict:
        """The canonical description of the space (part of the study key)."""
        return {"params": {k: v.spec() if isinstance(v, Range) else self._encoded(v)
                           for k, v in sorted(self.params.items())},
                "sampler": self.resolved_sampler(), "sampler_seed": SAMPLER_SEED}


# ----- the study key ---------------------------------------------------------------------------------
def study_key(base: Run, space: Space, monitor: str) -> str:
    """A stable hash of the resolved base configuration's identity (the run identity: equal runs
    spelled differently give one key; the machine's settings are left out), the tuning seed, the
    space and the validation metric. The budget and the final seeds are not part of it: a larger
    ``--trials`` continues the same study."""
    blob = {"base": run_identity(base.cfg), "tune_seed": base.seed, "space": space.spec(), "monitor": monitor}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def validation_value(run: Run, monitor: str) -> float:
    """The trial's score: the run's validation ``monitor`` (the only number selection reads)."""
    valid = (run.metrics or {}).get("valid") or {}
    if monitor not in valid:
        raise ConfigError(f"run {run.dir}: no validation {monitor!r} (have: {sorted(valid)}); tuning selects on "
                          f"the validation split only and the data set must have one")
    return float(valid[monitor])


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("tuning needs Optuna: pip install 'ctrgraph[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(optuna: Any, space: Space) -> Any:
    if space.resolved_sampler() == "grid":
        return optuna.samplers.GridSampler(space.encoded_grid(), seed=SAMPLER_SEED)
    return optuna.samplers.TPESampler(seed=SAMPLER_SEED)


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in overrides.items())


@dataclass
class TuneResult:
    """One (space, data set) search: its folder and key, the trials, the chosen configuration and
    its re-runs over the seeds (each a :class:`~.core.Run` with metrics)."""

    space: Space
    dataset: str
    key: str
    folder: Path
    monitor: str
    trials: list[dict] = field(default_factory=list)
    new_trials: int = 0
    chosen: dict | None = None
    final: list[Run] = field(default_factory=list)

    def summary(self) -> dict:
        ms = [r.metrics for r in self.final]
        out = {"space": self.space.name, "dataset": self.dataset, "key": self.key, "monitor": self.monitor,
               "trials": len(self.trials), "new_trials": self.new_trials, "chosen": self.chosen,
               "seeds": [r.seed for r in self.final], "run_key": self.final[0].key if self.final else None}
        for split in ("valid", "test"):
            for m in ("auc", "logloss", "gauc"):
                mean, std = mean_std([x.get(split, {}).get(m) for x in ms]) if ms else (math.nan, math.nan)
                out[f"{split}_{m}_mean"], out[f"{split}_{m}_std"] = mean, std
        return out


def _retry_interrupted(optuna: Any, study: Any) -> int:
    """Trials left RUNNING by a killed process become FAIL; every failed configuration that no
    finished or queued trial covers is queued again (its run resumes from ``last.pt``). Called
    under the study folder's lock, so no other process is running a trial of this study."""
    TS = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TS.RUNNING:  # Optuna's own fail_stale_trials does the same through the storage
            study._storage.set_trial_state_values(t._trial_id, state=TS.FAIL)
    covered = [t.params for t in trials if t.state == TS.COMPLETE] + \
        [t.system_attrs.get("fixed_params") for t in trials if t.state == TS.WAITING]
    queued = 0
    for t in trials:
        if t.state in (TS.RUNNING, TS.FAIL) and t.params and t.params not in covered:
            # as enqueue_trial, keeping the grid sampler's own attributes (its after_trial reads grid_id)
            attrs = {"fixed_params": dict(t.params)} | {k: t.system_attrs[k] for k in ("grid_id", "search_space")
                                                        if k in t.system_attrs}
            study.add_trial(optuna.trial.create_trial(state=TS.WAITING, system_attrs=attrs))
            covered.append(t.params)
            queued += 1
    return queued


def tune_one(space: Space, dataset: DataSet, ctx: Context, trials: int | None = None,
             timeout_min: float | None = None, seeds: list[int] | None = None,
             final: bool = True) -> TuneResult:
    """Search ``space`` on ``dataset`` within the budget, then re-run the chosen configuration over
    the seeds (see the module docstring). ``trials``: finished trials the study should hold;
    ``timeout_min``: wall-clock minutes of this call's search, checked before each trial."""
    optuna = _optuna()
    log = ctx.log
    base = ctx.resolve(space.base, dataset, space.tune_seed)
    monitor = space.monitor or base.cfg.train.monitor
    for point in space.points():  # a bad key or value fails here, before any training
        try:
            ctx.resolve(Variant(space.base.label, {**space.base.set, **point}), dataset, space.tune_seed)  # + run key
        except ConfigError as e:
            raise ConfigError(f"space {space.name!r} ({_describe(point)}): {e}") from None
    key = study_key(base, space, monitor)
    folder = ctx.out / "tuning" / f"{space.name}-{dataset.label}-{key}"
    res = TuneResult(space, dataset.label, key, folder, monitor)
    budget = space.budget(trials)
    direction = "maximize" if monitor in MAXIMISE else "minimize"
    with RunLock(folder):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
        study = optuna.create_study(storage=storage, study_name=f"{space.name}/{dataset.label}/{key}",
                                    sampler=_sampler(optuna, space), direction=direction, load_if_exists=True)
        (folder / "space.json").write_text(json.dumps(
            {"space": space.name, "dataset": dataset.label, "key": key, "monitor": monitor, "direction": direction,
             "base_identity": run_identity(base.cfg), "tune_seed": space.tune_seed, **space.spec()},
            indent=1, sort_keys=True, default=str))
        retried = _retry_interrupted(optuna, study)
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        todo = max(0, budget - done) if timeout_min is None or timeout_min > 0 else 0
        grid = space.grid_size()
        where = f"[tune {space.name} · {dataset.label}] "
        log(f"{where}study {key} in {folder}: {done} finished trial(s), budget {budget}"
            + (f" of a {grid}-point grid" if grid else " (TPE)") + (f", {todo} to run" if todo else ", nothing to run")
            + (f" ({retried} interrupted one(s) first)" if retried and todo else "")
            + (f", at most {timeout_min:g} min" if timeout_min and todo else "") + f"; selecting on valid {monitor}")

        def objective(trial: Any) -> float:
            t0 = time.time()
            over = space.suggest(trial)
            run = ctx.resolve(Variant(f"{space.base.label} #{trial.number}", {**space.base.set, **over}), dataset,
                              space.tune_seed)
            trial.set_user_attr("run_key", run.key)
            trial.set_user_attr("run_dir", run.dir.name)
            ctx.store.ensure(run, f"{where}trial {trial.number}: ", shown="valid")
            value = validation_value(run, monitor)
            trial.set_user_attr("run_status", run.status)
            res.new_trials += 1
            best = value if not _finished(optuna, study) else \
                (max if direction == "maximize" else min)(value, study.best_value)
            log(f"{where}trial {trial.number} ({res.new_trials}/{todo}, {time.time() - t0:.0f} s): {_describe(over)}"
                f" -> valid {monitor} {value:.4f} (best so far {best:.4f})")
            return value

        if todo:
            study.optimize(objective, n_trials=todo, timeout=timeout_min * 60 if timeout_min else None)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        res.trials = [{"trial": t.number, **space.decode(t.params), f"valid_{monitor}": t.value,
                       "run_key": t.user_attrs.get("run_key"), "run_status": t.user_attrs.get("run_status")}
                      for t in complete]
        if not complete:
            log(f"{where}no finished trial yet (budget or time too small?)")
            return res
        best = study.best_trial  # the best validation value; ties: the earliest trial
        res.chosen = {"trial": best.number, "overrides": space.decode(best.params), f"valid_{monitor}": best.value}
    log(f"{where}chosen on valid {monitor}: trial {best.number} ({_describe(res.chosen['overrides'])}), "
        f"valid {monitor} {best.value:.4f}")
    if final:
        chosen = Variant(f"{space.base.label} (tuned)", {**space.base.set, **res.chosen["overrides"]})
        seeds = list(seeds or space.seeds)
        for i, s in enumerate(seeds, start=1):
            run = ctx.resolve(chosen, dataset, s)
            res.final.append(ctx.store.ensure(run, f"{where}chosen config, seed {s} [{i}/{len(seeds)}]: "))
        sm = res.summary()
        log(f"{where}chosen config over seeds {','.join(map(str, seeds))}: test AUC "
            f"{pm(sm['test_auc_mean'], sm['test_auc_std'])}, test logloss "
            f"{pm(sm['test_logloss_mean'], sm['test_logloss_std'])} (valid AUC {fmt(sm['valid_auc_mean'])})")
    (folder / "result.json").write_text(json.dumps(res.summary(), indent=1, default=str))
    return res


def _finished(optuna: Any, study: Any) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


# ----- reports -------------------------------------------------------------------------------------
def _reports(study: Study, space: Space, results: list[TuneResult], stem: Path) -> dict:
    """The trials and the chosen configuration of every data set, as two markdown + CSV tables."""
    keys = list(dict.fromkeys(k for r in results for t in r.trials for k in t
                              if k not in ("trial", "run_key", "run_status") and not k.startswith("valid_")))
    rows = []
    for r in results:
        chosen = (r.chosen or {}).get("trial")
        for t in r.trials:
            rows.append({"dataset": r.dataset, **t, "valid": t[f"valid_{r.monitor}"], "monitor": r.monitor,
                         "chosen": "yes" if t["trial"] == chosen else "", "study_key": r.key})
    cols = [Column("data set", "dataset"), Column("trial", "trial")] + \
        [Column(k, cell=lambda x, k=k: json.dumps(x.get(k)) if isinstance(x.get(k), list) else str(x.get(k, "")))
         for k in keys] + \
        [Column("valid metric", cell=lambda x: f"{x['monitor']} {fmt(x['valid'])}"), Column("chosen", "chosen"),
         Column("run when tried", "run_status"), Column("run key", "run_key")]
    budget = "; ".join(f"{r.dataset}: {len(r.trials)} trials ({r.new_trials} new), study {r.key}" for r in results)
    caption = (space.caption + "\n\n" if space.caption else "") + \
        f"Sampler: {space.resolved_sampler()}" + (f" over a {space.grid_size()}-point grid" if space.grid_size()
                                                  else "") + \
        f"; every trial at seed {space.tune_seed}; selection on the validation metric only. {budget}."
    tables = [write_table(stem, rows, cols, f"{space.title}: trials", caption)] if rows else []
    final = [r.summary() for r in results if r.final]
    if final:
        fcols = [Column("data set", "dataset"),
                 Column("chosen overrides", cell=lambda x: _describe(x["chosen"]["overrides"])),
                 Column("seeds", cell=lambda x: " ".join(map(str, x["seeds"]))),
                 Column("valid AUC", cell=lambda x: pm(x["valid_auc_mean"], x["valid_auc_std"])),
                 Column("test AUC", cell=lambda x: pm(x["test_auc_mean"], x["test_auc_std"])),
                 Column("test logloss", cell=lambda x: pm(x["test_logloss_mean"], x["test_logloss_std"])),
                 Column("run key", "run_key")]
        for f in final:
            f["overrides"] = _describe(f["chosen"]["overrides"])
        tables.append(write_table(stem.with_name(stem.name + "-chosen"), final, fcols,
                                  f"{space.title}: the chosen configuration over the seeds",
                                  "Chosen on validation before any test metric was read; test metrics: mean ± std "
                                  "over the seeds.", csv_keys=[k for k in final[0] if k != "chosen"]))
    return {"tables": tables, "figures": []}


@dataclass
class _SpaceItem:
    """A space seen as a report item of the manifest (name, title, caption)."""

    name: str
    title: str
    caption: str = ""


def tune(study: Study, space_name: str, ctx: Context, trials: int | None = None, timeout_min: float | None = None,
         final: bool = True, command: str = "") -> list[TuneResult]:
    """``ctrgraph tune <paper> <space>``: :func:`tune_one` on every selected data set of the space
    (``ctx.datasets``; ``ctx.seeds`` replaces the space's final seeds), then the reports."""
    space = study.space(space_name)
    ctx.defaults = study.defaults
    datasets = ctx.selected_data(space.datasets)
    if not datasets:
        raise ConfigError(f"--datasets {ctx.datasets} selects none of {space.name}'s data sets "
                          f"({', '.join(d.label for d in space.datasets)})")
    deadline = time.time() + timeout_min * 60 if timeout_min else None
    results = []
    for d in datasets:
        left = None if deadline is None else (deadline - time.time()) / 60  # <= 0: no new trials
        results.append(tune_one(space, d, ctx, trials, left, ctx.seeds, final))
    done = [r for r in results if r.trials]
    if done:
        stem = ctx.out / study.paper / f"tune-{space.name}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        out = _reports(study, space, done, stem)
        item = _SpaceItem(f"tune-{space.name}", f"Tuning: {space.title}", space.caption)
        runs = [x for r in done for x in r.final]
        _update_manifest(ctx.out, study, [_entry(study, item, out, runs, ctx.out, command)], runs)
    return results


# ----- a space in a YAML file, over one's own configuration ---------------------------------------------
SPACE_FILE_KEYS = {"name", "title", "params", "sampler", "seeds", "tune_seed", "trials", "monitor", "caption"}


def _number(x: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as text: a text value that is a number is that number."""
    if isinstance(x, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", x.strip()):
        return float(x)
    return x


def space_from_file(path: str | Path, base: Variant, datasets: list[DataSet]) -> Space:
    """A :class:`Space` from a YAML file (docs/tuning.md): ``params`` maps dotted config keys to a list
    of values or to ``{low, high, log, integer}`` (a :class:`Range`); optional ``name`` (default: the
    file's stem), ``title``, ``sampler``, ``seeds``, ``tune_seed``, ``trials``, ``monitor``, ``caption``."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"space file not found: {p}")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"space file {p}: invalid YAML: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
        raise ConfigError(f"space file {p}: expected a mapping with a 'params' mapping (dotted key -> values)")
    unknown = sorted(set(d) - SPACE_FILE_KEYS)
    if unknown:
        raise ConfigError(f"space file {p}: unknown key(s) {unknown}; known: {sorted(SPACE_FILE_KEYS)}")
    params: dict[str, Values] = {}
    for k, v in d["params"].items():
        if isinstance(v, dict):
            extra = sorted(set(v) - {"low", "high", "log", "integer"})
            if extra or not {"low", "high"} <= set(v):
                raise ConfigError(f"space file {p}: params.{k}: a range is {{low, high, log, integer}}, got {v}")
            params[k] = Range(float(v["low"]), float(v["high"]), bool(v.get("log", False)),
                              bool(v.get("integer", False)))
        elif isinstance(v, list):
            params[k] = [_number(x) for x in v]
        else:
            raise ConfigError(f"space file {p}: params.{k}: expected a list of values or {{low, high, ...}}, got {v!r}")
    opts = {k: d[k] for k in ("sampler", "tune_seed", "trials", "monitor", "caption") if k in d}
    if "seeds" in d:
        opts["seeds"] = tuple(int(x) for x in d["seeds"])
    name = str(d.get("name", p.stem))
    return Space(name, str(d.get("title", name)), base, datasets, params, **opts)


def tune_config(cfg: RunConfig, space_file: str | Path, ctx: Context, trials: int | None = None,
                timeout_min: float | None = None, final: bool = True, command: str = "") -> list[TuneResult]:
    """``ctrgraph tune --config FILE --space-file SPACE.yaml``: a YAML space over one's own resolved
    configuration (data set, model, training settings), reported under ``OUT/config/``."""
    label = cfg.model.name
    space = space_from_file(space_file, Variant(label), [DataSet(cfg.data.name)])
    study = Study("config", f"Tuning {label} on {cfg.data.name}", "docs/tuning.md", [], spaces=[space])
    ctx.base = cfg.model_dump(exclude={"compare"})
    return tune(study, space.name, ctx, trials, timeout_min, final, command)
