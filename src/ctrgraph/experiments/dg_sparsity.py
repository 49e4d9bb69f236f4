"""DG-ENN's sparsity case studies (paper §5.5) on finished runs: no retraining.

    ctrgraph dg-analysis table6 --base-runs 'B/pnn-seed*' --dg-runs 'D/dg-pnn-seed*' --out OUT
    ctrgraph dg-analysis fig6   --base-runs 'B/din-seed*' --dg-runs 'D/dg-din-seed*' --out OUT [--by hist]

``--base-runs`` / ``--dg-runs`` are comma lists of run directories, each item glob-expanded. Base
and DG runs are paired by ``train.seed`` (the seed sets must be equal) and must use the same data
set; every run's ``best.pt`` scores the test split with ``predict_logits`` (a ``dg-*`` run serves
the enhanced tables saved in its checkpoint), and the overall test AUC is checked against the
run's ``metrics.json``.

- ``table6`` (Table 6, feature sparsity). The paper picks four rare Alimama features (train
  frequency 5-12) and reports PNN vs DG-PNN logloss on the test instances holding them. Our choice
  (generalises the four hand-picked features): for each categorical field of ``--fields`` (default
  ``user_id,item_id``), a test instance's frequency is the train-split row count of its value in
  that field; instances are bucketed by ``--edges`` (bucket ``b`` = ``[edges[b-1], edges[b])``),
  plus one row per field for ``freq < --rare``, one for "any listed field rare" and one for all rows.
- ``fig6`` (Fig. 6, behaviour sparsity): AUC of base vs DG per bucket of the user's behaviour length.
  RelaImpr (DIN's relative improvement) = gain AUC / (base AUC - 0.5).
  ``--by hist`` (default): valid entries of the test row's behaviour sequence (the paper's "length of
  user behavior sequence", capped at the field's ``max_len``); ``--by user_rows``: the user's
  number of train rows (uncapped). Buckets from ``--edges`` or, without it, from the quintiles of
  the test rows' values (duplicates dropped).

Per bucket and run: rows, positive rate, logloss (mean BCE), AUC (NaN when one class only); then
mean over seeds and the gain DG - base (mean ± std of the per-seed paired differences; for logloss
a negative gain means DG is better). Every metric is a ``np.bincount`` / one grouped rank pass over
(row, bucket) pairs, with no loop over rows, users, items, fields or buckets.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import EncodedDataset
from ..data.schema import Kind, Role, Schema
from ..errors import ConfigError
from ..train.metrics import _group_rank_auc, auc

NOTE = "measured on the shared 2-core machine while other jobs ran"
DEFAULT_FREQ_EDGES = (1, 5, 10, 20, 50, 100)


# ----- bucketing and grouped metrics (pure numpy) ---------------------------------------------------
def bucket_index(values: np.ndarray, edges) -> np.ndarray:
    """Bucket of each value: 0 for ``v < edges[0]``, b for ``edges[b-1] <= v < edges[b]``,
    ``len(edges)`` for ``v >= edges[-1]``. ``edges`` must be strictly increasing."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or np.any(np.diff(e) <= 0):
        raise ConfigError(f"bucket edges must be a non-empty, strictly increasing list; got {list(edges)}")
    return np.digitize(np.asarray(values, dtype=np.float64), e, right=False)


def bucket_names(edges, lowest: int = 0) -> list[str]:
    """Inclusive integer ranges of the buckets of :func:`bucket_index` ("0", "1-4", ">=100")."""
    lo = [lowest] + [int(e) for e in edges]
    hi = [int(e) - 1 for e in edges]
    names = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(lo[:-1], hi)]
    return names + [f">={lo[-1]}"]


