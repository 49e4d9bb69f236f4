"""The kinds of study items: what a paper's table or figure is, declared as data.

- :class:`Table`: variants x data sets x seeds -> mean ± std of test AUC / logloss, RelaImpr against a
  named row, the one-sided Wilcoxon test against a named row, extra per-run metrics, plots.
- :class:`Buckets`: pairs (base, graph) of variants -> metrics per bucket of test rows (a feature's
  train frequency, the behaviour length, the user's train rows; DG-ENN Table 6 / Fig. 6), with an
  optional user-cluster bootstrap and planted-probability (expected AUC) scores.
- :class:`TSNE`: item embeddings of trained runs side by side (Res-embedding Fig. 7).
- :class:`Curves`: per-epoch log entries of runs as lines (Res-embedding Fig. 5's train / test loss).
- :class:`Envelope`: the envelope radius of the item embeddings per interest domain (Res-embedding
  Theorem 1's R_max).
- :class:`DataStats`: feature-frequency and behaviour-length distributions of a data set (DG-ENN Fig. 1).
- :class:`Explain`: the interactions a trained model selected, per layer (GraphFM Fig. 4).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.schema import Kind, Role
from ..errors import ConfigError
from ..plots import Panel, Series, figure
from .analysis import (
    DEFAULT_EDGES,
    behaviour_rows,
    categorical_fields,
    category_cosines,
    envelope_summary,
    feature_frequencies,
    history_lengths,
    item_colours,
    item_embedding_matrix,
    planted_test_probabilities,
    top_items,
    tsne,
    value_frequency_rows,
    value_label,
)
from .core import Context, DataSet, Item, Run, Variant
from .stats import (
    bucket_index,
    bucket_names,
    grouped_metrics,
    mean_std,
    quantile_edges,
    relaimpr,
    user_cluster_sampler,
    wilcoxon_greater,
)
from .tables import Column, fmt, pm, write_table

#: caption of figures measured on the team's shared machine
SHARED_MACHINE = "measured on the shared 2-core machine while other jobs ran"


# ----- comparison tables ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """An extra per-run figure of a :class:`Table` (averaged over seeds): ``fn(run) -> float``."""

    name: str
    header: str
    fn: Callable[[Run], float]


def at_best_epoch(key: str, header: str | None = None) -> Metric:
    """A per-epoch log entry (e.g. a provider's diagnostic) at the run's best epoch."""

    def fn(run: Run) -> float:
        m = run.metrics
        rec = next((h for h in m.get("history", []) if h["epoch"] == m["best_epoch"]), {})
        return float(rec.get(key, math.nan))

    return Metric(key, header or key, fn)


@dataclass(frozen=True)
class Plot:
    """A panel drawn from a table's rows: ``bar`` (test AUC per row, one series per data set),
    ``line`` (``y`` against ``x``, one series per value of ``series``), ``heatmap`` (``y`` on the
    grid ``rows`` x ``cols``). ``x``, ``series``, ``rows`` and ``cols`` name variant keys or row
    columns (e.g. an extra metric)."""

    kind: str
    x: str | None = None
    series: str | None = None
    rows: str | None = None
    cols: str | None = None
    y: str = "test_auc_mean"
    logx: bool = False
    title: str = ""
    xlabel: str = ""
    point_labels: str | None = None


@dataclass
class Table(Item):
    """Variants x data sets x seeds and what to report about them (see the module docstring)."""

    name: str
    title: str
    variants: list[Variant]
    datasets: list[DataSet]
    seeds: tuple[int, ...] = (1, 2, 3)
    base: str | None = None
    caption: str = ""
    row_header: str = "variant"
    extra: tuple[Metric, ...] = ()
    plots: tuple[Plot, ...] = ()
    show_params: bool = False

    def runs(self, ctx: Context) -> list[Run]:
        labels = [v.label for v in self.variants]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{self.name}: duplicate variant labels {labels}")
        clash = sorted({k for v in self.variants for k in v.keys} & {"dataset", "variant", "runs", "seeds", "overrides"})
        if clash:  # a key of that name would overwrite the row's own column (summary_row)
            raise ConfigError(f"{self.name}: variant keys {clash} are names of the table's own columns")
        return [ctx.resolve(v, d, s) for d in ctx.selected_data(self.datasets) for v in self.variants
                if ctx.selected(v.label) for s in self.item_seeds(ctx)]

    def summary(self, runs: list[Run]) -> list[dict]:
        """One row per (data set, variant) that has runs: means over seeds, RelaImpr, Wilcoxon p."""
        rows = []
        for d in self.datasets:
            for v in self.variants:
                rs = [r for r in runs if r.label == v.label and r.dataset == d.label and r.metrics is not None]
                if not rs:
                    continue
                rows.append(summary_row(v, d.label, rs, self.extra))
        by = {(r["dataset"], r["variant"]): r for r in rows}
        for v in self.variants:
            for d in self.datasets:
                r = by.get((d.label, v.label))
                if r is None:
                    continue
                ref = by.get((d.label, v.base or self.base)) if (v.base or self.base) else None
                r["relaimpr_pct"] = relaimpr(r["test_auc_mean"], ref["test_auc_mean"]) if ref else math.nan
                other = by.get((d.label, v.vs)) if v.vs else None
                r["vs"] = v.vs
                r["p"] = wilcoxon_greater(other["auc_by_seed"], r["auc_by_seed"]) if other else None
        return rows

    def columns(self, rows: list[dict]) -> list[Column]:
        keys = list(dict.fromkeys(k for v in self.variants for k in v.keys))
        cols = [Column("data set", "dataset")] if len(self.datasets) > 1 else []
        cols += [Column(self.row_header, "variant")] + [Column(k, k) for k in keys]
        if self.show_params:
            cols.append(Column("overrides", cell=lambda r: r["overrides"] or "(none)"))
        cols += [Column("runs", "runs"),
                 Column("test AUC", cell=lambda r: pm(r["test_auc_mean"], r["test_auc_std"])),
                 Column("test logloss", cell=lambda r: pm(r["test_logloss_mean"], r["test_logloss_std"]))]
        if self.base or any(v.base for v in self.variants):
            cols.append(Column("RelaImpr", cell=lambda r: "n/a" if math.isnan(r["relaimpr_pct"])
                               else f"{r['relaimpr_pct']:+.2f}%"))
        if any(v.vs for v in self.variants):
            cols.append(Column("better row: Wilcoxon p", cell=_significance))
        cols += [Column(m.header, cell=lambda r, m=m: fmt(r[m.name], 4)) for m in self.extra]
        cols += [Column("best epoch", cell=lambda r: f"{r['best_epoch_mean']:.1f}"),
                 Column("s/epoch", cell=lambda r: f"{r['seconds_per_epoch']:.2f}"),
                 Column("run key", "run_key")]
        return cols

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        rows = self.summary(runs)
        if not rows:
            raise ConfigError(f"{self.name}: no finished runs (--only {ctx.only} selects none of its variants?)")
        caption = self.caption + ("\n\n" if self.caption else "") + \
            _seeds_note(rows, any(v.vs for v in self.variants))
        table = write_table(stem, rows, self.columns(rows), self.title, caption,
                            csv_keys=[k for k in rows[0] if k != "auc_by_seed"])
        figures = []
        if self.plots:
            panels = [plot_panel(p, rows, self) for p in self.plots]
            figures.append({"title": self.title, "png": str(figure(stem.with_suffix(".png"), panels, self.title,
                                                                   SHARED_MACHINE))})
        return {"tables": [table], "figures": figures}


def summary_row(v: Variant, dataset: str, rs: list[Run], extra=()) -> dict:
    """Mean ± std over the seeds of one variant's runs."""
    ms = [r.metrics for r in rs]
    auc = [m["test"].get("auc") for m in ms]
    ll = [m["test"].get("logloss") for m in ms]
    row = {"dataset": dataset, "variant": v.label, **dict(v.keys), "overrides": _overrides(v), "runs": len(rs),
           "seeds": " ".join(str(r.seed) for r in rs)}
    row["test_auc_mean"], row["test_auc_std"] = mean_std(auc)
    row["test_logloss_mean"], row["test_logloss_std"] = mean_std(ll)
    row["test_gauc_mean"] = mean_std([m["test"].get("gauc") for m in ms])[0]
    row["valid_auc_mean"] = mean_std([m.get("valid", {}).get("auc") for m in ms])[0]
    row["best_epoch_mean"] = float(np.mean([m["best_epoch"] for m in ms]))
    row["seconds_per_epoch"] = float(np.mean([m["seconds_per_epoch"] for m in ms]))
    row["train_samples_per_s"] = mean_std([m.get("train_samples_per_s") for m in ms])[0]
    row["aucs"] = " ".join(fmt(a) for a in auc)
    row["run_key"] = rs[0].key
    for m in extra:
        row[m.name] = mean_std([m.fn(r) for r in rs])[0]
    row["auc_by_seed"] = {r.seed: r.metrics["test"].get("auc") for r in rs}
    return row


def _overrides(v: Variant) -> str:
    def short(k: str) -> str:
        for p in ("embedding.params.", "model."):
            if k.startswith(p) and k != "model.name":
                return k[len(p):]
        return k

    return ", ".join(f"{short(k)}={val}" for k, val in v.set.items() if k != "model.name")


def _significance(r: dict) -> str:
    if r["vs"] is None:
        return "—"
    if r["p"] is None:
        return f"{r['vs']}: n/a"
    return f"{r['vs']}: {r['p']:.3f}" + (" ★" if r["p"] < 0.05 else "")


def _seeds_note(rows: list[dict], wilcoxon: bool) -> str:
    seeds = sorted({s for r in rows for s in r["auc_by_seed"]})
    note = f"Mean ± std over seeds {', '.join(map(str, seeds))}."
    if wilcoxon:
        note += (f" Wilcoxon: one-sided exact signed-rank test over paired seeds that the named row has the higher "
                 f"test AUC; ★: p < 0.05 (the smallest p with {len(seeds)} seeds is {2.0 ** -len(seeds):.3f}).")
    return note


def _value(r: dict, key: str):
    return r.get(key)


def plot_panel(p: Plot, rows: list[dict], table: Table) -> Panel:
    ylabel = {"test_auc_mean": "test AUC", "test_logloss_mean": "test logloss"}.get(p.y, p.y)
    err = p.y.replace("_mean", "_std") if p.y.endswith("_mean") else None
    if p.kind == "bar":
        series = []
        for d in dict.fromkeys(r["dataset"] for r in rows):
            rs = [r for r in rows if r["dataset"] == d]
            series.append(Series(d, [r["variant"] for r in rs], [r[p.y] for r in rs],
                                 [r[err] for r in rs] if err else None))
        return Panel("bar", series, title=p.title, ylabel=ylabel, legend=len(series) > 1)
    if p.kind == "line":
        groups = dict.fromkeys(_value(r, p.series) for r in rows) if p.series else {None: None}
        series = []
        for g in groups:
            rs = sorted([r for r in rows if not p.series or _value(r, p.series) == g], key=lambda r: _value(r, p.x))
            series.append(Series(str(g) if g is not None else ylabel, [_value(r, p.x) for r in rs],
                                 [r[p.y] for r in rs], [r[err] for r in rs] if err else None))
        labels = None
        if p.point_labels and len(series) == 1:
            rs = sorted(rows, key=lambda r: _value(r, p.x))
            labels = [f"{p.point_labels}={_value(r, p.point_labels):g}" for r in rs]
        return Panel("line", series, title=p.title, xlabel=p.xlabel or p.x, ylabel=ylabel, logx=p.logx,
                     point_labels=labels)
    if p.kind == "heatmap":
        rv = sorted(dict.fromkeys(_value(r, p.rows) for r in rows))
        cv = sorted(dict.fromkeys(_value(r, p.cols) for r in rows))
        grid = np.full((len(rv), len(cv)), np.nan)
        for r in rows:
            grid[rv.index(_value(r, p.rows)), cv.index(_value(r, p.cols))] = r[p.y]
        return Panel("heatmap", grid=grid, row_labels=rv, col_labels=cv, title=p.title or ylabel,
                     xlabel=p.cols, ylabel=p.rows)
    raise ConfigError(f"plot kind must be bar, line or heatmap, got {p.kind!r}")


# ----- paired buckets of test rows (DG-ENN Table 6 / Fig. 6) ----------------------------------------
BUCKETINGS = ("feature_frequency", "hist", "user_rows", "values")


@dataclass
class Buckets(Item):
    """For each pair (base, graph) of variants and data set, paired by seed: metrics of the test rows
    in each bucket, their mean over seeds and the gain graph - base (mean ± std of the per-seed
    differences; for logloss a negative gain means the graph model is better).

    ``by="feature_frequency"`` (Table 6): for each field of ``fields`` a row's train frequency of
    its value, bucketed by ``edges``, plus one row per field for ``freq < rare``, one for "any listed
    field rare" and one for all rows. ``by="values"`` (Table 6 as the paper has it): ``per_field``
    chosen values of each field of ``fields`` whose train frequency lies in ``freq`` (inclusive; the
    paper's four had 5-12), those with the most test rows (ties: the lower id), one bucket each: the
    test rows holding the value. ``by="hist"`` / ``"user_rows"`` (Fig. 6): the row's behaviour
    length / its user's train rows, buckets from ``edges`` or the quintiles. ``bootstrap`` > 0 adds a
    user-cluster bootstrap (test users resampled with replacement) of each bucket's AUC gain and of
    the difference first - last bucket. ``truth`` (synthetic data): scores are expected AUCs under
    the planted click probabilities, with the Bayes (planted) expected AUC beside them."""

    name: str
    title: str
    pairs: list[tuple[Variant, Variant]]
    datasets: list[DataSet]
    by: str = "hist"
    fields: tuple[str, ...] = ("user_id", "item_id")
    edges: tuple[int, ...] | None = None
    rare: int = 10
    seeds: tuple[int, ...] = (1, 2, 3)
    caption: str = ""
    plot: bool = True
    bootstrap: int = 0
    truth: bool = False
    freq: tuple[int, int] = (5, 12)
    per_field: int = 2

    def __post_init__(self):
        if self.by not in BUCKETINGS:
            raise ConfigError(f"{self.name}: by must be one of {BUCKETINGS}, got {self.by!r}")
        if self.bootstrap and self.by in ("feature_frequency", "values"):
            raise ConfigError(f"{self.name}: the bootstrap needs one bucket per row (by=hist or user_rows)")

    def runs(self, ctx: Context) -> list[Run]:
        return [ctx.resolve(v, d, s) for d in ctx.selected_data(self.datasets) for pair in self.pairs for v in pair
                if ctx.selected(pair[0].label) and ctx.selected(pair[1].label) for s in self.item_seeds(ctx)]

    def _groups(self, data) -> tuple[np.ndarray, np.ndarray, int, list[tuple[str, str]]]:
        """(rows, groups, number of groups, (field, bucket) names) over the test split."""
        n = data.num_rows("test")
        if self.by == "feature_frequency":
            fields = categorical_fields(data.schema, list(self.fields), "table6")
            edges = list(self.edges or DEFAULT_EDGES)
            freq = feature_frequencies(data, fields)  # [N, F]
            f, nb = len(fields), len(edges) + 1
            b = bucket_index(freq, edges)
            rows_f = np.repeat(np.arange(n), f)
            rare = (freq < self.rare).ravel()
            any_rare = np.flatnonzero((freq < self.rare).any(1))
            rows = np.concatenate([rows_f, rows_f[rare], any_rare, np.arange(n)])
            groups = np.concatenate([np.tile(np.arange(f), n) * nb + b.ravel(), f * nb + np.tile(np.arange(f), n)[rare],
                                     np.full(any_rare.size, f * nb + f), np.full(n, f * nb + f + 1)])
            names = ([(fl, "train freq " + nm) for fl in fields for nm in bucket_names(edges)]
                     + [(fl, f"rare (train freq < {self.rare})") for fl in fields]
                     + [("any of " + "/".join(fields), f"rare (train freq < {self.rare})"), ("all", "all test rows")])
            return rows, groups, f * nb + f + 2, names
        if self.by == "values":
            return self._chosen_values(data)
        length = history_lengths(data, self.by)
        edges = list(self.edges) if self.edges else quantile_edges(length)
        nb = len(edges) + 1
        rows = np.concatenate([np.arange(n), np.arange(n)])
        groups = np.concatenate([bucket_index(length, edges), np.full(n, nb)])
        what = "behaviour length" if self.by == "hist" else "user's train rows"
        return rows, groups, nb + 1, [(what, nm) for nm in bucket_names(edges)] + [("all", "all test rows")]

    def _chosen_values(self, data) -> tuple[np.ndarray, np.ndarray, int, list[tuple[str, str]]]:
        """``by="values"``: the test rows of each chosen value (see the class docstring)."""
        fields = categorical_fields(data.schema, list(self.fields), "table6")
        freq = feature_frequencies(data, fields)  # [N, F] train frequency of each test row's value
        te = data.split("test")
        lo, hi = self.freq
        rows, groups, names = [], [], []
        for j, f in enumerate(fields):  # a handful of fields
            ids = np.asarray(te[f], dtype=np.int64)
            ok = (freq[:, j] >= lo) & (freq[:, j] <= hi) & (ids >= 2)  # ids 0 / 1: padding / OOV
            vals, count = np.unique(ids[ok], return_counts=True)
            for v in vals[np.lexsort((vals, -count))][:self.per_field]:
                hit = np.flatnonzero(ids == v)
                rows.append(hit)
                groups.append(np.full(hit.size, len(names)))
                label = value_label(data.vocabs[data.schema[f].table], v)
                names.append((f, f"{label} (train freq {int(freq[hit[0], j])})"))
        if not names:
            raise ConfigError(f"{self.name}: no test value of {fields} has a train frequency in {list(self.freq)}")
        return np.concatenate(rows), np.concatenate(groups), len(names), names

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        from ..runs.scoring import score_test_split

        out_rows, checks, boot_rows, fig_panels = [], [], [], []
        for d in self.datasets:
            drs = [r for r in runs if r.dataset == d.label]
            if not drs:
                continue
            data = ctx.store.data(drs[0].cfg)
            y = np.asarray(data.split("test")[data.schema.label])
            rows, groups, ng, names = self._groups(data)
            truth = planted_test_probabilities(drs[0].cfg, data) if self.truth else None
            user = data.schema.first(Role.USER)
            users = np.asarray(data.split("test")[user.name], dtype=np.int64) if user is not None else None
            for base, graph in self.pairs:
                pr = {}
                for v in (base, graph):
                    for r in drs:
                        if r.label == v.label:
                            p, a, ref = score_test_split(r.dir, data)
                            pr[(v.label, r.seed)] = p
                            checks.append(f"{r.label} seed {r.seed} ({r.dir.name}): test AUC {a:.4f}, "
                                          f"metrics.json {ref:.4f}" + ("" if abs(a - ref) < 1e-4 else " (MISMATCH)"))
                seeds = sorted({s for (lab, s) in pr if lab == base.label} & {s for (lab, s) in pr if lab == graph.label})
                if not seeds:
                    continue
                pb = [pr[(base.label, s)] for s in seeds]
                pg = [pr[(graph.label, s)] for s in seeds]
                m = _compare(y, pb, pg, rows, groups, ng, truth)
                ucount = _users_per_group(users, rows, groups, ng) if users is not None else np.full(ng, np.nan)
                pair = f"{base.label} → {graph.label}"
                for i, (fld, bucket) in enumerate(names):
                    if m["n"][i] == 0:
                        continue
                    out_rows.append({"dataset": d.label, "pair": pair, "field": fld, "bucket": bucket,
                                     "users": float(ucount[i]), "seeds": " ".join(map(str, seeds)),
                                     **{k: float(v[i]) for k, v in m.items()}})
                if self.bootstrap and users is not None:  # hist / user_rows: the first n entries, one per row
                    boot_rows += _bootstrap(y, pb, pg, groups[:y.size], names[:-1], users, self.bootstrap, truth,
                                            d.label, pair)
                if self.plot:
                    fig_panels += _bucket_panels([r for r in out_rows if r["pair"] == pair and r["dataset"] == d.label
                                                  and r["field"] != "all"], pair, self.by)
        if not out_rows:
            raise ConfigError(f"{self.name}: no paired runs to compare")
        score = "eAUC" if self.truth else "AUC"
        cols = [Column("data set", "dataset")] if len(self.datasets) > 1 else []
        cols += [Column("pair", "pair"), Column("field", "field"), Column("bucket", "bucket"),
                 Column("test rows", cell=lambda r: f"{int(r['n'])}")]
        if self.by not in ("feature_frequency", "values"):
            cols.append(Column("users", cell=lambda r: "n/a" if math.isnan(r["users"]) else f"{int(r['users'])}"))
        cols += [Column("pos. rate", cell=lambda r: fmt(r["pos_rate"], 3)),
                 Column("base logloss", "base_logloss"), Column("graph logloss", "graph_logloss"),
                 Column("gain logloss", cell=lambda r: pm(r["gain_logloss"], r["gain_logloss_std"])),
                 Column("base AUC", "base_auc"), Column("graph AUC", "graph_auc"),
                 Column("gain AUC", cell=lambda r: pm(r["gain_auc"], r["gain_auc_std"])),
                 Column("RelaImpr", cell=lambda r: "n/a" if math.isnan(r["rel_gain_auc_pct"])
                        else f"{r['rel_gain_auc_pct']:.1f}%")]
        if self.truth:
            cols += [Column("Bayes eAUC", "bayes_eauc"), Column("base eAUC", "base_eauc"),
                     Column("graph eAUC", "graph_eauc"),
                     Column("gain eAUC", cell=lambda r: pm(r["gain_eauc"], r["gain_eauc_std"]))]
        caption = (self.caption + "\n\n" if self.caption else "") + "Runs scored (recomputed vs metrics.json): " + \
            "; ".join(checks)
        tables = [write_table(stem, out_rows, cols, self.title, caption)]
        if boot_rows:
            bcols = [Column("pair", "pair"), Column("what", "what"),
                     Column(f"{score} gain", cell=lambda r: f"{r['gain']:+.4f}"),
                     Column("5%-95%", cell=lambda r: f"[{r['q05']:+.4f}, {r['q95']:+.4f}]"),
                     Column("P(> 0)", cell=lambda r: f"{r['p_positive']:.2f}"), Column("replicates", "B")]
            tables.append(write_table(stem.with_name(stem.name + "-bootstrap"), boot_rows, bcols,
                                      f"{self.title}: user-cluster bootstrap ({score})",
                                      "Test users resampled with replacement (all rows of a drawn user), the same "
                                      "users for base and graph runs; gains are means over the paired seeds."))
        figures = []
        if fig_panels:
            figures.append({"title": self.title, "png": str(figure(stem.with_suffix(".png"), fig_panels, self.title,
                                                                   SHARED_MACHINE))})
        return {"tables": tables, "figures": figures}


def _compare(y, pb, pg, rows, groups, ng, truth) -> dict[str, np.ndarray]:
    """Mean over seeds of base / graph metrics per group and the paired gain graph - base (mean, std)."""
    mb = [grouped_metrics(y, p, rows, groups, ng, truth) for p in pb]  # loop over seeds
    mg = [grouped_metrics(y, p, rows, groups, ng, truth) for p in pg]
    out = {"n": mb[0]["n"], "pos_rate": mb[0]["pos_rate"]}
    for k in ["logloss", "auc"] + (["eauc"] if truth is not None else []):
        b, g = np.stack([m[k] for m in mb]), np.stack([m[k] for m in mg])
        with np.errstate(invalid="ignore"):
            out[f"base_{k}"], out[f"graph_{k}"] = b.mean(0), g.mean(0)
            out[f"gain_{k}"], out[f"gain_{k}_std"] = (g - b).mean(0), (g - b).std(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_gain_auc_pct"] = 100 * out["gain_auc"] / (out["base_auc"] - 0.5)
    if truth is not None:
        out["bayes_eauc"] = grouped_metrics(y, truth, rows, groups, ng, truth)["eauc"]
    return out


def _users_per_group(users: np.ndarray, rows: np.ndarray, groups: np.ndarray, ng: int) -> np.ndarray:
    """Distinct users per group: unique (group, user) keys."""
    u = users[rows]
    span = int(u.max()) + 1 if u.size else 1
    key = np.unique(groups.astype(np.int64) * span + u) // span
    return np.bincount(key, minlength=ng).astype(float)


def _bootstrap(y, pb, pg, bucket, names, users, reps, truth, dataset, pair) -> list[dict]:
    """Per bucket: the seed-mean AUC gain (eAUC with ``truth``) and its user-cluster bootstrap
    percentiles (the same resampled users for every seed and both models); with two or more buckets
    also the difference first - last bucket. ``bucket``: the bucket of every test row."""
    nb = len(names)
    key = "eauc" if truth is not None else "auc"

    def gains(sample: np.ndarray) -> np.ndarray:
        g = bucket[sample]
        out = np.zeros(nb)
        for b_, g_ in zip(pb, pg):  # loop over seeds
            out += grouped_metrics(y, g_, sample, g, nb, truth)[key] - grouped_metrics(y, b_, sample, g, nb, truth)[key]
        return out / len(pb)

    point = gains(np.arange(y.size))
    draw = user_cluster_sampler(users)
    rng = np.random.default_rng(0)
    sims = np.stack([gains(draw(rng)) for _ in range(reps)])  # bootstrap replicates
    out = [{"dataset": dataset, "pair": pair, "what": f"{names[i][0]} {names[i][1]}", "gain": float(point[i]),
            "q05": float(np.nanpercentile(sims[:, i], 5)), "q95": float(np.nanpercentile(sims[:, i], 95)),
            "p_positive": float(np.mean(sims[:, i] > 0)), "B": reps} for i in range(nb)]
    if nb >= 2:
        diff = sims[:, 0] - sims[:, -1]
        out.append({"dataset": dataset, "pair": pair, "what": f"{names[0][1]} minus {names[-1][1]}",
                    "gain": float(point[0] - point[-1]), "q05": float(np.nanpercentile(diff, 5)),
                    "q95": float(np.nanpercentile(diff, 95)), "p_positive": float(np.mean(diff > 0)), "B": reps})
    return out


def _bucket_panels(rows: list[dict], pair: str, by: str) -> list[Panel]:
    if not rows:
        return []
    x = [f"{r['bucket']}\n(n={int(r['n'])})" if by not in ("feature_frequency", "values") else f"{r['field']}\n{r['bucket']}"
         for r in rows]
    base, graph = pair.split(" → ")
    xl = {"hist": "behaviour length (test row)", "user_rows": "user's train rows"}.get(by, "train frequency")
    return [Panel("line", [Series(base, list(range(len(x))), [r["base_auc"] for r in rows]),
                           Series(graph, list(range(len(x))), [r["graph_auc"] for r in rows])],
                  title=f"{pair}: test AUC per bucket", xlabel=xl, ylabel="test AUC"),
            Panel("bar", [Series("gain", x, [r["gain_auc"] for r in rows], [r["gain_auc_std"] for r in rows])],
                  title="AUC gain (± std of the paired per-seed gains)", xlabel=xl, ylabel="AUC gain", hline=0.0,
                  legend=False)]


# ----- learned item embeddings (Res-embedding Fig. 7) ----------------------------------------------
@dataclass
class TSNE(Item):
    """Exact t-SNE of the ``n_items`` items most frequent as train targets, one panel per variant
    (the first seed's run), coloured by the item's first ``colour`` attribute value (default: the
    first multi-valued item attribute), plus within- vs across-colour cosines of the embeddings."""

    name: str
    title: str
    panels: list[Variant]
    dataset: DataSet
    n_items: int = 1000
    colour: str | None = None
    iters: int = 1000
    perplexity: float = 30.0
    seeds: tuple[int, ...] = (1,)
    caption: str = ""

    def runs(self, ctx: Context) -> list[Run]:
        seed = self.item_seeds(ctx)[0]
        return [ctx.resolve(v, self.dataset, seed) for v in self.panels if ctx.selected(v.label)]

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        from ..runs.assemble import load_run

        data = ctx.store.data(runs[0].cfg)
        ids = top_items(data, self.n_items)
        cols, attr = item_colours(data, self.colour)
        panels, rows = [], []
        colours = cols[ids]
        uniq = np.unique(colours)
        for r in runs:  # a handful of panels
            _, model, _, _ = load_run(r.dir)
            emb = item_embedding_matrix(model)
            y = tsne(emb[ids], perplexity=min(self.perplexity, (len(ids) - 1) / 3), iters=self.iters, seed=r.seed)
            cos = category_cosines(emb, cols, ids=ids)
            panels.append(Panel("scatter", [Series(value_label(data.vocabs[attr], u), y[colours == u, 0],
                                                   y[colours == u, 1]) for u in uniq], title=r.label,
                                legend=r is runs[-1]))
            rows.append({"panel": r.label, "seed": r.seed, "items": len(ids), "colour": attr,
                         "test_auc": r.metrics["test"]["auc"], "intra_cos": cos["intra"], "inter_cos": cos["inter"],
                         "margin": cos["margin"], "run_key": r.key})
        cols_ = [Column("panel", "panel"), Column("seed", "seed"), Column("items", "items"), Column("colour", "colour"),
                 Column("test AUC", "test_auc"), Column("intra-colour cosine", "intra_cos"),
                 Column("inter-colour cosine", "inter_cos"), Column("margin", "margin"), Column("run key", "run_key")]
        table = write_table(stem, rows, cols_, self.title, self.caption)
        png = figure(stem.with_suffix(".png"), panels, self.title, SHARED_MACHINE, panel_size=(5.5, 5.0))
        return {"tables": [table], "figures": [{"title": self.title, "png": str(png)}]}


# ----- learning curves (Res-embedding Fig. 5) -------------------------------------------------------
class _OneDataSet:
    """Runs of an item made of ``variants`` on one ``dataset``, over the item's seeds."""

    def runs(self, ctx: Context) -> list[Run]:
        return [ctx.resolve(v, self.dataset, s) for v in self.variants if ctx.selected(v.label)
                for s in self.item_seeds(ctx)]


@dataclass
class Curves(_OneDataSet, Item):
    """Per-epoch entries of each run's ``metrics.jsonl`` history (``keys``: (entry, label), e.g.
    ``("train_loss", "train")`` and ``("monitor_test_logloss", "test")``, the latter logged with
    ``train.log_test``) against the epoch: one line per (variant, key), the mean over seeds (epochs
    that every seed ran), and the table of those means."""

    name: str
    title: str
    variants: list[Variant]
    dataset: DataSet
    keys: tuple[tuple[str, str], ...] = (("train_loss", "train"), ("monitor_test_logloss", "test"))
    seeds: tuple[int, ...] = (1,)
    ylabel: str = "logloss"
    caption: str = ""

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        rows, series = [], []
        for v in self.variants:
            hs = [r.metrics["history"] for r in runs if r.label == v.label]
            if not hs:
                continue
            n = min(len(h) for h in hs)
            for key, lab in self.keys:
                if any(key not in h[0] for h in hs):
                    raise ConfigError(f"{self.name}: {v.label}'s history has no {key!r} (train.log_test?)")
                y = np.array([[h[e][key] for e in range(n)] for h in hs]).mean(0)  # [epochs], mean over seeds
                series.append(Series(f"{v.label} {lab}", list(range(1, n + 1)), y.tolist()))
            for e in range(n):
                rows.append({"variant": v.label, "epoch": e + 1, "seeds": len(hs),
                             **{lab: float(np.mean([h[e][key] for h in hs])) for key, lab in self.keys}})
        if not rows:
            raise ConfigError(f"{self.name}: no finished runs")
        cols = [Column("variant", "variant"), Column("epoch", "epoch"), Column("seeds", "seeds")] + \
            [Column(lab, cell=lambda r, lab=lab: fmt(r[lab], 4)) for _, lab in self.keys]
        table = write_table(stem, rows, cols, self.title, self.caption)
        png = figure(stem.with_suffix(".png"), [Panel("line", series, title=self.title, xlabel="epoch",
                                                      ylabel=self.ylabel)], self.title, SHARED_MACHINE,
                     panel_size=(7.0, 4.5))
        return {"tables": [table], "figures": [{"title": self.title, "png": str(png)}]}


# ----- envelope radius per interest domain (Res-embedding Theorem 1) ---------------------------------
@dataclass
class Envelope(_OneDataSet, Item):
    """Theorem 1's R_max measured: for each variant (mean ± std over seeds) the envelope radius
    phi (smallest enclosing ball, :func:`~ctrgraph.experiments.analysis.envelope_radii`) of the
    item embeddings of each interest domain (``colour``: the item's first genre / category, the
    t-SNE colouring), among the ``n_items`` items most frequent as train targets; its max (R_max)
    and mean, phi of all those items, and the scale-free ratios to it."""

    name: str
    title: str
    variants: list[Variant]
    dataset: DataSet
    n_items: int = 1000
    colour: str | None = None
    seeds: tuple[int, ...] = (1, 2, 3)
    caption: str = ""

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        from ..runs.assemble import load_run

        data = ctx.store.data(runs[0].cfg)
        ids = top_items(data, self.n_items)
        doms, attr = item_colours(data, self.colour)
        per: dict[str, list[dict]] = {}
        for r in runs:  # a handful of runs
            _, model, _, _ = load_run(r.dir)
            e = envelope_summary(item_embedding_matrix(model), doms, ids)
            per.setdefault(r.label, []).append({**e, "auc": r.metrics["test"]["auc"]})
        keys = ("r_max", "r_mean", "r_all", "r_max_ratio", "r_mean_ratio", "auc")
        rows = []
        for label, es in per.items():
            row = {"variant": label, "seeds": len(es), "items": es[0]["items"], "domains": es[0]["domains"],
                   "colour": attr}
            for k in keys:
                v = np.array([x[k] for x in es])
                row[k] = pm(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), 4)
            rows.append(row)
        cols = [Column("variant", "variant"), Column("R_max = max φ(domain)", "r_max"),
                Column("mean φ(domain)", "r_mean"), Column("φ(all items)", "r_all"),
                Column("R_max / φ(all)", "r_max_ratio"), Column("mean φ / φ(all)", "r_mean_ratio"),
                Column("test AUC", "auc"), Column("seeds", "seeds"), Column("items", "items"),
                Column("domains", "domains"), Column("domain", "colour")]
        return {"tables": [write_table(stem, rows, cols, self.title, self.caption)], "figures": []}


@dataclass
class CategorySimilarity(_OneDataSet, Item):
    """EGIN Table 5 and Fig. 4: mean cosine of the item embeddings of intra-category and
    inter-category pairs, per variant (mean ± std over seeds; all pairs among the ``max_items``
    most frequent train targets, by their most frequent category), and the cosine matrix of
    ``pairs`` random same-category item pairs (the first variant's first seed). The embeddings are
    :func:`~ctrgraph.experiments.analysis.item_embedding_matrix` (EGIN: its graph table)."""

    name: str
    title: str
    variants: list[Variant]
    dataset: DataSet
    category: str | None = None
    max_items: int = 2000
    pairs: int = 4
    seeds: tuple[int, ...] = (1, 2, 3)
    caption: str = ""

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        from ..runs.assemble import load_run

        data = ctx.store.data(runs[0].cfg)
        cats, attr = item_colours(data, self.category)
        ids = top_items(data, self.max_items)
        per: dict[str, list[dict]] = {}
        first = None
        for r in runs:
            _, model, _, _ = load_run(r.dir)
            emb = item_embedding_matrix(model)
            per.setdefault(r.label, []).append(category_cosines(emb, cats, ids=ids, max_items=self.max_items))
            first = first or (r, emb)
        rows = []
        for label, cs in per.items():
            row = {"variant": label, "seeds": len(cs), "items": cs[0]["items"], "category": attr}
            for k in ("intra", "inter", "margin"):
                v = np.array([c[k] for c in cs])
                row[k] = pm(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), 4)
            rows.append(row)
        cols_ = [Column("variant", "variant"), Column("intra-category cosine", "intra"),
                 Column("inter-category cosine", "inter"), Column("gap", "margin"), Column("seeds", "seeds"),
                 Column("items", "items"), Column("category", "category")]
        table = write_table(stem, rows, cols_, self.title, self.caption)
        r, emb = first
        rng = np.random.default_rng(0)
        c = cats[ids]
        multi = [u for u in np.unique(c) if (c == u).sum() >= 2 and u >= 2]
        chosen = rng.choice(multi, min(self.pairs, len(multi)), replace=False) if multi else []
        pick = np.concatenate([ids[c == u][:2] for u in chosen]) if len(chosen) else ids[:0]
        x = emb[pick].astype(np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        vocab = data.vocabs[data.schema.first(Role.ITEM).table]
        labels = [f"{value_label(data.vocabs[attr], cats[i])}:{value_label(vocab, i)}" for i in pick]
        png = figure(stem.with_suffix(".png"), [Panel("heatmap", grid=x @ x.T, row_labels=labels, col_labels=labels,
                                                      title=f"{r.label} (seed {r.seed})")],
                     self.title, SHARED_MACHINE, panel_size=(7.0, 6.0))
        return {"tables": [table], "figures": [{"title": self.title, "png": str(png)}]}


# ----- data statistics (DG-ENN Fig. 1) --------------------------------------------------------------
@dataclass
class DataStats(Item):
    """Feature-frequency buckets of each categorical field (``fields``, default all encoded ones) and
    behaviour-length buckets of the users, from the train split (no training)."""

    name: str
    title: str
    dataset: DataSet
    fields: tuple[str, ...] | None = None
    edges: tuple[int, ...] = DEFAULT_EDGES
    len_edges: tuple[int, ...] | None = None
    caption: str = ""

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        cfg = ctx.resolve(Variant("data"), self.dataset, 1).cfg
        data = ctx.store.data(cfg)
        fields = list(self.fields) if self.fields else \
            [f.name for f in data.schema.fields if f.kind == Kind.CATEGORICAL and f.encoded]
        rows = value_frequency_rows(data, fields, list(self.edges)) + \
            behaviour_rows(data, list(self.len_edges or self.edges))
        cols = [Column("panel", "panel"), Column("field", "field"), Column("bucket", "bucket"),
                Column("count", cell=lambda r: f"{r['count']:,}"), Column("share", cell=lambda r: f"{r['share']:.1%}")]
        table = write_table(stem, rows, cols, self.title, self.caption)
        feats = [r for r in rows if r["panel"] == "feature frequency"]
        beh = [r for r in rows if r["panel"] == "behaviour length"]
        fpanel = Panel("bar", [Series(f, [r["bucket"] for r in feats if r["field"] == f],
                                      [r["share"] for r in feats if r["field"] == f]) for f in fields],
                       title="feature frequency", xlabel="train frequency of the value", ylabel="share of the field's values")
        bpanel = Panel("bar", [Series("users", [r["bucket"] for r in beh], [r["share"] for r in beh])],
                       title="behaviour length", xlabel="behaviour-sequence length", ylabel="share of users", legend=False)
        png = figure(stem.with_suffix(".png"), [fpanel, bpanel], f"{self.title} ({self.dataset.label}, train split)",
                     panel_size=(6.0, 4.0))
        return {"tables": [table], "figures": [{"title": self.title, "png": str(png)}]}


# ----- selected interactions (GraphFM Fig. 4) --------------------------------------------------------
@dataclass
class Explain(Item):
    """Per test row and layer, the interactions a trained model selected and their weights (a model
    with ``explain()``: GraphFM), for the first seed's run of ``variant``."""

    name: str
    title: str
    variant: Variant
    dataset: DataSet
    rows: tuple[int, ...] = (0, 1)
    split: str = "test"
    top: int = 3
    seeds: tuple[int, ...] = (1,)
    caption: str = ""

    def runs(self, ctx: Context) -> list[Run]:
        return [ctx.resolve(self.variant, self.dataset, self.item_seeds(ctx)[0])]

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        from ..runs.explain import explain_run

        out = stem.parent / f"{stem.name}-rows"
        table = explain_run(runs[0].dir, out, list(self.rows), self.split, runs[0].cfg.data.data_dir)
        sel = table[table["selected"]].sort_values(["row", "layer", "field_i", "weight"],
                                                   ascending=[True, True, True, False])
        top = sel.groupby(["row", "layer", "field_i"], sort=False).head(self.top)
        rows = [{"row": int(r.row), "label": r.label, "pctr": r.pctr, "layer": int(r.layer), "field": r.field_i,
                 "neighbour": r.field_j, "p": r.p, "weight": r.weight} for r in top.itertuples()]
        cols = [Column("row", "row"), Column("label", cell=lambda r: f"{r['label']:.0f}"),
                Column("pCTR", cell=lambda r: f"{r['pctr']:.3f}"), Column("layer", "layer"), Column("field", "field"),
                Column("selected neighbour", "neighbour"), Column("p", cell=lambda r: f"{r['p']:.2f}"),
                Column("weight", cell=lambda r: f"{r['weight']:.2f}")]
        t = write_table(stem, rows, cols, self.title, self.caption + f"\n\nThe full table: {out.name}/explain.csv.")
        figs = [{"title": f"row {k}", "png": str(out / f"explain_row{k}.png")} for k in self.rows]
        return {"tables": [t], "figures": figs}


# ----- one user's interests and expert confidences (DemiNet Figs. 4-5) -------------------------------
def candidate_rows(data, template: int, n: int, split: str = "test") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows equal to row ``template`` of ``split`` (one user's context and history) except for the
    candidate: the ``n`` items most frequent as train targets, each with the item-side fields of its
    first train row. Returns (arrays, item ids)."""
    from ..data.schema import Role

    item = data.schema.first(Role.ITEM)
    ids = top_items(data, n)
    tr = data.split("train")
    first = np.full(data.vocab_sizes[item.table], -1, dtype=np.int64)
    col = np.asarray(tr[item.name], dtype=np.int64)
    first[col[::-1]] = np.arange(col.size)[::-1]  # the first train row of every item
    rows = first[ids]
    src = data.split(split)
    item_side = {f.name for f in data.schema.fields if f.role in (Role.ITEM, Role.ITEM_ATTR)}
    arrays = {k: (np.asarray(tr[k])[rows] if k in item_side else np.repeat(np.asarray(v)[template:template + 1],
                                                                             ids.size, axis=0))
              for k, v in src.items()}
    return arrays, ids


@dataclass
class InterestCase(Item):
    """A multi-interest model's interests and expert confidences for ONE user over many candidates
    (the model must have ``encode(batch)`` returning ``interests`` [B, K, D] and ``confidence``
    [B, K], as DemiNet): ``what="tsne"`` (Fig. 4) maps the K interest vectors of every candidate with
    t-SNE, coloured by route, and reports the mean cosine within a route vs across routes;
    ``what="confidence"`` (Fig. 5) reports each expert's mean confidence per candidate category. The
    user is the test row with the longest history (first such row), the candidates the ``n_items``
    items most frequent as train targets."""

    name: str
    title: str
    variant: Variant
    dataset: DataSet
    what: str = "tsne"
    n_items: int = 200
    seeds: tuple[int, ...] = (1,)
    caption: str = ""

    def runs(self, ctx: Context) -> list[Run]:
        return [ctx.resolve(self.variant, self.dataset, self.item_seeds(ctx)[0])]

    def report(self, ctx: Context, runs: list[Run], stem: Path) -> dict:
        import torch

        from ..data.loader import BatchLoader
        from ..runs.assemble import load_run

        run = runs[0]
        data = ctx.store.data(run.cfg)
        _, model, _, _ = load_run(run.dir)
        if not callable(getattr(model, "encode", None)):
            raise ConfigError(f"{self.name}: model {run.cfg.model.name!r} has no encode() with interests and "
                              f"confidences (a multi-interest model such as deminet)")
        hist = history_lengths(data, "hist")
        template = int(np.argmax(hist))
        arrays, ids = candidate_rows(data, template, self.n_items)
        model.eval()
        with torch.no_grad():
            out = model.encode(next(iter(BatchLoader(arrays, data.schema, len(ids), shuffle=False))))
        V = out["interests"].double().numpy()  # [n, K, D]
        n, k, _ = V.shape
        user = data.schema.first(Role.USER)
        who = f"test row {template} (user id {int(arrays[user.name][0])}, {int(hist[template])} behaviours)" \
            if user is not None else f"test row {template}"
        if self.what == "tsne":
            y = tsne(V.reshape(n * k, -1), perplexity=min(30.0, (n * k - 1) / 3), seed=run.seed)
            route = np.tile(np.arange(k), n)
            x = V.reshape(n * k, -1)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            gram = x @ x.T
            same = route[:, None] == route[None, :]
            off = ~np.eye(n * k, dtype=bool)
            rows = []
            for r in range(k):  # a handful of routes
                sel = route == r
                g_rr = gram[np.ix_(sel, sel)]
                rows.append({"route": r + 1, "candidates": n,
                             "within_route_cos": float((g_rr.sum() - np.trace(g_rr)) / max(1, n * (n - 1))),
                             "to_other_routes_cos": float(gram[np.ix_(sel, ~sel)].mean()) if k > 1 else float("nan")})
            rows.append({"route": "all", "candidates": n, "within_route_cos": float(gram[same & off].mean()),
                         "to_other_routes_cos": float(gram[~same].mean())})
            cols = [Column("route", "route"), Column("candidates", "candidates"),
                    Column("mean cosine within the route", "within_route_cos"),
                    Column("mean cosine to the other routes", "to_other_routes_cos")]
            panel = Panel("scatter", [Series(f"route {r + 1}", y[route == r, 0], y[route == r, 1]) for r in range(k)],
                          title=f"interest vectors of {n} candidates")
        elif self.what == "confidence":
            conf = out["confidence"]
            if conf is None:
                raise ConfigError(f"{self.name}: the model's aggregation has no confidences (use Confi-Net or MoE)")
            w = conf.double().numpy()  # [n, K]
            cat, attr = item_colours(data)
            c = cat[ids]
            rows = []
            for u in np.unique(c):  # a handful of categories
                sel = c == u
                rows.append({"category": value_label(data.vocabs[attr], u), "candidates": int(sel.sum()),
                             **{f"expert_{e + 1}": float(w[sel, e].mean()) for e in range(k)},
                             "top_expert": int(w[sel].mean(0).argmax()) + 1})
            cols = [Column("category", "category"), Column("candidates", "candidates")] + \
                [Column(f"IE-{e + 1}", f"expert_{e + 1}") for e in range(k)] + [Column("most confident", "top_expert")]
            panel = Panel("heatmap", grid=np.array([[r[f"expert_{e + 1}"] for e in range(k)] for r in rows]),
                          row_labels=[r["category"] for r in rows], col_labels=[f"IE-{e + 1}" for e in range(k)],
                          title="mean confidence ω per candidate category", annotate=len(rows) * k <= 200)
        else:
            raise ConfigError(f"{self.name}: what must be tsne or confidence, got {self.what!r}")
        table = write_table(stem, rows, cols, self.title, (self.caption + "\n\n" if self.caption else "") + f"User: {who}.")
        png = figure(stem.with_suffix(".png"), [panel], f"{self.title}: {who}", SHARED_MACHINE, panel_size=(6.5, 5.0))
        return {"tables": [table], "figures": [{"title": self.title, "png": str(png)}]}
