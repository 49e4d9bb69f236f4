"""``tmall``: Tmall repeat-buyer logs (IJCAI-15, Tianchi data set 42) under DG-ENN's protocol.

DG-ENN (§5.1.1: "user ID, age range and gender; item attributes category and brand; context
features timestamp and action type" = 8 fields; §5.1.2 protocol):

- behaviours: the rows of ``user_log_format1.csv`` (all action types by default: the paper keeps
  the action type as a context field, which is informative only then; ``click_actions=[0]``
  keeps clicks only), per user sorted by ``time_stamp`` (a day, ``mmdd``), same-day ties in file
  order (the paper states no tie rule);
- targets T-2 / T-1 / T per user with histories [1..T-3] / [1..T-2] / [1..T-1] (``max_len``, most
  recent last), 10 uniformly drawn items the user never interacted with as negatives per target,
  sharing the target's user, context and history (:mod:`._dgenn`). Users with < 3 behaviours dropped.
- fields: ``user_id``, ``age_range``, ``gender`` (user; -1 where ``user_info_format1.csv`` has no
  value or no row), ``item_id``, ``cat_id``, ``brand_id`` (item; each item's first logged
  category/brand, -1 where missing; ``seller=True`` adds ``seller_id``), ``time_stamp`` and
  ``action_type`` (context, categorical), ``hist_item_id`` / ``hist_cat_id`` / ``hist_brand_id``.

Departures: the paper's 415,800 users are not explained (the full log has 424,170; users with
>= 3 behaviours is our reading); ``max_users`` optionally keeps a seeded random subset of users.
``train_format1.csv`` (the contest's repeat-buyer labels) is part of the official layout but not
used: DG-ENN builds click instances, not repeat-buyer labels.

Input (``--data-dir``, ``$CTRGRAPH_DATA/tmall`` or ``~/.cache/ctrgraph/raw/tmall``): the official
``data_format1`` files ``user_log_format1.csv`` (``user_id,item_id,cat_id,seller_id,brand_id,
time_stamp,action_type``; action 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite) and
``user_info_format1.csv`` (``user_id,age_range,gender``), optionally gzipped.

Source: https://tianchi.aliyun.com/dataset/42 (login required: no downloader). Terms: Tianchi's
research/non-commercial terms, no redistribution: never bundled or committed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import ConfigError, DataError
from ..io import numeric_column, read_table, require_columns
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ._dgenn import leave_three_out
from .base import Recipe

TIANCHI = "https://tianchi.aliyun.com/dataset/42"
LOG_COLUMNS = ["user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type"]
INFO_COLUMNS = ["user_id", "age_range", "gender"]
FILES = ("user_log_format1.csv", "user_info_format1.csv")


class TmallParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    negatives: int = PField(10, ge=1, description="sampled non-interacted items per target (paper: 10)")
    max_len: int = PField(50, ge=1, description="history length cap (most recent kept)")
    seed: int = PField(0, description="negative-sampling and user-subset seed")
    click_actions: list[int] | None = PField(None, description="action types that are behaviours (None: all)")
    seller: bool = PField(False, description="add seller_id as an item attribute")
    max_users: int | None = PField(None, ge=1, description="keep a random subset of this many users (seed)")


def folders(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / "tmall", data_dir / "data_format1"]
    out = [Path(os.environ["CTRGRAPH_DATA"]) / "tmall"] if os.environ.get("CTRGRAPH_DATA") else []
    return out + [Path.home() / ".cache" / "ctrgraph" / "raw" / "tmall"]


def locate(data_dir: Path | None) -> list[Path]:
    """[user log, user info]."""
    cands = folders(data_dir)
    for d in cands:
        found = [next((d / n for n in (f, f + ".gz") if (d / n).is_file()), None) for f in FILES]
        if found[0] is not None:
            if found[1] is None:
                raise DataError(f"tmall: {d} has user_log_format1.csv but not user_info_format1.csv")
            return found
    raise DataError(f"tmall: no user_log_format1.csv[.gz] in {', '.join(map(str, cands))}. The IJCAI-15 data "
                    f"is distributed by Tianchi after login ({TIANCHI}): download data_format1.zip there, unpack "
                    f"it and pass --data-dir FOLDER")


def sources(p: TmallParams, data_dir: Path | None) -> list[Path]:
    return locate(data_dir)


def _ints(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """An integer column with missing values as -1 (non-numbers are an error naming the row)."""
    return np.nan_to_num(numeric_column(df, col, path, dtype=np.float64, allow_nan=True), nan=-1).astype(np.int64)


def build(p: TmallParams, data_dir: Path | None) -> RawDataset:
    log_path, info_path = locate(data_dir)
    log = read_table(log_path, "tmall user log")
    require_columns(log, LOG_COLUMNS, log_path, "tmall user log")
    user = numeric_column(log, "user_id", log_path)
    item = numeric_column(log, "item_id", log_path)
    day = numeric_column(log, "time_stamp", log_path)
    action = numeric_column(log, "action_type", log_path)
    keep = np.ones(user.size, dtype=bool) if p.click_actions is None else np.isin(action, p.click_actions)
    if p.max_users is not None:
        users = np.unique(user)
        if users.size > p.max_users:
            keep &= np.isin(user, np.random.default_rng(p.seed).choice(users, p.max_users, replace=False))
    attrs = {c: _ints(log, c, log_path) for c in ("cat_id", "brand_id", "seller_id")}
    items, first = np.unique(item, return_index=True)  # each item's first logged attributes
    item_cols = {"item_id": items, "cat_id": attrs["cat_id"][first], "brand_id": attrs["brand_id"][first]}
    if p.seller:
        item_cols["seller_id"] = attrs["seller_id"][first]

    info = read_table(info_path, "tmall user info", dtype=str)
    require_columns(info, INFO_COLUMNS, info_path, "tmall user info")
    iu = numeric_column(info, "user_id", info_path)
    row = pd.Index(iu).get_indexer(user)
    user_cols = {"user_id": user}
    for c in ("age_range", "gender"):
        v = _ints(info, c, info_path)
        user_cols[c] = np.where(row >= 0, v[np.maximum(row, 0)], -1)

    sel = np.flatnonzero(keep)
    icode = np.searchsorted(items, item)
    hist = {"hist_item_id": item, "hist_cat_id": attrs["cat_id"][first][icode],
            "hist_brand_id": attrs["brand_id"][first][icode]}
    cols, lengths, split, info_meta = leave_three_out(
        user[sel], icode[sel], items.size, day[sel], sel,
        user_cols={k: v[sel] for k, v in user_cols.items()}, item_cols=item_cols,
        context_cols={"time_stamp": day[sel], "action_type": action[sel]},
        hist_cols={k: v[sel] for k, v in hist.items()}, negatives=p.negatives, max_len=p.max_len, seed=p.seed,
        what=f"tmall: {log_path}")
    del cols["item"]
    L = p.max_len
    fields = [Field("user_id", Kind.CATEGORICAL, Role.USER), Field("age_range", Kind.CATEGORICAL, Role.USER_ATTR),
              Field("gender", Kind.CATEGORICAL, Role.USER_ATTR), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
              Field("cat_id", Kind.CATEGORICAL, Role.ITEM_ATTR), Field("brand_id", Kind.CATEGORICAL, Role.ITEM_ATTR)]
    if p.seller:
        fields.append(Field("seller_id", Kind.CATEGORICAL, Role.ITEM_ATTR))
    fields += [
        Field("time_stamp", Kind.CATEGORICAL, Role.CONTEXT), Field("action_type", Kind.CATEGORICAL, Role.CONTEXT),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_cat_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="cat_id", max_len=L, target="cat_id",
              group="hist_item_id"),
        Field("hist_brand_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="brand_id", max_len=L, target="brand_id",
              group="hist_item_id"),
        Field("label", Kind.NUMERIC, Role.LABEL),
    ]
    meta = {"source": [str(log_path), str(info_path)], "events_read": int(user.size), "events_used": int(sel.size),
            "items": int(items.size), **info_meta}
    return RawDataset(Schema(tuple(fields), label="label", description="Tmall IJCAI-15 logs, DG-ENN protocol"),
                      cols, lengths, split, meta=meta)


def download(dest: Path) -> Path:
    """Tianchi needs a login: no downloader; the error names the manual step."""
    raise ConfigError(f"tmall: no downloader (Tianchi requires a login), nothing downloaded. Download "
                      f"data_format1.zip (user_log_format1.csv, user_info_format1.csv) from {TIANCHI}, "
                      f"unpack it into {Path(dest) / 'tmall'} and pass --data-dir")


RECIPE = Recipe("tmall", ("Tmall IJCAI-15 repeat-buyer logs, DG-ENN protocol: targets T-2/T-1/T per user + 10 "
                          "sampled negatives each, 8 fields + histories"), TmallParams, build, sources,
                download=download)