def grouped_metrics(labels: np.ndarray, probs: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                    n_groups: int) -> dict[str, np.ndarray]:
    """Metrics of the instances ``rows[k]`` assigned to group ``groups[k]`` (a row may be in several
    groups): ``n``, ``pos_rate``, ``logloss`` (mean BCE, probabilities clipped to [1e-7, 1 - 1e-7]
    as ``metrics.logloss``), ``auc`` (tie-aware, NaN for an empty or one-class group)."""
    rows, groups = np.asarray(rows, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    y = np.asarray(labels, dtype=np.float64)[rows]
    p = np.clip(np.asarray(probs, dtype=np.float64)[rows], 1e-7, 1 - 1e-7)
    n = np.bincount(groups, minlength=n_groups).astype(np.float64)
    pos = np.bincount(groups, weights=y, minlength=n_groups)
    bce = np.bincount(groups, weights=-(y * np.log(p) + (1 - y) * np.log(1 - p)), minlength=n_groups)
    out_auc = np.full(n_groups, np.nan)
    if rows.size:
        a, _, valid = _group_rank_auc(y, p, groups)
        present = np.unique(groups)
        out_auc[present] = np.where(valid, a, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"n": n, "pos_rate": pos / n, "logloss": bce / n, "auc": out_auc}


# ----- runs --------------------------------------------------------------------------------------
def parse_runs(spec: str) -> list[Path]:
    """Comma list of run directories, each item glob-expanded (sorted)."""
    out: list[Path] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        hits = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not hits:
            raise ConfigError(f"no run directory matches {item!r}")
        out += [Path(h) for h in hits]
    if not out:
        raise ConfigError("empty list of run directories")
    return out


@dataclass
class Scored:
    """Test-split probabilities of one run."""

    run: Path
    model: str
    seed: int
    probs: np.ndarray
    auc_check: tuple[float, float]  # (recomputed test AUC, metrics.json test AUC or NaN)


def _data_key(cfg) -> str:
    d = cfg.data.model_dump()
    d.pop("data_dir", None)
    d.pop("cache", None)
    return json.dumps(d, sort_keys=True, default=str)


def load_scoring_model(run: Path, data: EncodedDataset):
    """``best.pt`` of ``run`` in eval mode. A ``dg-*`` checkpoint written before the served tables
    were saved (no ``embedding.served_*`` buffers) loads without them, and the provider is then
    prepared on ``data`` (train split) so that eval recomputes the enhanced tables from the graphs:
    the same computation that produced them at test time in the run."""
    import yaml

    from ..config import RunConfig
    from ..embeddings import FeatureSpec
    from ..train.checkpoint import load_torch
    from ..train.run import load_data_artifacts, model_for

    cfg = RunConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    schema, vocabs = load_data_artifacts(run)
    model = model_for(cfg, FeatureSpec(schema, {k: len(v) for k, v in vocabs.items()}))
    if not (run / "best.pt").exists():
        raise ConfigError(f"{run} has no best.pt checkpoint")
    res = model.load_state_dict(load_torch(run / "best.pt")["model"], strict=False)
    missing = [k for k in res.missing_keys if not k.startswith("embedding.served_")]
    if missing or res.unexpected_keys:
        raise ConfigError(f"{run}: checkpoint does not match the model: missing {missing}, "
                          f"unexpected {res.unexpected_keys}")
    if res.missing_keys:  # an older dg-* run: rebuild the graphs from the train split
        model.prepare(data)
    return model.eval()


def _read_cfg(run: Path):
    import yaml

    from ..config import RunConfig

    if not (run / "config.yaml").exists():
        raise ConfigError(f"{run} is not a run directory (no config.yaml)")
    return RunConfig(**yaml.safe_load((run / "config.yaml").read_text()))


def score_runs(base: list[Path], dg: list[Path], data_dir: str | None = None
               ) -> tuple[EncodedDataset, list[Scored], list[Scored]]:
    """Check the pairing and the data set, load every run's ``best.pt``, score the test split."""
    from ..train.run import dataset_for
    from ..train.trainer import predict_logits

    cfgs = [_read_cfg(r) for r in base + dg]  # loop over runs (a handful)
    keys = {_data_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ConfigError(f"the runs use different data sets: {sorted(keys)}")
    seeds_b = [c.train.seed for c in cfgs[:len(base)]]
    seeds_d = [c.train.seed for c in cfgs[len(base):]]
    if sorted(seeds_b) != sorted(seeds_d) or len(set(seeds_b)) != len(seeds_b):
        raise ConfigError(f"base and DG runs must pair one-to-one by seed; got base seeds {seeds_b}, DG seeds {seeds_d}")
    cfg0 = cfgs[0].model_copy(deep=True)
    if data_dir:
        cfg0.data.data_dir = data_dir
    data = dataset_for(cfg0)
    test = data.split("test")
    y = np.asarray(test[data.schema.label])
    scored = []
    for r, c in zip(base + dg, cfgs):
        m = load_scoring_model(r, data)
        p = 1.0 / (1.0 + np.exp(-predict_logits(m, test, data.schema).astype(np.float64)))
        mj = r / "metrics.json"
        ref = json.loads(mj.read_text())["test"]["auc"] if mj.exists() else float("nan")
        scored.append(Scored(r, c.model.name, int(c.train.seed), p, (auc(y, p), float(ref))))
    by_seed = {s.seed: s for s in scored[len(base):]}
    b = sorted(scored[:len(base)], key=lambda s: s.seed)
    return data, b, [by_seed[s.seed] for s in b]


def compare_groups(y: np.ndarray, base: list[Scored], dg: list[Scored], rows: np.ndarray, groups: np.ndarray,
                   n_groups: int) -> dict[str, np.ndarray]:
    """Mean over seeds of base / DG metrics per group and the paired gain DG - base (mean, std)."""
    mb = [grouped_metrics(y, s.probs, rows, groups, n_groups) for s in base]  # loop over seeds
    md = [grouped_metrics(y, s.probs, rows, groups, n_groups) for s in dg]
    out = {"n": mb[0]["n"], "pos_rate": mb[0]["pos_rate"]}
    for k in ("logloss", "auc"):
        b, d = np.stack([m[k] for m in mb]), np.stack([m[k] for m in md])
        with np.errstate(invalid="ignore"):
            out[f"base_{k}"], out[f"dg_{k}"] = b.mean(0), d.mean(0)
            out[f"gain_{k}"], out[f"gain_{k}_std"] = (d - b).mean(0), (d - b).std(0)
    return out


# ----- Table 6 -----------------------------------------------------------------------------------
def _categorical(schema: Schema, names: list[str], what: str = "table6") -> list[str]:
    for n in names:
        if n not in schema:
            raise ConfigError(f"unknown field {n!r}; categorical fields: "
                              f"{[f.name for f in schema.fields if f.kind == Kind.CATEGORICAL and f.encoded]}")
        if schema[n].kind != Kind.CATEGORICAL or not schema[n].encoded:
            raise ConfigError(f"field {n!r} is {schema[n].kind.value}; {what} buckets categorical fields only")
    return names


def feature_frequencies(data: EncodedDataset, fields: list[str], split: str = "test") -> np.ndarray:
    """[rows of ``split``, fields]: train-split row count of each row's value in each field (one
    bincount over the fields' ids, offset per field)."""
    tr, te = data.split("train"), data.split(split)
    sizes = np.array([data.vocab_sizes[data.schema[f].table] for f in fields], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tr_ids = np.stack([np.asarray(tr[f], dtype=np.int64) for f in fields], 1) + off
    te_ids = np.stack([np.asarray(te[f], dtype=np.int64) for f in fields], 1) + off
    counts = np.bincount(tr_ids.ravel(), minlength=int(sizes.sum()))
    return counts[te_ids]


def table6(base: list[Scored], dg: list[Scored], data: EncodedDataset, fields: list[str],
           edges=DEFAULT_FREQ_EDGES, rare: int = 10) -> list[dict]:
    """Rows of Table 6: (field, bucket) for every field and frequency bucket, then ``field < rare``
    per field, then any-field-rare, then all test rows."""
    fields = _categorical(data.schema, fields)
    freq = feature_frequencies(data, fields)  # [N, F]
    n, f = freq.shape
    nb = len(edges) + 1
    b = bucket_index(freq, edges)  # [N, F]
    rows_all = np.arange(n)
    rows_f = np.repeat(rows_all, f)
    g_bucket = (np.tile(np.arange(f), n) * nb + b.ravel())
    rare_mask = (freq < rare).ravel()
    g_rare = f * nb + np.tile(np.arange(f), n)[rare_mask]
    any_rare = np.flatnonzero((freq < rare).any(1))
    rows = np.concatenate([rows_f, rows_f[rare_mask], any_rare, rows_all])
    groups = np.concatenate([g_bucket, g_rare, np.full(any_rare.size, f * nb + f), np.full(n, f * nb + f + 1)])
    y = np.asarray(data.split("test")[data.schema.label])
    m = compare_groups(y, base, dg, rows, groups, f * nb + f + 2)
    names = bucket_names(edges)
    desc = ([(fld, "train freq " + nm) for fld in fields for nm in names]
            + [(fld, f"rare (train freq < {rare})") for fld in fields]
            + [("any of " + "/".join(fields), f"rare (train freq < {rare})"), ("all", "all test rows")])
    return [dict(field=d[0], bucket=d[1], **{k: float(v[i]) for k, v in m.items()}) for i, d in enumerate(desc)]


# ----- Fig. 6 ------------------------------------------------------------------------------------
def behaviour_field(schema: Schema) -> str:
    """The behaviour sequence compared with the candidate item (``target`` = the item field)."""
    item = schema.first(Role.ITEM)
    for f in schema.by_role(Role.BEHAVIOR):
        if f.kind == Kind.SEQUENCE and item is not None and f.target == item.name:
            return f.name
    raise ConfigError("fig6 --by hist needs a behaviour sequence whose target is the item field")


def history_lengths(data: EncodedDataset, by: str = "hist", split: str = "test") -> np.ndarray:
    """Per row of ``split``: ``hist`` = valid (non-padding) entries of its behaviour sequence;
    ``user_rows`` = the user's number of train rows."""
    te = data.split(split)
    if by == "hist":
        return (np.asarray(te[behaviour_field(data.schema)]) != 0).sum(1)
    if by == "user_rows":
        user = data.schema.first(Role.USER)
        if user is None:
            raise ConfigError("fig6 --by user_rows needs a user field")
        counts = np.bincount(np.asarray(data.split("train")[user.name], dtype=np.int64),
                             minlength=int(np.max(data.arrays[user.name])) + 1)
        return counts[np.asarray(te[user.name], dtype=np.int64)]
    raise ConfigError(f"fig6 --by must be 'hist' or 'user_rows'; got {by!r}")


def quantile_edges(values: np.ndarray, n_buckets: int = 5) -> list[int]:
    """Integer edges at the inner quantiles of ``values`` (duplicates and the minimum dropped)."""
    q = np.ceil(np.quantile(values, np.linspace(0, 1, n_buckets + 1)[1:-1])).astype(int)
    e = np.unique(q)
    return [int(x) for x in e[e > np.min(values)]] or [int(np.max(values))]


def fig6(base: list[Scored], dg: list[Scored], data: EncodedDataset, by: str = "hist",
         edges=None) -> tuple[list[dict], list[int]]:
    """Rows of Fig. 6 (one per length bucket, then all rows) and the edges used."""
    length = history_lengths(data, by)
    edges = list(edges) if edges else quantile_edges(length)
    nb = len(edges) + 1
    b = bucket_index(length, edges)
    n = length.size
    y = np.asarray(data.split("test")[data.schema.label])
    rows = np.concatenate([np.arange(n), np.arange(n)])
    groups = np.concatenate([b, np.full(n, nb)])
    m = compare_groups(y, base, dg, rows, groups, nb + 1)
    user = data.schema.first(Role.USER)
    if user is not None:  # distinct users per bucket: unique (bucket, user) keys
        u = np.asarray(data.split("test")[user.name], dtype=np.int64)
        key = np.unique(b.astype(np.int64) * (int(u.max()) + 1) + u) // (int(u.max()) + 1)
        users = np.bincount(key, minlength=nb + 1).astype(float)
        users[nb] = np.unique(u).size
    else:
        users = np.full(nb + 1, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        m["rel_gain_auc_pct"] = 100 * m["gain_auc"] / (m["base_auc"] - 0.5)
    names = bucket_names(edges) + ["all"]
    rows_out = [dict(bucket=names[i], users=float(users[i]), **{k: float(v[i]) for k, v in m.items()})
                for i in range(nb + 1)]
    return rows_out, edges


# ----- output ------------------------------------------------------------------------------------
def _f(x: float, nd: int = 4) -> str:
    return "n/a" if np.isnan(x) else f"{x:.{nd}f}"


def _header(what: str, base: list[Scored], dg: list[Scored], note: str) -> str:
    runs = "".join(f"- seed {b.seed}: `{b.run}` ({b.model}, test AUC {_f(b.auc_check[0])}, metrics.json {_f(b.auc_check[1])}); "
                   f"`{d.run}` ({d.model}, test AUC {_f(d.auc_check[0])}, metrics.json {_f(d.auc_check[1])})\n"
                   for b, d in zip(base, dg))
    return f"# {what}: {base[0].model} vs {dg[0].model}, seeds {[b.seed for b in base]}\n\n{runs}\n" + \
        (f"{note}.\n\n" if note else "")


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_table6(rows, base, dg, out: Path, note: str = "") -> str:
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, out / "table6.csv")
    b, d = base[0].model, dg[0].model
    head = (f"| field | bucket | test rows | pos. rate | {b} logloss | {d} logloss | gain (DG - base) | "
            f"{b} AUC | {d} AUC | gain AUC |\n|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['field']} | {r['bucket']} | {int(r['n'])} | {_f(r['pos_rate'], 3)} | {_f(r['base_logloss'])} | "
        f"{_f(r['dg_logloss'])} | {_f(r['gain_logloss'])} ± {_f(r['gain_logloss_std'])} | {_f(r['base_auc'])} | "
        f"{_f(r['dg_auc'])} | {_f(r['gain_auc'])} ± {_f(r['gain_auc_std'])} |\n" for r in rows if r["n"] > 0)
    md = _header("Table 6 (feature sparsity)", base, dg, note) + head + body
    (out / "table6.md").write_text(md)
    return md


def write_fig6(rows, edges, by, base, dg, out: Path, note: str = "") -> str:
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, out / "fig6.csv")
    b, d = base[0].model, dg[0].model
    what = "behaviour-sequence length of the test row" if by == "hist" else "user's train rows"
    head = (f"Buckets: {what} (`--by {by}`), edges {edges}.\n\n| bucket | test rows | users | pos. rate | {b} AUC | "
            f"{d} AUC | gain AUC | RelaImpr | {b} logloss | {d} logloss |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['bucket']} | {int(r['n'])} | {'n/a' if np.isnan(r['users']) else int(r['users'])} | "
        f"{_f(r['pos_rate'], 3)} | {_f(r['base_auc'])} | {_f(r['dg_auc'])} | "
        f"{_f(r['gain_auc'])} ± {_f(r['gain_auc_std'])} | {_f(r['rel_gain_auc_pct'], 1)}% | {_f(r['base_logloss'])} | "
        f"{_f(r['dg_logloss'])} |\n" for r in rows if r["n"] > 0)
    md = _header("Fig. 6 (behaviour sparsity)", base, dg, note) + head + body
    (out / "fig6.md").write_text(md)
    _plot_fig6([r for r in rows if r["n"] > 0 and r["bucket"] != "all"], b, d, by, out / "fig6.png", note, len(base))
    return md


def _plot_fig6(rows, b: str, d: str, by: str, path: Path, note: str, n_seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax.plot(x, [r["base_auc"] for r in rows], marker="o", label=b)
    ax.plot(x, [r["dg_auc"] for r in rows], marker="s", label=d)
    ax2.bar(x, [r["gain_auc"] for r in rows], yerr=[r["gain_auc_std"] for r in rows], capsize=3, color="tab:green")
    ax2.axhline(0, color="0.3", lw=0.8)
    xl = "behaviour length (test row)" if by == "hist" else "user's train rows"
    for a, yl in ((ax, "test AUC"), (ax2, f"AUC gain ({d} - {b})")):
        a.set_xticks(x, [f"{r['bucket']}\n(n={int(r['n'])})" for r in rows], fontsize=7)
        a.set_xlabel(xl)
        a.set_ylabel(yl)
    ax.legend()
    fig.suptitle(f"Behaviour sparsity (DG-ENN Fig. 6): test AUC by length bucket, mean over {n_seeds} seed(s); "
                 "gain bars: ± std of the paired per-seed gains", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.4")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- command -----------------------------------------------------------------------------------
def _ints(s: str | None) -> list[int] | None:
    return [int(float(x)) for x in s.split(",") if x.strip()] if s else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ctrgraph dg-analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["table6", "fig6"])
    p.add_argument("--base-runs", required=True, help="comma list of base-model run dirs (globs allowed)")
    p.add_argument("--dg-runs", required=True, help="comma list of dg-<model> run dirs (globs allowed)")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", help="override the runs' data.data_dir")
    p.add_argument("--fields", default="user_id,item_id", help="table6: categorical fields")
    p.add_argument("--edges", help="bucket edges (table6 default 1,5,10,20,50,100; fig6 default: quintiles)")
    p.add_argument("--rare", type=int, default=10, help="table6: 'rare' = train frequency below this")
    p.add_argument("--by", choices=["hist", "user_rows"], default="hist", help="fig6: length definition")
    p.add_argument("--note", default="", help="caption line written under the tables and on the PNG")
    a = p.parse_args(argv)
    data, base, dg = score_runs(parse_runs(a.base_runs), parse_runs(a.dg_runs), a.data_dir)
    for s in base + dg:
        if abs(s.auc_check[0] - s.auc_check[1]) > 1e-4:
            print(f"warning: {s.run}: recomputed test AUC {s.auc_check[0]:.5f} != metrics.json {s.auc_check[1]:.5f}")
    out = Path(a.out)
    if a.what == "table6":
        rows = table6(base, dg, data, a.fields.split(","), _ints(a.edges) or DEFAULT_FREQ_EDGES, a.rare)
        print(write_table6(rows, base, dg, out, a.note))
    else:
        rows, edges = fig6(base, dg, data, a.by, _ints(a.edges))
        print(write_fig6(rows, edges, a.by, base, dg, out, a.note))
    return 0
