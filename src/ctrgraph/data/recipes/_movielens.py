"""The ml100k-ctr protocol (../benchmarks/ml-100k-ctr.md), shared by the MovieLens recipes.

Instances: ratings with label 1 if rating >= ``pos_min``, 0 if rating <= ``neg_max``, the rest
dropped. Features: user and item attributes joined by id, hour and weekday of the UTC timestamp,
``hist_item_id`` = the items the user rated >= ``pos_min`` strictly before the instance in
(timestamp, item_id) order (at most ``max_len``, most recent last), ``hist_genre`` = the first
genre of each of them, ``hist_ts`` = their timestamps (raw, for time-aware models such as BST).
Split: per user chronological, last 10% test, 10% before it valid (see ``split.per_user_chronological``).
"""
from __future__ import annotations

import numpy as np

from ...errors import DataError
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ..sequences import gather, history_index, sort_events
from ..split import per_user_chronological


def _lookup(keys_table: np.ndarray, keys: np.ndarray, what: str, source: str) -> np.ndarray:
    """Row of each key in an attribute table; unknown keys are an error naming the first one."""
    order = np.argsort(keys_table, kind="stable")
    sk = keys_table[order]
    pos = np.searchsorted(sk, keys)
    pos_c = np.minimum(pos, sk.size - 1)
    bad = sk[pos_c] != keys
    if bad.any():
        raise DataError(f"{source}: {what} {keys[np.flatnonzero(bad)[0]]!r} has no row in the {what} table")
    return order[pos_c]


def build_ctr_instances(
    user: np.ndarray, item: np.ndarray, rating: np.ndarray, ts: np.ndarray, *,
    user_table: dict[str, np.ndarray] | None, user_key: np.ndarray | None,
    item_key: np.ndarray, item_year: np.ndarray, genre_matrix: np.ndarray, genre_len: np.ndarray,
    pos_min: float, neg_max: float, max_len: int = 50, source: str = "movielens",
    valid: float = 0.1, test: float = 0.1,
) -> RawDataset:
    """Apply the protocol to rating arrays plus user/item attribute tables (see module doc)."""
    keep = (rating >= pos_min) | (rating <= neg_max)
    user, item, rating, ts = user[keep], item[keep], rating[keep], ts[keep]
    order = sort_events(user, ts, item)
    user, item, rating, ts = user[order], item[order], rating[order], ts[order]
    label = (rating >= pos_min).astype(np.int8)
    n = user.size

    irow = _lookup(item_key, item, "item", source)
    idx, lens = history_index(user, label.astype(bool), max_len)
    hist_item = gather(item, idx, lens)
    hist_ts = gather(ts, idx, lens)
    first_genre = genre_matrix[:, 0]
    hist_genre = gather(first_genre[irow], idx, lens, fill=first_genre[0])
    G = genre_matrix.shape[1]

    cols: dict[str, np.ndarray] = {"user_id": user, "item_id": item}
    fields = [Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM)]
    if user_table:
        urow = _lookup(user_key, user, "user", source)
        for name, col in user_table.items():
            cols[name] = col[urow]
            fields.append(Field(name, Kind.CATEGORICAL, Role.USER_ATTR))
    cols["release_year"] = item_year[irow]
    cols["genres"] = genre_matrix[irow]
    lengths = {"genres": genre_len[irow]}
    fields += [Field("release_year", Kind.CATEGORICAL, Role.ITEM_ATTR),
               Field("genres", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=G)]
    cols["hour"] = (ts // 3600) % 24
    cols["weekday"] = (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    fields += [Field("hour", Kind.CATEGORICAL, Role.CONTEXT), Field("weekday", Kind.CATEGORICAL, Role.CONTEXT)]
    cols["hist_item_id"], cols["hist_genre"], cols["hist_ts"] = hist_item, hist_genre, hist_ts
    for k in ("hist_item_id", "hist_genre", "hist_ts"):
        lengths[k] = lens
    fields += [
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
        Field("hist_genre", Kind.SEQUENCE, Role.BEHAVIOR, vocab="genres", max_len=max_len, target="genres",
              group="hist_item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=max_len, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
        Field("label", Kind.NUMERIC, Role.LABEL),
    ]
    cols["timestamp"] = ts
    cols["label"] = label
    split = per_user_chronological(user, ts, item, valid=valid, test=test)
    schema = Schema(tuple(fields), label="label")
    return RawDataset(schema, cols, lengths, split, meta={"instances": n, "positives": int(label.sum())})


from ..io import split_joined as split_lists  # noqa: E402,F401  (re-exported)
