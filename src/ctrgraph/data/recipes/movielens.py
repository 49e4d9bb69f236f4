"""``movielens``: the bundled ml-latest-small (GroupLens, redistributable under its licence, see
``bundled/ml-latest-small/README.txt``) under the ml100k-ctr rules for half-star ratings:
label 1 if rating >= 4.0, 0 if rating <= 2.5, 3.0 and 3.5 dropped; no user attributes;
items: movieId, release year parsed from the title's trailing ``(yyyy)`` (missing -> ``unknown``),
genres; history = movies rated >= 4.0 strictly before (at most 50); the same split rules.
This is the offline default for the demo and the quick start.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field as PField

from ..io import numeric_column, read_table, require_columns
from .base import Recipe
from ._movielens import build_ctr_instances, split_lists

BUNDLED = Path(__file__).resolve().parent.parent / "bundled" / "ml-latest-small"
URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"


class MovieLensParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = PField(50, ge=1, description="history length cap")


def _dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir / "ml-latest-small" if (data_dir / "ml-latest-small").is_dir() else data_dir
    return BUNDLED


def _ratings(d: Path) -> Path:
    p = d / "ratings.csv.gz"
    return p if p.exists() else d / "ratings.csv"


def sources(p, data_dir):
    d = _dir(data_dir)
    return [_ratings(d), d / "movies.csv"]


def build(p: MovieLensParams, data_dir: Path | None):
    d = _dir(data_dir)
    f = _ratings(d)
    r = read_table(f, "movielens ratings")
    require_columns(r, ["userId", "movieId", "rating", "timestamp"], f, "movielens ratings")
    m = read_table(d / "movies.csv", "movielens movies", dtype=str)
    require_columns(m, ["movieId", "title", "genres"], d / "movies.csv", "movielens movies")
    year = m["title"].str.strip().str.extract(r"\((\d{4})\)$")[0].fillna("unknown").to_numpy(dtype=object).astype(str)
    genres, glen = split_lists(m["genres"].to_numpy(dtype=object), "|")
    raw = build_ctr_instances(
        numeric_column(r, "userId", f), numeric_column(r, "movieId", f),
        numeric_column(r, "rating", f, dtype=np.float64), numeric_column(r, "timestamp", f),
        user_table=None, user_key=None, item_key=m["movieId"].astype(np.int64).to_numpy(), item_year=year,
        genre_matrix=genres.astype(str), genre_len=glen, pos_min=4.0, neg_max=2.5, max_len=p.max_len,
        source=f"movielens ({d})",
    )
    raw.meta.update(source=str(d), protocol="ml100k-ctr rules on ml-latest-small")
    return raw


RECIPE = Recipe("movielens", "MovieLens latest-small (bundled), ml100k-ctr rules", MovieLensParams, build, sources, bundled=True)
