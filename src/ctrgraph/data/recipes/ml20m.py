"""``ml20m``: MovieLens 20M under Res-embedding's protocol (the DIN paper's MovieLens set-up).

Res-embedding (§5.1; Table 2: 138,493 users, 27,278 movies, 21 genres, 20,000,263 ratings): every
rating is an instance; its target is the movie rated at time t, its history the (at most) 50
movies the user rated "no less than 3" before t (``hist_min_rating=3``), the label 1 when the
rating is more than 3 (``label_above=3``: 3.5 and up), else 0.

- history: ratings strictly earlier than t (``history_ties="exclude"``, "before this time"), or
  every rating before it in (timestamp, movieId) order (``"order"``); most recent last, with the
  first genre of each movie (``hist_genre``) and raw times (``hist_ts``, not embedded).
- fields: ``user_id``, ``item_id`` (movieId), ``genres`` (multi-valued, at most 10, the 20 genres +
  ``(no genres listed)`` = the paper's 21), the histories, ``timestamp`` (raw, not embedded).
- split: by users, as DIN (Res-embedding states none): a seeded random ``test_users`` fraction of the
  users is test (default 0.278 = DIN's 38,493 of 138,493), ``valid_users`` (0.1, ours: DIN has
  no validation set) validation, the rest train.

Departures: the paper states neither the split nor the tie rule (above: DIN's user split and
strictly earlier histories); ``tags.csv`` (optional in the official layout) is not used, as by
the paper; ``max_users`` optionally keeps a seeded random subset of users (the full set gives
20M instances with three [N, 50] history arrays: about 12 GB as int32/int64).

Input (``--data-dir``, ``$CTRGRAPH_DATA/ml-20m`` or ``~/.cache/ctrgraph/raw/ml-20m``): the official
``ratings.csv`` (``userId,movieId,rating,timestamp``; ``.gz`` allowed) and ``movies.csv``
(``movieId,title,genres``), optionally inside ``ml-20m/``. ``ctrgraph download ml20m`` fetches the
official zip. Source: https://grouplens.org/datasets/movielens/20m/. Terms: GroupLens' licence
(research use, cite Harper & Konstan 2015, redistribution only under the same licence): never
bundled or committed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import DataError
from ..io import numeric_column, read_table, require_columns, split_joined
from ..raw import TEST, TRAIN, VALID, RawDataset
from ..schema import Field, Kind, Role, Schema
from ..sequences import gather, history_index, sort_events
from ._movielens import _lookup
from .base import Recipe
from .taobao import run_starts

URL = "https://files.grouplens.org/datasets/movielens/ml-20m.zip"
MAX_GENRES = 10


class ML20MParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = PField(50, ge=1, description="history length (paper: 50)")
    hist_min_rating: float = PField(3.0, description="history = earlier movies rated at least this (paper: 3)")
    label_above: float = PField(3.0, description="label 1 when the rating is above this (paper: 3)")
    history_ties: Literal["exclude", "order"] = PField(
        "exclude", description="exclude: only strictly earlier ratings; order: earlier in (timestamp, movieId)")
    test_users: float = PField(38_493 / 138_493, gt=0, lt=1, description="fraction of users in test (DIN)")
    valid_users: float = PField(0.1, ge=0, lt=1, description="fraction of users in validation (ours)")
    seed: int = PField(0, description="user split and user-subset seed")
    max_users: int | None = PField(None, ge=1, description="keep a random subset of this many users (seed)")


def default_dirs() -> list[Path]:
    out = [Path(os.environ["CTRGRAPH_DATA"]) / "ml-20m"] if os.environ.get("CTRGRAPH_DATA") else []
    return out + [Path.home() / ".cache" / "ctrgraph" / "raw" / "ml-20m"]


def locate(data_dir: Path | None) -> tuple[Path, Path]:
    """(ratings.csv[.gz], movies.csv)."""
    cands = [data_dir, data_dir / "ml-20m"] if data_dir else default_dirs()
    for d in cands:
        r = next((d / n for n in ("ratings.csv", "ratings.csv.gz") if (d / n).is_file()), None)
        if r is not None:
            if not (d / "movies.csv").is_file():
                raise DataError(f"ml20m: {d} has {r.name} but no movies.csv")
            return r, d / "movies.csv"
    raise DataError(f"ml20m: no ratings.csv[.gz] in {', '.join(map(str, cands))}; run `ctrgraph download ml20m` "
                    f"or pass --data-dir")


def sources(p: ML20MParams, data_dir: Path | None) -> list[Path]:
    return list(locate(data_dir))


def user_split(users_sorted_codes: np.ndarray, n_users: int, p: ML20MParams) -> np.ndarray:
    """Split of each row from a seeded random split of the users."""
    perm = np.random.default_rng(p.seed).permutation(n_users)
    n_test, n_val = round(p.test_users * n_users), round(p.valid_users * n_users)
    s = np.full(n_users, TRAIN, dtype=np.int8)
    s[perm[:n_test]] = TEST
    s[perm[n_test:n_test + n_val]] = VALID
    return s[users_sorted_codes]


def build(p: ML20MParams, data_dir: Path | None) -> RawDataset:
    rpath, mpath = locate(data_dir)
    r = read_table(rpath, "ml20m ratings")
    require_columns(r, ["userId", "movieId", "rating", "timestamp"], rpath, "ml20m ratings")
    user, movie = numeric_column(r, "userId", rpath), numeric_column(r, "movieId", rpath)
    rating = numeric_column(r, "rating", rpath, dtype=np.float64)
    ts = numeric_column(r, "timestamp", rpath)
    del r
    if p.max_users is not None:
        users = np.unique(user)
        if users.size > p.max_users:
            keep = np.isin(user, np.random.default_rng(p.seed).choice(users, p.max_users, replace=False))
            user, movie, rating, ts = user[keep], movie[keep], rating[keep], ts[keep]
    m = read_table(mpath, "ml20m movies", dtype={"title": str, "genres": str})
    require_columns(m, ["movieId", "title", "genres"], mpath, "ml20m movies")
    mid = numeric_column(m, "movieId", mpath)
    mrow = _lookup(mid, movie, "movie", f"ml20m ({rpath})")
    genres, glen = split_joined(m["genres"].to_numpy(dtype=object), "|", max_len=MAX_GENRES)
    genres = genres.astype(str)

    order = sort_events(user, ts, movie)
    su, sm, st, sr, srow = user[order], movie[order], ts[order], rating[order], mrow[order]
    idx, lens = history_index(su, sr >= p.hist_min_rating, p.max_len)
    if p.history_ties == "exclude":
        g = run_starts(su, st)
        idx, lens = idx[g], lens[g]
    new = np.r_[True, su[1:] != su[:-1]]
    ucode = np.cumsum(new) - 1
    label = (sr > p.label_above).astype(np.int8)
    first_genre = genres[:, 0]
    cols = {
        "user_id": su, "item_id": sm.astype(np.int32), "genres": genres[srow],
        "hist_item_id": gather(sm.astype(np.int32), idx, lens), "hist_genre": gather(first_genre[srow], idx, lens,
                                                                                     fill=""),
        "hist_ts": gather(st, idx, lens), "timestamp": st, "label": label,
    }
    del idx
    lengths = {"genres": glen[srow], "hist_item_id": lens, "hist_genre": lens, "hist_ts": lens}
    L = p.max_len
    fields = (
        Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("genres", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=MAX_GENRES),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_genre", Kind.SEQUENCE, Role.BEHAVIOR, vocab="genres", max_len=L, target="genres",
              group="hist_item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
        Field("label", Kind.NUMERIC, Role.LABEL),
    )
    split = user_split(ucode, int(ucode[-1]) + 1 if ucode.size else 0, p)
    meta = {"source": [str(rpath), str(mpath)], "instances": int(label.size), "positives": int(label.sum()),
            "users": int(new.sum()), "items": int(np.unique(sm).size),
            "per_split": {k: int((split == v).sum()) for k, v in (("train", TRAIN), ("valid", VALID), ("test", TEST))},
            "protocol": (f"Res-embedding MovieLens: every rating an instance, label rating > {p.label_above:g}, "
                         f"history <= {L} movies rated >= {p.hist_min_rating:g} before it ({p.history_ties} ties); "
                         f"random user split (DIN)")}
    return RawDataset(Schema(fields, label="label", description="MovieLens 20M, Res-embedding protocol"), cols,
                      lengths, split, meta=meta)


def download(dest: Path) -> Path:
    """Download and unpack the official zip into ``dest`` (needs network)."""
    from ..download import fetch_zip

    return fetch_zip(URL, dest, member_dir="ml-20m")


RECIPE = Recipe("ml20m", ("MovieLens 20M, Res-embedding protocol: every rating, history = 50 earlier movies "
                          "rated >= 3, label rating > 3, user split"), ML20MParams, build, sources, download=download)
