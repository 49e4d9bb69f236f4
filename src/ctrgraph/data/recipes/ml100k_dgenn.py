"""``ml100k-dgenn``: MovieLens 100K under DG-ENN's own protocol (paper §5.1.2, research notes §2.3, §7).

Derived from the ``ml100k`` recipe's instances (same fields, same "click" = rating >= 4, same
histories = the user's earlier clicks in (timestamp, item_id) order, at most ``max_len``):

- per user with T >= 3 clicks: click T-2 is the train target (history [1..T-3]), click T-1 the
  validation target (history [1..T-2]), click T the test target (history [1..T-1]);
- for each target, ``negatives`` (10) items the user never clicked, drawn uniformly among the items
  of the log (seeded by ``seed``), replace the target item as negatives: they keep the target's
  user fields, context (hour, weekday, timestamp) and history, and take their own item attributes.

So every split has (1 + negatives) rows per user, as in the paper's Table 1 (#Instances = #Users x 11).
Choices the paper leaves open (ours): "non-clicked" = never rated >= 4 by the user (items rated
<= 3 may be negatives); negatives are drawn among items that occur in the ratings (they need
attributes), independently (a target may get the same negative twice); users with fewer than 3 clicks are dropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field as PField

from ...errors import DataError
from ..negatives import sample_negatives
from ..raw import TEST, TRAIN, VALID, RawDataset
from .base import Recipe
from .ml100k import ML100KParams, build as build_ml100k, download, sources as ml100k_sources

class ML100KDGParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = PField(50, ge=1, description="history length cap")
    negatives: int = PField(10, ge=1, description="sampled non-clicked items per target")
    seed: int = PField(0, description="negative sampling seed")


def sources(p: ML100KDGParams, data_dir: Path | None) -> list[Path]:
    return ml100k_sources(ML100KParams(max_len=p.max_len), data_dir)


def paper_protocol(raw: RawDataset, negatives: int = 10, seed: int = 0) -> RawDataset:
    """Targets T-2 / T-1 / T per user plus ``negatives`` sampled non-clicked items each (see module doc).

    Works on any raw data set with user / item roles, a ``timestamp`` column and a 0/1 label: the
    item and item-attribute fields of a negative are those of the sampled item."""
    from ..schema import Role

    c = raw.columns
    s = raw.schema
    uname, iname = s.first(Role.USER).name, s.first(Role.ITEM).name
    item_fields = [f.name for f in s.by_role(Role.ITEM, Role.ITEM_ATTR)]
    user, item, label = np.asarray(c[uname]), np.asarray(c[iname]), np.asarray(c[s.label])
    order = np.lexsort((item, c["timestamp"], user))
    pos = order[label[order] > 0]  # clicks, sorted by (user, time, item)
    pu = user[pos]
    starts = np.flatnonzero(np.r_[True, pu[1:] != pu[:-1]])
    counts = np.diff(np.r_[starts, pu.size])
    rank_from_end = np.repeat(starts + counts, counts) - np.arange(pu.size)  # 1 = last click
    ok = np.repeat(counts >= 3, counts) & (rank_from_end <= 3)
    rows = pos[ok]
    split = (3 - rank_from_end[ok]).astype(np.int8)  # T-2 -> 0 (train), T-1 -> 1, T -> 2
    if rows.size == 0:
        raise DataError("ml100k-dgenn: no user has 3 clicks")
    # item attribute table: each item's attributes from its first row
    codes, first = np.unique(item, return_index=True)
    rng = np.random.default_rng(seed)
    pu_codes = np.searchsorted(codes, item[pos])
    _, user_codes = np.unique(user, return_inverse=True)
    neg = sample_negatives(rng, user_codes[rows], codes.size, negatives, user_codes[pos], pu_codes)
    n, k = rows.size, negatives
    src = np.concatenate([rows, np.repeat(rows, k)])  # every column from the target row ...
    cols = {name: np.asarray(col)[src] for name, col in c.items()}
    irow = first[neg.ravel()]  # ... except the item fields of the negatives
    lengths = {name: np.asarray(v)[src] for name, v in raw.lengths.items()}
    for f in item_fields:
        cols[f][n:] = np.asarray(c[f])[irow]
        if f in lengths:
            lengths[f][n:] = np.asarray(raw.lengths[f])[irow]
    cols[s.label] = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(n * k, dtype=np.int8)])
    sp = np.concatenate([split, np.repeat(split, k)])
    meta = dict(raw.meta, protocol="dg-enn leave-3-out with sampled negatives", negatives=negatives, seed=seed,
                users=int(np.unique(user[rows]).size), instances=int(sp.size),
                per_split={name: int((sp == v).sum()) for name, v in (("train", TRAIN), ("valid", VALID), ("test", TEST))})
    return RawDataset(raw.schema, cols, lengths, sp, meta=meta)


def build(p: ML100KDGParams, data_dir: Path | None) -> RawDataset:
    raw = build_ml100k(ML100KParams(max_len=p.max_len), data_dir)
    return paper_protocol(raw, p.negatives, p.seed)


RECIPE = Recipe("ml100k-dgenn", "MovieLens 100K, DG-ENN protocol: targets T-2/T-1/T per user + 10 sampled negatives each", ML100KDGParams, build, sources, download=download)
