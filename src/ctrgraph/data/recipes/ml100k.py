"""``ml100k``: MovieLens 100K as a CTR task, exactly the ml100k-ctr protocol (../benchmarks/ml-100k-ctr.md).

Reads either the official GroupLens layout (``u.data``, ``u.user``, ``u.item``, optionally inside
an ``ml-100k/`` folder) or the RecBole atomic copy (``ml-100k.inter[.gz]``, ``.user``, ``.item``).
``ctrgraph download ml100k`` fetches the official zip for users who are online. The data may not
be redistributed: it is never bundled.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field as PField

from ...errors import DataError
from ..io import numeric_column, read_table, require_columns
from .base import Recipe
from ..sequences import pad_ragged
from ._movielens import build_ctr_instances, split_lists

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
MISSING_YEAR = "unkonwn"  # the literal value of the one missing year in the RecBole copy (protocol keeps it)


class ML100KParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = PField(50, ge=1, description="history length cap")


def default_dirs() -> list[Path]:
    out = []
    if os.environ.get("CTRGRAPH_DATA"):
        out.append(Path(os.environ["CTRGRAPH_DATA"]) / "ml-100k")
    out.append(Path.home() / ".cache" / "ctrgraph" / "raw" / "ml-100k")
    return out


def locate(data_dir: Path | None) -> tuple[str, Path]:
    """Find the files: returns (layout, directory) with layout 'official' or 'atomic'."""
    cands = [data_dir, data_dir / "ml-100k"] if data_dir else default_dirs()
    for d in cands:
        if d is None:
            continue
        if (d / "u.data").exists():
            return "official", d
        if (d / "ml-100k.inter.gz").exists() or (d / "ml-100k.inter").exists():
            return "atomic", d
    where = ", ".join(str(c) for c in cands if c)
    raise DataError(f"ml100k: no u.data (official layout) or ml-100k.inter (RecBole layout) in {where}; "
                    f"run `ctrgraph download ml100k` or pass --data-dir")


def _atomic(d: Path, stem: str) -> Path:
    p = d / f"ml-100k.{stem}.gz"
    return p if p.exists() else d / f"ml-100k.{stem}"


def sources(p: ML100KParams, data_dir: Path | None) -> list[Path]:
    layout, d = locate(data_dir)
    if layout == "official":
        return [d / "u.data", d / "u.user", d / "u.item"]
    return [_atomic(d, s) for s in ("inter", "user", "item")]


def _read_official(d: Path):
    f = d / "u.data"
    r = read_table(f, "ml100k ratings", sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"])
    u = read_table(d / "u.user", "ml100k users", sep="|", header=None,
                   names=["user_id", "age", "gender", "occupation", "zip_code"], dtype=str)
    it = read_table(d / "u.item", "ml100k items", sep="|", header=None, encoding="latin-1", dtype=str,
                    names=["item_id", "title", "release_date", "video_date", "url"] + GENRES)
    year = it["release_date"].fillna("").str[-4:].replace("", MISSING_YEAR).to_numpy(dtype=object)
    flags = it[GENRES].astype(int).to_numpy().astype(bool)
    rows, cols = np.nonzero(flags)  # row-major: genres of each item in file (column) order
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=flags.shape[0]))])
    genres, glen = pad_ragged(np.array(GENRES, dtype=object)[cols], offsets, max(1, int(np.diff(offsets).max())),
                              fill="")
    return r, f, u, it["item_id"].astype(np.int64).to_numpy(), year, genres, glen


def _read_atomic(d: Path):
    f = _atomic(d, "inter")
    r = read_table(f, "ml100k ratings", sep="\t")
    r.columns = [c.split(":")[0] for c in r.columns]
    require_columns(r, ["user_id", "item_id", "rating", "timestamp"], f, "ml100k ratings")
    u = read_table(_atomic(d, "user"), "ml100k users", sep="\t", dtype=str)
    u.columns = [c.split(":")[0] for c in u.columns]
    it = read_table(_atomic(d, "item"), "ml100k items", sep="\t", dtype=str, quoting=3)
    it.columns = [c.split(":")[0] for c in it.columns]
    require_columns(it, ["item_id", "release_year", "class"], _atomic(d, "item"), "ml100k items")
    year = it["release_year"].fillna(MISSING_YEAR).to_numpy(dtype=object)
    genres, glen = split_lists(it["class"].to_numpy(dtype=object), " ")
    return r, f, u, it["item_id"].astype(np.int64).to_numpy(), year, genres, glen


def build(p: ML100KParams, data_dir: Path | None):
    layout, d = locate(data_dir)
    r, f, u, item_key, year, genres, glen = (_read_official if layout == "official" else _read_atomic)(d)
    user = numeric_column(r, "user_id", f)
    item = numeric_column(r, "item_id", f)
    rating = numeric_column(r, "rating", f, dtype=np.float64)
    ts = numeric_column(r, "timestamp", f)
    require_columns(u, ["user_id", "age", "gender", "occupation", "zip_code"], d, "ml100k users")
    user_table = {
        "age": u["age"].astype(np.int64).to_numpy(),
        "gender": u["gender"].to_numpy(dtype=object).astype(str),
        "occupation": u["occupation"].to_numpy(dtype=object).astype(str),
        "zip3": u["zip_code"].astype(str).str[:3].to_numpy(dtype=object).astype(str),
    }
    raw = build_ctr_instances(
        user, item, rating, ts, user_table=user_table, user_key=u["user_id"].astype(np.int64).to_numpy(),
        item_key=item_key, item_year=np.asarray(year).astype(str), genre_matrix=genres.astype(str), genre_len=glen,
        pos_min=4, neg_max=2, max_len=p.max_len, source=f"ml100k ({d})",
    )
    raw.meta.update(layout=layout, source=str(d), protocol="ml100k-ctr")
    return raw


def download(dest: Path) -> Path:
    """Download and unpack the official zip into ``dest`` (needs network)."""
    from ..download import fetch_zip

    return fetch_zip(URL, dest, member_dir="ml-100k")


RECIPE = Recipe("ml100k", "MovieLens 100K, ml100k-ctr benchmark protocol (72,855 instances)", ML100KParams, build, sources, download=download)
