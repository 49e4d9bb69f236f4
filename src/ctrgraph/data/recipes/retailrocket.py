"""``retailrocket``: RetailRocket e-commerce events (Kaggle) as click sequences, DemiNet's protocol by default.

Input (Kaggle data set ``retailrocket/ecommerce-dataset``, https://www.kaggle.com/retailrocket/ecommerce-dataset;
Kaggle needs a login, so ``ctrgraph download retailrocket`` only prints the ``kaggle`` command):
a folder (``--data-dir``, ``path``, ``$CTRGRAPH_DATA/retailrocket`` or
``~/.cache/ctrgraph/raw/retailrocket``) holding, each optionally gzipped,

- ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid``; ``timestamp`` in unix
  milliseconds, ``event`` in view / addtocart / transaction;
- ``item_properties_part1.csv`` and ``item_properties_part2.csv``: ``timestamp,itemid,property,value``,
  weekly snapshots of item properties; only the ``categoryid`` property is read (in chunks: the two
  files hold 20M rows). ``category_tree.csv`` is not used.

Protocol (DemiNet, AAAI 2022 "Datasets"/"Settings": "sequential events of viewing and adding to
cart. We treat both of them as clicks"; negatives after DIN/DIEN, which DemiNet does not describe):

- clicks are the ``click_events`` (default view and addtocart); transactions are dropped. The same
  (visitor, item, millisecond) clicked twice (a view and an add-to-cart logged together) counts
  once. ``max_users`` optionally keeps a random subset of visitors (seed).
- ``protocol="deminet"`` (default): visitors with fewer than 5 clicks removed, split point = the
  80 % quantile of all click times, train <= point < test, valid = the instances in (the 70 %
  quantile, the split point] (see :func:`~ctrgraph.data.recipes.taobao.split_instances`).
- category (``categoryid``): ``category_at="latest"`` (default): one category per item, its latest
  snapshot in the files (equal snapshot times: the later row, part2 after part1), used for the
  target, the history and the negatives alike; ``category_at="event"``: the item's snapshot at or
  before the time of the event (of the positive, for its negatives), else its earliest snapshot
  (constant properties have a single snapshot, often dated after the event). Items without any
  ``categoryid`` get the category ``-1`` (``meta["items_without_category"]``).
- clicks of a visitor ordered by (time, item id); every click after the first ``min_history`` is
  a positive whose history is the ``max_len`` clicks before it; ``negatives`` random clicked items
  the visitor never clicked (with their category) share the positive's user, time and history.

Fields: ``user_id`` (visitorid), ``item_id``, ``category`` (item_attr), ``hist_item_id``,
``hist_category``, ``hist_ts`` (raw, not embedded), ``timestamp`` (context, raw), ``label``.
Times are unix SECONDS as float64 (the file's milliseconds / 1000: exact order, the unit of the
other recipes).

Terms: the Kaggle page gives the licence CC BY-NC-SA 4.0 (not verified here: no web access);
never bundled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field as PField
from pydantic import model_validator

from ...errors import DataError
from ..io import numeric_column, read_table, require_columns
from ..raw import RawDataset
from ..schema import Schema
from .base import Recipe
from .taobao import SequenceParams, active_users, sequence_instances

KAGGLE = "https://www.kaggle.com/retailrocket/ecommerce-dataset"
KAGGLE_SLUG = "retailrocket/ecommerce-dataset"
EVENTS = ["view", "addtocart", "transaction"]
EVENT_COLUMNS = ["timestamp", "visitorid", "event", "itemid"]
PROPERTY_COLUMNS = ["timestamp", "itemid", "property", "value"]
FILES = ("events.csv", "item_properties_part1.csv", "item_properties_part2.csv")
CHUNK_ROWS = 2_000_000


class RetailRocketParams(SequenceParams):
    protocol: Literal["default", "deminet"] = PField(
        "deminet", description="deminet: visitors with < 5 clicks removed, split point = quantile of all click "
                               "times, train <= point < test; default: the taobao recipe's split")
    path: str | None = PField(None, description="folder holding events.csv and item_properties_part{1,2}.csv")
    click_events: list[str] = PField(["view", "addtocart"], min_length=1, description="event types that are clicks")
    category_at: Literal["latest", "event"] = PField("latest", description="latest: one category per item (its "
                                                                            "latest snapshot); event: the snapshot "
                                                                            "at the event's time")
    max_users: int | None = PField(None, ge=1, description="keep a random subset of this many visitors (seed)")

    @model_validator(mode="after")
    def _check_events(self) -> "RetailRocketParams":
        bad = [e for e in self.click_events if e not in EVENTS]
        if bad:
            raise ValueError(f"click_events: unknown event(s) {bad}; known: {EVENTS}")
        return self


def _folders(p: RetailRocketParams, data_dir: Path | None) -> list[Path]:
    if p.path:
        f = Path(p.path).expanduser()
        if data_dir is not None and not f.is_absolute() and (data_dir / f).exists():
            f = data_dir / f
        return [f]
    if data_dir is not None:
        return [data_dir, data_dir / "retailrocket"]
    out = []
    if os.environ.get("CTRGRAPH_DATA"):
        out.append(Path(os.environ["CTRGRAPH_DATA"]) / "retailrocket")
    out.append(Path.home() / ".cache" / "ctrgraph" / "raw" / "retailrocket")
    return out


def _instructions(folder: Path) -> str:
    return (f"RetailRocket is distributed by Kaggle after login ({KAGGLE}). With the Kaggle CLI "
            f"(pip install kaggle; an API token in ~/.kaggle/kaggle.json):\n"
            f"    kaggle datasets download -d {KAGGLE_SLUG} -p {folder} --unzip\n"
            f"then pass --data-dir {folder}")


def locate(p: RetailRocketParams, data_dir: Path | None) -> list[Path]:
    """[events, item_properties_part1, item_properties_part2] (each ``.csv`` or ``.csv.gz``)."""
    folders = _folders(p, data_dir)
    for d in folders:
        found = [next((d / n for n in (f, f + ".gz") if (d / n).is_file()), None) for f in FILES]
        if found[0] is not None:
            missing = [f for f, x in zip(FILES, found) if x is None]
            if missing:
                raise DataError(f"retailrocket: {d} has events.csv but not {missing}; {_instructions(d)}")
            return found
    raise DataError(f"retailrocket: no events.csv[.gz] in {', '.join(map(str, folders))}. "
                    f"{_instructions(folders[0])}")


def sources(p: RetailRocketParams, data_dir: Path | None) -> list[Path]:
    return locate(p, data_dir)


def read_events(path: Path) -> pd.DataFrame:
    """timestamp (ms), visitorid, itemid (int64) and the event code (index into EVENTS)."""
    df = read_table(path, "retailrocket events", dtype={"event": str, "transactionid": str})
    require_columns(df, EVENT_COLUMNS, path, "retailrocket events")
    out = pd.DataFrame({c: numeric_column(df, c, path) for c in ("timestamp", "visitorid", "itemid")})
    e = df["event"].astype(str).str.strip()
    code = pd.Index(EVENTS).get_indexer(e)
    if (code < 0).any():
        r = int(np.flatnonzero(code < 0)[0])
        raise DataError(f"{path}: column 'event', row {r + 1}: {df['event'].iloc[r]!r} is not one of {EVENTS}")
    out["event"] = code.astype(np.int8)
    return out


def read_categories(paths: list[Path]) -> pd.DataFrame:
    """The ``categoryid`` snapshots of the property files: columns timestamp, itemid, category, order
    (row order across the files), read in chunks."""
    parts = []
    n_before = 0
    for path in paths:
        if not path.exists():
            raise DataError(f"retailrocket item properties: file not found: {path}")
        if path.stat().st_size == 0:
            raise DataError(f"retailrocket item properties: {path} is empty")
        try:
            reader = pd.read_csv(path, chunksize=CHUNK_ROWS, dtype={"property": str, "value": str})
            n_rows = 0
            for ch in reader:
                require_columns(ch, PROPERTY_COLUMNS, path, "retailrocket item properties")
                sel = ch[ch["property"].astype(str).str.strip() == "categoryid"]
                if len(sel):
                    rows = sel.index.to_numpy()  # the reader's index counts data rows from 0 across chunks
                    sel = sel.reset_index(drop=True)
                    for c in ("timestamp", "itemid", "value"):
                        v = pd.to_numeric(sel[c], errors="coerce")
                        bad = v.isna().to_numpy() | (np.mod(v.fillna(0).to_numpy(dtype=np.float64), 1) != 0)
                        if bad.any():
                            r = int(np.flatnonzero(bad)[0])
                            raise DataError(f"{path}: column {c!r}, row {rows[r] + 1}: {sel[c].iloc[r]!r} is "
                                            f"not an integer" + (" (property categoryid)" if c == "value" else ""))
                    parts.append(pd.DataFrame({
                        "timestamp": pd.to_numeric(sel["timestamp"]).to_numpy().astype(np.int64),
                        "itemid": pd.to_numeric(sel["itemid"]).to_numpy().astype(np.int64),
                        "category": pd.to_numeric(sel["value"]).to_numpy().astype(np.int64),
                        "order": n_before + rows}))
                n_rows += len(ch)
            if n_rows == 0:
                raise DataError(f"retailrocket item properties: {path} has a header but no rows")
            n_before += n_rows
        except pd.errors.EmptyDataError:
            raise DataError(f"retailrocket item properties: {path} is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
            raise DataError(f"retailrocket item properties: cannot parse {path}: {e}") from None
    if not parts:
        return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in ("timestamp", "itemid", "category", "order")})
    return pd.concat(parts, ignore_index=True)


def latest_categories(snap: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(sorted item ids, the category of each item's latest snapshot; ties: the later row)."""
    it, t, o = (snap[c].to_numpy() for c in ("itemid", "timestamp", "order"))
    order = np.lexsort((o, t, it))
    last = np.ones(order.size, dtype=bool)
    last[:-1] = it[order][1:] != it[order][:-1]
    rows = order[last]
    return it[rows], snap["category"].to_numpy()[rows]


