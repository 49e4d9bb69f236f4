"""``jdsearch``: JDsearch (Liu et al., SIGIR 2023; JD.com personalised product search, real queries),
EGIN's query mode on its layout.

Files (tab-separated, a header line): ``user_behavior_data*.txt``, one line per user: ``query`` (the
test query: term ids joined by \\x18), ``candidate_wid_list`` / ``candidate_label_list`` (``_``-joined;
labels 0 none, 1 click, 2 cart, 3 purchase), ``history_qry_list`` (``-1`` = a behaviour without a
query), ``history_wid_list``, ``history_type_list`` (CLICK, CART, FLW, ORD), ``history_time_list``
(the intervals between consecutive behaviours, first 0, one more than the behaviours: the last is
to the test query); ``product_meta_data*.txt``: ``wid`` and ``cate_id_1`` .. ``cate_id_4``.

Rows fed to :func:`~ctrgraph.data.recipes.search_log.log_instances`: every history behaviour of a
type in ``history_types`` is a click at its cumulative time (a query event too when it has a query;
the query's category is the behaviour's item category at ``category_level``), and each one with a
query is a training instance with ``negatives`` sampled items (split by time into train / valid);
the test query's candidates are the test instances with their own labels (label > 0 = positive),
at the user's last time, their query category unknown (``unk``: JDsearch gives none, and the
positive's would leak the label). Query text is the \\x18-joined term string.

The full data set is downloaded from JD Cloud through the authors' page
(github.com/rucliujn/JDsearch, CC BY-NC-SA 4.0: attribution, non-commercial, share-alike); no
downloader. The shared sample (3 users) is a format fixture only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import DataError
from ..raw import RawDataset
from .base import Recipe
from .search_log import log_instances, resolve_path

COLUMNS = ["query", "candidate_wid_list", "candidate_label_list", "history_qry_list", "history_wid_list",
           "history_type_list", "history_time_list"]


class JDSearchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = PField("jdsearch-sample", description="folder with user_behavior_data*.txt and product_meta_data*.txt")
    category_level: Literal[1, 2, 3, 4] = 3
    history_types: list[str] = ["CLICK", "CART", "FLW", "ORD"]
    negatives: int = PField(1, ge=0)
    max_len: int = PField(50, ge=1)
    max_query_len: int = PField(30, ge=1)
    valid: float = PField(0.1, ge=0, lt=1, description="last share (by time) of the history instances")
    test: float = PField(0.2, gt=0, lt=1, description="unused: the test split is the test queries' candidates")
    seed: int = 0


def _file(folder: Path, stem: str) -> Path:
    hits = sorted(folder.glob(f"{stem}*.txt"))
    if not hits:
        raise DataError(f"jdsearch: no {stem}*.txt in {folder}")
    return hits[0]


def _folder(p: JDSearchParams, data_dir: Path | None) -> Path:
    return resolve_path(p.path, data_dir, "jdsearch", folder=True)


def _lists(df: pd.DataFrame, cols: list[str], path: Path) -> pd.DataFrame:
    """The ``_``-joined list columns exploded together, one row per element, ``user`` = the line."""
    parts = {c: df[c].astype(str).str.split("_") for c in cols}
    n = parts[cols[0]].str.len()
    for c in cols[1:]:
        bad = np.flatnonzero((parts[c].str.len() != n).to_numpy())
        if bad.size:
            raise DataError(f"{path}: line {int(bad[0]) + 2}: {c} has {len(parts[c].iloc[bad[0]])} elements, "
                            f"{cols[0]} {int(n.iloc[bad[0]])}")
    out = pd.DataFrame({c: parts[c] for c in cols})
    out["user"] = np.arange(len(df))
    return out.explode(cols, ignore_index=True)


def build(p: JDSearchParams, data_dir: Path | None = None) -> RawDataset:
    folder = _folder(p, data_dir)
    ub, meta = _file(folder, "user_behavior_data"), _file(folder, "product_meta_data")
    df = pd.read_csv(ub, sep="\t", dtype=str, quoting=3, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing or len(df) == 0:
        raise DataError(f"{ub}: missing column(s) {missing} or no lines")
    pm = pd.read_csv(meta, sep="\t", dtype=str, quoting=3, keep_default_na=False)
    ccol = f"cate_id_{p.category_level}"
    if "wid" not in pm.columns or ccol not in pm.columns:
        raise DataError(f"{meta}: needs columns wid and {ccol}")
    cat_of = pd.Series(pm[ccol].to_numpy(), index=pm["wid"].to_numpy())
    cat_of = cat_of[~cat_of.index.duplicated()]  # wid -> category (a vectorised lookup)

    # history: times are cumulative intervals (the list has one more element: the gap to the test query)
    times = df["history_time_list"].astype(str).str.split("_")
    t_all = times.explode().astype(np.int64)
    user_of_t = np.repeat(np.arange(len(df)), times.str.len().to_numpy())
    cum = pd.Series(t_all.to_numpy()).groupby(user_of_t).cumsum().to_numpy()
    last = np.r_[np.cumsum(times.str.len().to_numpy()) - 1]
    test_time = cum[last]  # per user: the time of the test query
    keep_t = np.ones(cum.size, bool)
    keep_t[last] = False
    h = _lists(df, ["history_qry_list", "history_wid_list", "history_type_list"], ub)
    if len(h) != int(keep_t.sum()):
        raise DataError(f"{ub}: history_time_list must have one element more than the other history lists")
    h["t"] = cum[keep_t].astype(np.float64)
    h = h[h["history_type_list"].isin(p.history_types)]
    hq = h["history_qry_list"].to_numpy()
    h_item = h["history_wid_list"].to_numpy()
    h_cat = pd.Series(h_item).map(cat_of).fillna("unk").to_numpy()
    h_query = np.where(hq == "-1", "", hq)

    # test candidates with their labels
    c = _lists(df, ["candidate_wid_list", "candidate_label_list"], ub)
    c_item = c["candidate_wid_list"].to_numpy()
    c_user = c["user"].to_numpy()
    c_label = (c["candidate_label_list"].astype(float).to_numpy() > 0).astype(np.int8)
    c_query = df["query"].astype(str).to_numpy()[c_user]
    c_t = test_time[c_user].astype(np.float64)

    n_h, n_c = len(h), len(c)
    user = np.r_[h["user"].to_numpy(), c_user].astype(str)
    item = np.r_[h_item, c_item]
    cat = np.r_[h_cat, pd.Series(c_item).map(cat_of).fillna("unk").to_numpy()]
    query = np.r_[h_query, c_query].astype(object)
    qcat = np.r_[h_cat, np.full(n_c, "unk", dtype=object)]
    t = np.r_[h["t"].to_numpy(), c_t]
    label = np.r_[np.ones(n_h, np.int8), c_label]
    sample = np.r_[np.ones(n_h, bool), np.zeros(n_c, bool)]
    # history instances: train, the last `valid` share of their times valid; candidates: test
    ht = h["t"].to_numpy()
    hist_split = np.where(ht >= np.quantile(ht, 1 - p.valid), 1, 0) if p.valid > 0 and n_h else np.zeros(n_h)
    fixed = np.r_[hist_split, np.full(n_c, 2)].astype(np.int8)
    raw = log_instances(user, item, cat, query, qcat, t, t, label, sample, fixed, p, ub, token_sep="\x18")
    raw.meta.update({"users": len(df), "candidates": n_c, "history_behaviours": n_h, "category": ccol})
    return raw


def sources(p: JDSearchParams, data_dir: Path | None) -> list[Path]:
    folder = _folder(p, data_dir)
    return [_file(folder, "user_behavior_data"), _file(folder, "product_meta_data")]


RECIPE = Recipe("jdsearch", "JDsearch personalised product search (real queries; candidates with labels)",
                JDSearchParams, build, sources)
