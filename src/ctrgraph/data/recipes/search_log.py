"""``search_log``: your own search click log (and the Best Buy log), EGIN's query mode on real data.

Layout: one CSV or parquet file (or a folder of parquet parts) with one row per click after a
search; column names are parameters (the defaults are Best Buy's ``train.csv``)::

    user        any id                       the searcher
    sku         any id                       the clicked item
    category    any id                       the clicked item's category
    query       text (or an id)              the query the click followed
    query_time  timestamp or number          when the query was issued
    click_time  timestamp or number          when the item was clicked

Timestamps are parsed by pandas (ISO strings, ``2011-09-01 23:44:52.533``) or read as seconds.
Query text is normalised (lower case, runs of white space collapsed) and the normalised text is the
query id; the query's category is the category of the item clicked after it (the query's intent).

Instances: every row is a positive impression (the clicked item for its query at ``query_time``)
and ``negatives`` sampled items (uniform over the items of the training period, never the clicked
one) are negatives for the same query. Histories are strictly before ``query_time``: the user's
clicks by ``click_time`` (``hist_item_id``, ``hist_category``, ``hist_ts``) and distinct query
events by ``query_time`` (``hist_query_id``, ``hist_query_category``, ``hist_query_ts``), the most
recent ``max_len`` / ``max_query_len``. Split: global time quantiles of ``query_time``.

Best Buy (Kaggle "Data Mining Hackathon on BIG DATA", the ``acm-sf-chapter-hackathon-big`` files,
Kaggle's rules apply, no downloader): ``--dataset search_log --set data.params.path=
bestbuy-search-sample/train_head999.csv --data-dir ../shared/data``; the shared 999-row head is a
format fixture (median one click per user), too small to train on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import DataError
from ..io import read_table
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ..split import time_quantile_split
from .base import Recipe
from .synthetic import _gather_rows


class SearchLogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = PField(..., description="CSV / parquet file or parquet folder (relative to the data dir)")
    user: str = "user"
    item: str = "sku"
    category: str = "category"
    query: str = "query"
    query_time: str = "query_time"
    click_time: str = "click_time"
    negatives: int = PField(1, ge=0, description="sampled negative items per click")
    max_len: int = PField(50, ge=1)
    max_query_len: int = PField(30, ge=1)
    valid: float = PField(0.1, ge=0, lt=1)
    test: float = PField(0.2, gt=0, lt=1)
    seed: int = 0


def resolve_path(path: str, data_dir: Path | None, recipe: str, folder: bool = False) -> Path:
    """``data.params.path`` relative to ``--data-dir``; a clear error when it is missing (or, with
    ``folder``, not a folder)."""
    out = Path(path)
    if not out.is_absolute() and data_dir is not None:
        out = Path(data_dir) / out
    if not (out.is_dir() if folder else out.exists()):
        raise DataError(f"{recipe}: {out} {'is not a folder' if folder else 'does not exist'} (set data.params.path, "
                        f"and --data-dir for a relative path)")
    return out


def _resolve(p: SearchLogParams, data_dir: Path | None) -> Path:
    return resolve_path(p.path, data_dir, "search_log")


def _seconds(col: pd.Series, name: str, path: Path) -> np.ndarray:
    """Seconds (float64) of a timestamp column: numbers as they are, anything else parsed by pandas."""
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64)
    t = pd.to_datetime(col, errors="coerce")
    bad = np.flatnonzero(t.isna().to_numpy())
    if bad.size:
        raise DataError(f"{path}: row {int(bad[0]) + 2}: column {name!r} value {col.iloc[bad[0]]!r} is not a timestamp")
    return (t - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()


def build(p: SearchLogParams, data_dir: Path | None = None) -> RawDataset:
    path = _resolve(p, data_dir)
    cols = [p.user, p.item, p.category, p.query, p.query_time, p.click_time]
    df = pd.read_parquet(path) if path.is_dir() else read_table(path, "search_log")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {list(df.columns)}")
    if df[cols[:4]].isna().to_numpy().any():
        r, c = np.argwhere(df[cols[:4]].isna().to_numpy())[0]
        raise DataError(f"{path}: row {r + 2}: empty {cols[c]!r}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    cat = df[p.category].astype(str).to_numpy()
    n = len(df)
    return log_instances(df[p.user].astype(str).to_numpy(), df[p.item].astype(str).to_numpy(), cat,
                         normalise_queries(df[p.query]), cat, _seconds(df[p.query_time], p.query_time, path),
                         _seconds(df[p.click_time], p.click_time, path), np.ones(n, np.int8), np.ones(n, bool),
                         np.full(n, -1, np.int8), p, path)


def search_fields(L: int, M: int) -> list[Field]:
    """The fields of a search-log data set (``search_log``, ``jdsearch``, ``synthetic_search``) up to
    ``timestamp``: ids, the current query and its category (in the items' category vocabulary), the
    click history (``L``) and the query history (``M``) with raw times."""
    return [
        Field("user_id", Kind.CATEGORICAL, Role.USER),
        Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("category_id", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("query_id", Kind.CATEGORICAL, Role.QUERY),
        Field("query_category", Kind.CATEGORICAL, Role.QUERY, vocab="category_id"),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_category", Kind.SEQUENCE, Role.BEHAVIOR, vocab="category_id", max_len=L, target="category_id",
              group="hist_item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("hist_query_id", Kind.SEQUENCE, Role.QUERY_BEHAVIOR, vocab="query_id", max_len=M, target="query_id"),
        Field("hist_query_category", Kind.SEQUENCE, Role.QUERY_BEHAVIOR, vocab="category_id", max_len=M,
              target="query_category", group="hist_query_id"),
        Field("hist_query_ts", Kind.SEQUENCE, Role.QUERY_BEHAVIOR, max_len=M, group="hist_query_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
    ]


def query_similarity(queries: np.ndarray, users: np.ndarray, sep: str | None = None) -> np.ndarray:
    """Jaccard similarity of each query event's token set with the previous event's of the same user
    (0 for a user's first) [n] float32; events sorted by (user, time); tokens split on ``sep``
    (white space by default). Vectorised: one explode and one merge, no loop over events."""
    n = len(queries)
    if n == 0:
        return np.zeros(0, np.float32)
    tok = pd.Series(queries).str.split(sep).explode()
    df = pd.DataFrame({"ev": tok.index.to_numpy(), "tok": tok.to_numpy()}).dropna().drop_duplicates()
    size = np.bincount(df["ev"].to_numpy(), minlength=n)
    nxt = df.assign(ev=df["ev"] + 1)  # event e-1's tokens, keyed as event e
    both = df.merge(nxt, on=["ev", "tok"])
    inter = np.bincount(both["ev"].to_numpy(), minlength=n)[:n]
    prev = np.r_[0, size[:-1]]
    union = np.maximum(size + prev - inter, 1)
    same = np.r_[False, users[1:] == users[:-1]]
    return np.where(same, inter / union, 0.0).astype(np.float32)


def normalise_queries(col: pd.Series) -> np.ndarray:
    """Query text -> its id: lower case, runs of white space collapsed."""
    return col.astype(str).str.lower().str.split().str.join(" ").to_numpy()


def log_instances(user, item, cat, query, query_cat, qt, ct, label, sample, fixed_split, p, path,
                  token_sep: str | None = None) -> RawDataset:
    """Instances of a search log given as rows (all arrays [n]): ``label`` 1 = a click (it enters the
    click history), 0 = shown and not clicked; ``query`` "" = a behaviour without a query (history
    only, no instance); ``query_cat`` the query's category; ``sample``: draw ``p.negatives`` items as
    negatives for this clicked row; ``fixed_split`` 0/1/2 or -1 = by the time quantiles of the query
    time. Histories strictly before the query time (module docstring); ``hist_query_sim`` holds each
    history query's token-set Jaccard similarity to the one before it (tokens split on ``token_sep``),
    for EGIN's session cut (``model.query_similarity_field``)."""
    t0 = float(min(qt.min(), ct.min()))
    qt, ct = np.round(qt - t0).astype(np.int64), np.round(ct - t0).astype(np.int64)
    uid, u = np.unique(user, return_inverse=True)
    span = int(max(qt.max(), ct.max())) + 2
    has_q = query != ""

    # clicks sorted by (user, click time); distinct query events sorted by (user, query time)
    clk = np.flatnonzero(label == 1)
    ko = clk[np.lexsort((ct[clk], u[clk]))]
    k_key, k_item, k_cat, k_t = u[ko] * span + ct[ko], item[ko], cat[ko], ct[ko]
    qi = np.flatnonzero(has_q)
    qev = pd.DataFrame({"u": u[qi], "t": qt[qi], "q": query[qi], "c": query_cat[qi]}).drop_duplicates(
        ["u", "t", "q"]).sort_values(["u", "t"], kind="stable")
    q_key = qev["u"].to_numpy() * span + qev["t"].to_numpy()
    q_id, q_cat, q_t = qev["q"].to_numpy(), qev["c"].to_numpy(), qev["t"].to_numpy()
    q_sim = query_similarity(q_id, qev["u"].to_numpy(), token_sep)

    # instances: every row with a query, plus sampled negatives of its clicked rows that ask for them
    rng = np.random.default_rng(p.seed)
    k = p.negatives
    inst = qi
    extra = np.repeat(inst[(label[inst] == 1) & sample[inst]], k)
    rows = np.concatenate([inst, extra])
    neg = np.r_[np.zeros(inst.size, bool), np.ones(extra.size, bool)]
    lab = np.where(neg, 0, label[rows]).astype(np.int8)
    split = time_quantile_split(qt[rows], 1.0 - p.test, (1.0 - p.test - p.valid) if p.valid > 0 else None)
    fixed = fixed_split[rows]
    split = np.where(fixed >= 0, fixed, split).astype(np.int8)
    train_items = np.unique(item[rows[(split == 0) & (lab == 1)]])
    if train_items.size < 2 and neg.any():
        raise DataError(f"{path}: fewer than 2 distinct items in the training period: cannot sample negatives")
    cand = item[rows].copy()
    pick = rng.integers(0, max(train_items.size - 1, 1), int(neg.sum()))
    pos_idx = np.searchsorted(train_items, cand[neg])
    pick = pick + (pick >= pos_idx)  # never the clicked item itself (when it is a training item)
    cand[neg] = train_items[np.minimum(pick, train_items.size - 1)] if neg.any() else cand[neg]
    items_u, first = np.unique(item, return_index=True)  # an item's category: that of its first row
    cand_cat = np.where(neg, cat[first[np.searchsorted(items_u, cand)]], cat[rows])
    key = u[rows] * span + qt[rows]
    kpos, qpos = np.searchsorted(k_key, key, side="left"), np.searchsorted(q_key, key, side="left")
    k_start = np.searchsorted(k_key, u[rows] * span, side="left")
    q_start = np.searchsorted(q_key, u[rows] * span, side="left")
    k_len = np.minimum(kpos - k_start, p.max_len).astype(np.int32)
    q_len = np.minimum(qpos - q_start, p.max_query_len).astype(np.int32)
    o = np.argsort(split, kind="stable")
    N = rows.size
    seq = {}
    for name, stream, start, ln, width in (
            ("hist_item_id", k_item, kpos - k_len, k_len, p.max_len), ("hist_category", k_cat, kpos - k_len, k_len, p.max_len),
            ("hist_ts", k_t, kpos - k_len, k_len, p.max_len), ("hist_query_id", q_id, qpos - q_len, q_len, p.max_query_len),
            ("hist_query_category", q_cat, qpos - q_len, q_len, p.max_query_len),
            ("hist_query_ts", q_t, qpos - q_len, q_len, p.max_query_len),
            ("hist_query_sim", q_sim, qpos - q_len, q_len, p.max_query_len)):
        numeric = name.endswith(("_ts", "_sim"))
        dst = np.empty((N, width), dtype=(np.float32 if name.endswith("_sim") else np.int64) if numeric else object)
        if numeric:
            _gather_rows(dst, stream, start[o], ln[o], slice(0, N))
        else:
            ar = np.arange(width)
            valid = ar[None, :] < ln[o][:, None]
            idx = np.clip(start[o][:, None] + ar, 0, max(stream.size - 1, 0))
            dst[:] = np.where(valid, stream[idx] if stream.size else "", "")
        seq[name] = dst
    columns = {"user_id": uid[u[rows]][o], "item_id": cand[o], "category_id": cand_cat[o], "query_id": query[rows][o],
               "query_category": query_cat[rows][o], **seq, "timestamp": qt[rows][o], "label": lab[o]}
    fields = (*search_fields(p.max_len, p.max_query_len),
              Field("hist_query_sim", Kind.SEQUENCE, Role.QUERY_BEHAVIOR, max_len=p.max_query_len,
                    group="hist_query_id", embed=False),
              Field("label", Kind.NUMERIC, Role.LABEL))
    lengths = {n_: (k_len[o] if n_ in ("hist_item_id", "hist_category", "hist_ts") else q_len[o]) for n_ in seq}
    meta = {"rows": len(user), "clicks": int(clk.size), "users": int(uid.size), "queries": int(np.unique(q_id).size),
            "query_events": int(q_id.size), "negatives_per_click": k, "time_origin_seconds": t0, "source": str(path)}
    return RawDataset(Schema(fields, label="label", description=f"search log {Path(path).name}"), columns, lengths,
                      split[o], meta=meta)


def sources(p: SearchLogParams, data_dir: Path | None) -> list[Path]:
    path = _resolve(p, data_dir)
    return sorted(path.rglob("*")) if path.is_dir() else [path]


RECIPE = Recipe("search_log", "own search click log (user, item, category, query, query and click times; Best Buy's "
                "layout by default)", SearchLogParams, build, sources)
