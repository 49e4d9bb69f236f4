"""``amazon-electronics``: Amazon Electronics reviews (McAuley 2014) under Res-embedding's (DIN's) protocol.

Res-embedding (§5.1, Table 2: 192,403 users, 63,001 items, 801 categories, 1,689,188 reviews = the
2014 Electronics 5-core) predicts the (n+1)-th reviewed item from the first n, one positive and
one random negative sharing the history. Default ``protocol="din"`` (:mod:`._din`, DIN's
``build_dataset.py``): every review after a user's first is a positive with one uniformly drawn
negative among the reviewed items the user never reviewed; the last review of each user is test,
the second-last validation (``din_valid``; DIN trains on it), the rest train. ``protocol="res"``:
the paper's sentence read literally, one pair per user (the last review), users split at random.
The category of an item is the most specific level of its first category path (DIN's
``categories[0][-1]``: 801 categories). The ``deminet`` / ``default`` protocols of ``amazon-books``
work here too.

Departures: Res-embedding leaves the tie order and the validation set unstated (ours: reviews of
the same day ordered by item, the second-last review as validation); ``res`` user fractions are ours.

Input (``--data-dir``, ``$CTRGRAPH_DATA/amazon-electronics`` or ``~/.cache/ctrgraph/raw/amazon-electronics``):

- McAuley's 2014 files ``reviews_Electronics_5.json[.gz]`` and ``meta_Electronics.json[.gz]`` (or
  the 2018 ``Electronics_5.json[.gz]``; any layout ``amazon-books`` reads); ``ctrgraph download
  amazon-electronics`` fetches the 2014 pair;
- or a DIN-format CSV (header ``user_id,item_id,time,cate_id``: ids already re-indexed, unix
  seconds, the item's leaf category; e.g. torch-rechub's ``amazon_electronics_sample.csv``),
  given with ``reviews`` or as the folder's only ``*.csv``.

Source: http://jmcauley.ucsd.edu/data/amazon/index_2014.html. Terms: research use, cite McAuley et
al. SIGIR 2015 / He & McAuley WWW 2016; no redistribution licence: never bundled or committed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field as PField

from ...errors import DataError
from ..io import numeric_column, read_table, require_columns
from ..raw import RawDataset
from ..schema import Schema
from .amazon_books import AmazonBooksParams, _fetch, build_reviews, review_instances
from .base import Recipe
from .taobao import active_users

PAGE = "http://jmcauley.ucsd.edu/data/amazon/index_2014.html"
BASE = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
URLS = {n: BASE + n for n in ("reviews_Electronics_5.json.gz", "meta_Electronics.json.gz")}
REVIEW_NAMES = ("reviews_Electronics_5.json.gz", "reviews_Electronics_5.json", "Electronics_5.json.gz",
                "Electronics_5.json")
META_NAMES = ("meta_Electronics.json.gz", "meta_Electronics.json")
CSV_COLUMNS = ["user_id", "item_id", "time", "cate_id"]


class ElectronicsParams(AmazonBooksParams):
    protocol: Literal["default", "deminet", "din", "res"] = PField(
        "din", description="din: DIN's per-user protocol (last review test); res: one pair per user, users "
                           "split; deminet / default: the amazon-books protocols")
    reviews: str | None = PField(None, description="reviews file (reviews_Electronics_5.json[.gz]) or a "
                                                   "DIN-format CSV (user_id,item_id,time,cate_id)")
    meta: str | None = PField(None, description="metadata file (meta_Electronics.json[.gz])")


def _folders(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / "amazon-electronics"]
    out = [Path(os.environ["CTRGRAPH_DATA"]) / "amazon-electronics"] if os.environ.get("CTRGRAPH_DATA") else []
    return out + [Path.home() / ".cache" / "ctrgraph" / "raw" / "amazon-electronics"]


def _given(name: str, data_dir: Path | None) -> Path:
    f = Path(name).expanduser()
    if data_dir is not None and not f.is_absolute() and (data_dir / f).exists():
        f = data_dir / f
    if not f.is_file():
        raise DataError(f"amazon-electronics: file not found: {f}")
    return f


def locate(p: ElectronicsParams, data_dir: Path | None) -> tuple[str, list[Path]]:
    """("json", [reviews, meta]) or ("csv", [din csv])."""
    if p.reviews and p.reviews.endswith((".csv", ".csv.gz")):
        return "csv", [_given(p.reviews, data_dir)]
    folders = _folders(data_dir)
    for d in folders:
        rev = _given(p.reviews, data_dir) if p.reviews else next((d / n for n in REVIEW_NAMES if (d / n).is_file()),
                                                                 None)
        if rev is not None:
            meta = _given(p.meta, data_dir) if p.meta else next((d / n for n in META_NAMES if (d / n).is_file()),
                                                                None)
            if meta is None:
                raise DataError(f"amazon-electronics: {rev} has no metadata file ({' / '.join(META_NAMES)}) beside "
                                f"it; run `ctrgraph download amazon-electronics` or give --set data.params.meta=FILE")
            return "json", [rev, meta]
        csvs = sorted(set(d.glob("*.csv")) | set(d.glob("*.csv.gz")))
        if len(csvs) == 1:
            return "csv", csvs
    raise DataError(f"amazon-electronics: no {REVIEW_NAMES[0]} (+ {META_NAMES[0]}) or DIN-format *.csv in "
                    f"{', '.join(map(str, folders))}. Run `ctrgraph download amazon-electronics` (2014 files from "
                    f"{PAGE}) and pass --data-dir, or give --set data.params.reviews=FILE")


def sources(p: ElectronicsParams, data_dir: Path | None) -> list[Path]:
    return locate(p, data_dir)[1]


def build_csv(p: ElectronicsParams, path: Path) -> RawDataset:
    """The DIN-format CSV: ids as given, one category per item (its first row's ``cate_id``)."""
    df = read_table(path, "amazon-electronics csv")
    require_columns(df, CSV_COLUMNS, path, "amazon-electronics csv")
    n_read = len(df)
    v = {c: numeric_column(df, c, path) for c in CSV_COLUMNS}
    keep = np.unique(np.stack([v["user_id"], v["item_id"], v["time"]], axis=1), axis=0, return_index=True)[1]
    keep.sort()  # duplicate (user, item, time) reviews count once
    user, item, ts, cat = (v[c][keep] for c in CSV_COLUMNS)
    if p.max_users is not None:
        users = np.unique(user)
        if users.size > p.max_users:
            sel = np.isin(user, np.random.default_rng(p.seed).choice(users, p.max_users, replace=False))
            user, item, ts, cat = user[sel], item[sel], ts[sel], cat[sel]
    active = active_users(user, np.ones(user.size, dtype=bool), p.user_threshold())
    user, item, ts, cat = user[active], item[active], ts[active], cat[active]
    if user.size == 0:
        raise DataError(f"amazon-electronics: {path}: no user has {p.user_threshold()} reviews (min_user_events)")
    items, first = np.unique(item, return_index=True)
    cols, lengths, fields, split, info = review_instances(
        p, user, np.searchsorted(items, item), ts, items, cat[first], what=f"amazon-electronics: {path}")
    meta = {"source": [str(path)], "layout": "din-csv", "events_read": n_read, **info,
            "categories": int(np.unique(cat).size),
            "protocol": f"Amazon Electronics reviews (DIN format); {p.protocol} protocol"}
    return RawDataset(Schema(tuple(fields), label="label", description="Amazon Electronics reviews (DIN format)"),
                      cols, lengths, split, meta=meta)


def build(p: ElectronicsParams, data_dir: Path | None) -> RawDataset:
    layout, files = locate(p, data_dir)
    if layout == "csv":
        return build_csv(p, files[0])
    return build_reviews(p, files[0], files[1], "amazon-electronics", "Amazon Electronics reviews")


def download(dest: Path) -> Path:
    """Download the 2014 ``reviews_Electronics_5.json.gz`` and ``meta_Electronics.json.gz``."""
    folder = Path(dest) / "amazon-electronics"
    folder.mkdir(parents=True, exist_ok=True)
    for name, url in URLS.items():
        if not (folder / name).exists():
            _fetch(url, folder / name)
    return folder


RECIPE = Recipe("amazon-electronics", ("Amazon Electronics reviews (McAuley 2014), Res-embedding/DIN protocol: "
                                       "history -> next review + 1 random negative, last review test"),
                ElectronicsParams, build, sources, download=download)
