"""``ml1m``: MovieLens 1M under GraphFM's protocol (CRIPAC-DIG/GraphCTR ``movielens/data/preprocess.py``).

Seven feature fields, no user or movie id:

- ``gender``, ``age``, ``occupation``, ``zipcode`` (user attributes, categorical; the full zip
  string, as the reference code does);
- ``release_year``: the year in the title's trailing ``(yyyy)`` bucketed as the reference does:
  every year before 1930 -> ``"1919-1929"``, then ``"1930-1939"`` ... ``"1960-1969"``, then one
  value per year from 1970 (``"1970"`` ... ``"2000"``); a title without a year -> ``"unknown"``;
- ``genres``: multi-valued, at most 6 per movie (ML-1M's maximum), mean-pooled by the models;
- ``timestamp``: ONE numeric field, min-max scaled to [0, 1]. As in the reference code
  (``MinMaxScaler.fit_transform`` on the retained ratings), min and max are taken over *all*
  instances (train, valid and test), not over the train split.

Label: rating > 3 -> 1, rating < 3 -> 0, rating = 3 dropped (739,012 instances on the full data).
Split: random 8:1:1 (:func:`~ctrgraph.data.split.random_split`, ``seed`` default 2019 like the
reference's ``random.seed(2019)``; the permutation itself differs from Python's ``random.shuffle``,
and the test/valid sizes are ``round(0.1 n)`` each), optionally stratified by the label.

Inputs (``--data-dir``, or ``$CTRGRAPH_DATA/ml-1m``, or ``~/.cache/ctrgraph/raw/ml-1m``):

- the official GroupLens files ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``),
  ``users.dat`` and ``movies.dat`` (ISO-8859-1), optionally inside an ``ml-1m/`` folder;
  ``ctrgraph download ml1m`` fetches the official zip;
- or a CSV ``ratings.csv[.gz]`` (header ``user_id,movie_id,rating,timestamp``) next to
  ``users.dat`` and ``movies.dat``. Its ``timestamp`` may be empty. Missing timestamps do not
  enter min/max; the scaled feature of such a row is filled with ``timestamp_fill``:
  ``user_mean`` (default: the mean scaled timestamp of the same user's timed instances, because
  ML-1M users rate in few sessions; the global mean when the user has none), ``mean`` (global
  mean of the timed instances) or ``zero``. The number of filled rows is in ``meta``.

The data may not be redistributed: it is never bundled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field as PField

from ...errors import DataError
from ..io import numeric_column, read_table, require_columns, split_joined
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ..split import random_split
from .base import Recipe
from ._movielens import _lookup

URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
MAX_GENRES = 6


class ML1MParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = PField(2019, description="seed of the random 8:1:1 split")
    stratify: bool = PField(False, description="split each label class 8:1:1 separately")
    valid: float = PField(0.1, ge=0, lt=1, description="validation fraction")
    test: float = PField(0.1, ge=0, lt=1, description="test fraction")
    timestamp_fill: Literal["user_mean", "mean", "zero"] = PField(
        "user_mean", description="scaled timestamp of rows whose timestamp is missing (CSV copy only)")
    max_rows: int | None = PField(None, ge=10, description="a uniform random subsample of this many instances "
                                                          "(after dropping rating 3, before the split)")
    sample_seed: int = PField(0, description="seed of the max_rows subsample")


def default_dirs() -> list[Path]:
    out = []
    if os.environ.get("CTRGRAPH_DATA"):
        out.append(Path(os.environ["CTRGRAPH_DATA"]) / "ml-1m")
    out.append(Path.home() / ".cache" / "ctrgraph" / "raw" / "ml-1m")
    return out


def _csv(d: Path) -> Path | None:
    for name in ("ratings.csv.gz", "ratings.csv"):
        if (d / name).exists():
            return d / name
    return None


def locate(data_dir: Path | None) -> tuple[str, Path, Path]:
    """Find the files: (layout 'official' | 'csv', directory, ratings file)."""
    cands = [data_dir, data_dir / "ml-1m"] if data_dir else default_dirs()
    for d in cands:
        if (d / "ratings.dat").exists():
            return "official", d, d / "ratings.dat"
        if _csv(d) is not None:
            return "csv", d, _csv(d)
    where = ", ".join(str(c) for c in cands)
    raise DataError(f"ml1m: no ratings.dat (official layout) or ratings.csv[.gz] in {where}; "
                    f"run `ctrgraph download ml1m` or pass --data-dir")


def sources(p: ML1MParams, data_dir: Path | None) -> list[Path]:
    _, d, f = locate(data_dir)
    return [f, d / "users.dat", d / "movies.dat"]


def _read_colon_table(path: Path, names: list[str], what: str, dtype=None) -> pd.DataFrame:
    """``a::b::c`` files without ``::`` inside values, read by the C parser (``:`` separator)."""
    df = read_table(path, what, sep=":", header=None, dtype=dtype, encoding="ISO-8859-1",
                    usecols=[2 * i for i in range(len(names))])
    df.columns = names
    return df


def read_movies(path: Path) -> pd.DataFrame:
    """``MovieID::Title::Genres`` (titles may contain ``:``) -> DataFrame movie_id, title, genres."""
    lines = read_table(path, "ml1m movies", sep="\t", header=None, names=["line"], dtype=str,
                       encoding="ISO-8859-1", quoting=3)["line"]
    head = lines.str.split("::", n=1, expand=True)
    tail = head[1].str.rsplit("::", n=1, expand=True) if head.shape[1] == 2 else None
    if tail is None or tail.shape[1] != 2 or tail[1].isna().any():
        r = 0 if tail is None or tail.shape[1] != 2 else int(np.flatnonzero(tail[1].isna().to_numpy())[0])
        raise DataError(f"{path}, row {r + 1}: expected MovieID::Title::Genres, got {lines.iloc[r]!r}")
    df = pd.DataFrame({"movie_id": head[0], "title": tail[0], "genres": tail[1]})
    df["movie_id"] = numeric_column(df, "movie_id", path)
    return df


def year_bucket(titles: pd.Series) -> np.ndarray:
    """GraphFM's release-year buckets from titles ending in ``(yyyy)`` (see module doc)."""
    y = pd.to_numeric(titles.astype(str).str.strip().str.extract(r"\((\d{4})\)$")[0], errors="coerce").to_numpy()
    known = ~np.isnan(y)
    yi = np.where(known, y, 0).astype(np.int64)
    decade = (yi // 10) * 10
    out = np.where(yi >= 1970, yi.astype(str), np.char.add(np.char.add(decade.astype(str), "-"),
                                                            (decade + 9).astype(str)))
    out = np.where(yi < 1930, "1919-1929", out)
    return np.where(known, out, "unknown").astype(str)


def scale_timestamp(ts: np.ndarray, users: np.ndarray, fill: str) -> tuple[np.ndarray, dict]:
    """Min-max scale over all rows with a timestamp; fill missing ones (see module doc)."""
    known = ~np.isnan(ts)
    if not known.any():
        return np.zeros(ts.size), {"timestamp_missing": int(ts.size), "timestamp_min": None, "timestamp_max": None}
    lo, hi = float(np.min(ts[known])), float(np.max(ts[known]))
    x = (ts - lo) / (hi - lo) if hi > lo else np.where(known, 0.0, np.nan)
    gmean = float(np.mean(x[known]))
    if fill == "zero":
        x = np.where(known, x, 0.0)
    elif fill == "mean":
        x = np.where(known, x, gmean)
    else:
        codes = pd.factorize(users)[0]
        s = np.bincount(codes, weights=np.where(known, x, 0.0))
        c = np.bincount(codes, weights=known.astype(np.float64))
        umean = np.where(c > 0, s / np.maximum(c, 1), gmean)
        x = np.where(known, x, umean[codes])
    return x, {"timestamp_missing": int((~known).sum()), "timestamp_min": lo, "timestamp_max": hi,
               "timestamp_fill": fill}


def build(p: ML1MParams, data_dir: Path | None) -> RawDataset:
    layout, d, f = locate(data_dir)
    if layout == "official":
        r = _read_colon_table(f, ["user_id", "movie_id", "rating", "timestamp"], "ml1m ratings")
    else:
        r = read_table(f, "ml1m ratings")
        require_columns(r, ["user_id", "movie_id", "rating", "timestamp"], f, "ml1m ratings")
    user = numeric_column(r, "user_id", f)
    movie = numeric_column(r, "movie_id", f)
    rating = numeric_column(r, "rating", f, dtype=np.float64)
    ts = numeric_column(r, "timestamp", f, dtype=np.float64, allow_nan=layout == "csv")

    u = _read_colon_table(d / "users.dat", ["user_id", "gender", "age", "occupation", "zipcode"], "ml1m users",
                          dtype=str)
    m = read_movies(d / "movies.dat")

    keep = rating != 3
    if p.max_rows is not None and p.max_rows < int(keep.sum()):  # a documented subsample (a smaller machine)
        rows = np.flatnonzero(keep)
        keep = np.sort(np.random.default_rng(p.sample_seed).choice(rows, p.max_rows, replace=False))
    user, movie, rating, ts = user[keep], movie[keep], rating[keep], ts[keep]
    label = (rating > 3).astype(np.int8)
    n = label.size

    urow = _lookup(numeric_column(u, "user_id", d / "users.dat"), user, "user", f"ml1m ({f})")
    mrow = _lookup(m["movie_id"].to_numpy(), movie, "movie", f"ml1m ({f})")
    genres, glen = split_joined(m["genres"].to_numpy(dtype=object), "|", max_len=MAX_GENRES)
    tsx, tmeta = scale_timestamp(ts, user, p.timestamp_fill)

    cols = {
        "gender": u["gender"].astype(str).to_numpy()[urow].astype(str),
        "age": numeric_column(u, "age", d / "users.dat")[urow],
        "occupation": numeric_column(u, "occupation", d / "users.dat")[urow],
        "zipcode": u["zipcode"].astype(str).to_numpy()[urow].astype(str),
        "release_year": year_bucket(m["title"])[mrow],
        "genres": genres.astype(str)[mrow],
        "timestamp": tsx.astype(np.float64),
        "label": label,
    }
    fields = (
        Field("gender", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("age", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("occupation", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("zipcode", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("release_year", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("genres", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=MAX_GENRES),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT),
        Field("label", Kind.NUMERIC, Role.LABEL),
    )
    split = random_split(n, valid=p.valid, test=p.test, seed=p.seed, stratify=label if p.stratify else None)
    meta = {"instances": n, "positives": int(label.sum()), "layout": layout, "source": str(d),
            "protocol": "GraphFM ML-1M", "subsample": p.max_rows, **tmeta}
    return RawDataset(Schema(fields, label="label", description="MovieLens 1M, GraphFM protocol"), cols,
                      {"genres": glen[mrow]}, split, meta=meta)


def download(dest: Path) -> Path:
    """Download and unpack the official zip into ``dest`` (needs network)."""
    from ..download import fetch_zip

    return fetch_zip(URL, dest, member_dir="ml-1m")


RECIPE = Recipe("ml1m", ("MovieLens 1M, GraphFM protocol: 7 fields, no ids, random 8:1:1 "
           "(739,012 instances)"), ML1MParams, build, sources, download=download)
