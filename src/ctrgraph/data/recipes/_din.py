"""The DIN-style review-sequence protocols Res-embedding uses on Amazon (shared by ``amazon-electronics``
and ``amazon-books``).

Reviews of a user are ordered by (time, tie-breaker); the history of a review is the ``max_len``
reviews before it (``hist_item_id``, ``hist_category``, raw ``hist_ts``). Each positive gets
``negatives`` (DIN: 1) items drawn uniformly from all reviewed items that the user never reviewed,
with their category, sharing the positive's user, time and history (rows: positive, its negatives).

- ``din`` (DIN's ``build_dataset.py``, the protocol of the DIN/DIEN Amazon files): every review
  after the user's first is a positive; the user's last review is test, all earlier ones train.
  ``din_valid=True`` (ours: DIN has no validation set) moves the second-last review to valid.
- ``res`` (Res-embedding's sentence "for each user, there is a pair sharing the same historical
  behaviour (b_1..b_n) with one positive (b_{n+1}) and one negative ... divided by users"): one
  positive per user, the last review, history = all reviews before it; users are split at random
  (``valid_users``, ``test_users``; the paper gives no fractions).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel
from pydantic import Field as PField

from ...errors import DataError
from ..raw import TEST, TRAIN, VALID
from ..schema import Field, Kind, Role
from ..sequences import gather, history_index, sort_events
from .custom import interleave, sample_valid_negatives

DinProtocol = Literal["din", "res"]


class DinOptions(BaseModel):
    """Options of the ``din`` / ``res`` protocols (mixed into the Amazon recipes' parameters)."""

    din_valid: bool = PField(True, description="din: the second-last review of each user is validation "
                                               "(False: train, as DIN)")
    valid_users: float = PField(0.1, ge=0, lt=1, description="res: fraction of users in validation")
    test_users: float = PField(0.2, gt=0, lt=1, description="res: fraction of users in test")


def din_instances(protocol: str, user: np.ndarray, icode: np.ndarray, ts: np.ndarray, items: np.ndarray,
                  item_cat: np.ndarray, *, max_len: int, negatives: int, seed: int, opts: DinOptions,
                  cat_field: str = "category", what: str = "data") -> tuple[dict, dict, list[Field], np.ndarray, dict]:
    """Instances of protocol ``din`` or ``res`` (see module doc); events in any order, ties by item code.

    Returns (columns, lengths, fields, split, meta) of a RawDataset."""
    order = sort_events(user, ts, icode)
    su, si, st = np.asarray(user)[order], np.asarray(icode)[order], np.asarray(ts)[order]
    new = np.r_[True, su[1:] != su[:-1]]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, su.size])
    n = np.repeat(counts, counts)
    rank = np.arange(su.size) - np.repeat(starts, counts)
    ucode = np.cumsum(new) - 1
    if protocol == "din":
        pos = np.flatnonzero(rank >= 1)
        split = np.where(rank[pos] == n[pos] - 1, TEST, TRAIN).astype(np.int8)
        if opts.din_valid:
            split[(rank[pos] == n[pos] - 2) & (n[pos] >= 3)] = VALID
    else:
        pos = np.flatnonzero((rank == n - 1) & (n >= 2))
        perm = np.random.default_rng(seed).permutation(starts.size)
        n_test, n_val = round(opts.test_users * starts.size), round(opts.valid_users * starts.size)
        user_split = np.full(starts.size, TRAIN, dtype=np.int8)
        user_split[perm[:n_test]] = TEST
        user_split[perm[n_test:n_test + n_val]] = VALID
        split = user_split[ucode[pos]]
    if pos.size == 0:
        raise DataError(f"{what}: no user has 2 reviews")
    idx, lens = history_index(su, np.ones(su.size, dtype=bool), max_len)
    rng = np.random.default_rng(seed)
    neg, ok = sample_valid_negatives(rng, ucode[pos], items.size, negatives, ucode, si)
    rep, which, label = interleave(pos.size, negatives, ok)
    cand = np.concatenate([si[pos][:, None], neg], axis=1)[rep, which]
    src = pos[rep]
    hidx, hl = idx[src], lens[src]
    cols = {"user_id": su[src], "item_id": items[cand], cat_field: item_cat[cand],
            "hist_item_id": gather(items[si], hidx, hl), "hist_category": gather(item_cat[si], hidx, hl),
            "hist_ts": gather(st, hidx, hl), "timestamp": st[src], "label": label}
    lengths = {"hist_item_id": hl, "hist_category": hl, "hist_ts": hl}
    L = max_len
    fields = [
        Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field(cat_field, Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_category", Kind.SEQUENCE, Role.BEHAVIOR, vocab=cat_field, max_len=L, target=cat_field,
              group="hist_item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
        Field("label", Kind.NUMERIC, Role.LABEL),
    ]
    sp = split[rep]
    meta = {"events_used": int(su.size), "positives": int(pos.size), "instances": int(rep.size),
            "users": int(starts.size), "items": int(items.size), "negatives_dropped": int((~ok).sum()),
            "per_split": {k: int((sp == v).sum()) for k, v in (("train", TRAIN), ("valid", VALID), ("test", TEST))}}
    return cols, lengths, fields, sp, meta