def categories_at(snap: pd.DataFrame, item: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Category of ``item`` at time ``t`` (ms): its latest snapshot at or before ``t`` (equal times:
    the later row), else its earliest snapshot; -1 for items without any."""
    q = pd.DataFrame({"itemid": np.asarray(item, dtype=np.int64), "timestamp": np.asarray(t, dtype=np.int64),
                      "q": np.arange(np.size(item))})
    q = q.sort_values("timestamp", kind="stable")
    s = snap.sort_values(["timestamp", "order"], kind="stable")[["itemid", "timestamp", "category"]]
    back = pd.merge_asof(q, s, on="timestamp", by="itemid", direction="backward")
    first = s.drop_duplicates("itemid", keep="first")  # earliest snapshot of each item
    fallback = pd.Index(first["itemid"].to_numpy()).get_indexer(back["itemid"].to_numpy())
    fcat = np.where(fallback >= 0, first["category"].to_numpy()[np.maximum(fallback, 0)] if len(first) else -1, -1)
    cat = back["category"].to_numpy(dtype=np.float64, na_value=np.nan)
    cat = np.where(np.isnan(cat), fcat, cat).astype(np.int64)
    out = np.empty(cat.size, dtype=np.int64)
    out[back["q"].to_numpy()] = cat
    return out


def build(p: RetailRocketParams, data_dir: Path | None) -> RawDataset:
    ev_path, *prop_paths = locate(p, data_dir)
    ev = read_events(ev_path)
    n_read = len(ev)
    codes = [EVENTS.index(e) for e in p.click_events]
    ev = ev[np.isin(ev["event"].to_numpy(), codes)]
    ev = ev.drop_duplicates(["visitorid", "itemid", "timestamp"])
    if p.max_users is not None:
        users = np.unique(ev["visitorid"].to_numpy())
        if users.size > p.max_users:
            keep = np.random.default_rng(p.seed).choice(users, p.max_users, replace=False)
            ev = ev[np.isin(ev["visitorid"].to_numpy(), keep)]
    user, item, ts = (ev[c].to_numpy() for c in ("visitorid", "itemid", "timestamp"))
    active = active_users(user, np.ones(user.size, dtype=bool), p.user_threshold())
    n_removed = int(np.unique(user[~active]).size)
    user, item, ts = user[active], item[active], ts[active]
    if user.size == 0:
        raise DataError(f"retailrocket: {ev_path}: no visitor has {p.user_threshold()} {p.click_events} events "
                        f"(min_user_events)")
    items = np.unique(item)
    icode = np.searchsorted(items, item)

    snap = read_categories(prop_paths)
    snap = snap[np.isin(snap["itemid"].to_numpy(), items)]
    s_items, s_cats = latest_categories(snap)
    row = pd.Index(s_items).get_indexer(items)
    found = row >= 0
    item_cat = np.where(found, s_cats[np.maximum(row, 0)] if s_cats.size else -1, -1).astype(np.int64)
    event_cat = neg_cat = None
    if p.category_at == "event":
        event_cat = categories_at(snap, item, ts)

        def neg_cat(neg: np.ndarray, pos_ts: np.ndarray) -> np.ndarray:
            return categories_at(snap, items[neg].ravel(), np.repeat(pos_ts, neg.shape[1])).reshape(neg.shape)

    cols, lengths, fields, split, info = sequence_instances(
        p, user, icode, ts, items, item_cat, event_cat=event_cat, neg_cat=neg_cat, cat_field="category",
        what=f"retailrocket: {ev_path}")
    cols["timestamp"] = cols["timestamp"] / 1000.0  # ms -> s (float64: exact order)
    cols["hist_ts"] = cols["hist_ts"] / 1000.0
    for k in ("split_point", "valid_point", "test_from_ts"):
        if k in info:
            info[k] = info[k] / 1000.0
    meta = {"source": [str(ev_path), *map(str, prop_paths)], "events_read": n_read, **info,
            "users_removed": n_removed, "items_without_category": int((~found).sum()),
            "categories": int(np.unique(item_cat[item_cat >= 0]).size), "time_unit": "s",
            "protocol": (f"RetailRocket {'+'.join(p.click_events)} as clicks; {p.protocol} protocol (visitors with "
                         f"< {p.user_threshold()} clicks removed); DIN-style negatives")}
    return RawDataset(Schema(tuple(fields), label="label", description="RetailRocket e-commerce events"), cols,
                      lengths, split, meta=meta)


def download(dest: Path) -> Path:
    """Kaggle needs a login: print the ``kaggle`` command (nothing is downloaded) unless the files are
    already in ``dest/retailrocket``."""
    folder = Path(dest) / "retailrocket"
    try:
        return locate(RetailRocketParams(path=str(folder)), None)[0].parent
    except DataError:
        pass
    print(_instructions(folder))
    raise DataError(f"retailrocket: nothing downloaded (Kaggle login required); fetch the files into {folder} "
                    f"with the command above")


RECIPE = Recipe("retailrocket", ("RetailRocket views + add-to-carts as click sequences, DemiNet protocol, "
                                 "DIN-style negatives"), RetailRocketParams, build, sources, download=download)
