"""DG-ENN's evaluation protocol on a behaviour log (paper §5.1.2; shared by ``tmall`` and ``alimama``).

For each user with T >= 3 behaviours sorted by time (ties: the given tie-breaker, e.g. the file
order): behaviour T-2 is the train target with history [1..T-3], T-1 the validation target with
history [1..T-2], T the test target with history [1..T-1] (at most ``max_len``, most recent
last). For every target, ``negatives`` items the user never interacted with, drawn uniformly from
the item table, "replace the target item": they keep the target's user and context fields and
history and take their own item attributes. So each split has (1 + negatives) rows per user (the
paper's Table 1: #Instances = #Users x 11). Draws that still hit one of the user's items after the
redraw rounds are dropped (``meta["negatives_dropped"]``), never emitted as false negatives.
"""
from __future__ import annotations

import numpy as np

from ...errors import DataError
from ..sequences import gather, history_index, sort_events
from .custom import interleave, sample_valid_negatives


def leave_three_out(user: np.ndarray, item: np.ndarray, n_items: int, *order_keys: np.ndarray,
                    user_cols: dict[str, np.ndarray], item_cols: dict[str, np.ndarray],
                    context_cols: dict[str, np.ndarray], hist_cols: dict[str, np.ndarray],
                    negatives: int = 10, max_len: int = 50, seed: int = 0, what: str = "data"
                    ) -> tuple[dict, dict, np.ndarray, dict]:
    """Targets T-2 / T-1 / T per user plus sampled negatives (see module doc).

    Args:
        user: [E] user keys of the behaviours; item: [E] item codes in ``[0, n_items)``.
        order_keys: [E] sort keys after the user (time, then tie-breakers).
        user_cols, context_cols: name -> [E] values, copied from the target behaviour to its rows.
        item_cols: name -> [n_items] attribute tables; the candidate's (target or negative) row.
        hist_cols: name -> [E] values gathered over the history (``hist_<name>`` is the caller's).

    Returns (columns, lengths, split, meta); ``columns["item"]`` holds the candidate item codes.
    """
    order = sort_events(user, *order_keys)
    su = np.asarray(user)[order]
    new = np.r_[True, su[1:] != su[:-1]]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, su.size])
    rank_from_end = np.repeat(starts + counts, counts) - np.arange(su.size)  # 1 = the last behaviour
    tgt = np.flatnonzero(np.repeat(counts >= 3, counts) & (rank_from_end <= 3))
    if tgt.size == 0:
        raise DataError(f"{what}: no user has 3 behaviours (DG-ENN's targets T-2, T-1, T)")
    split = (3 - rank_from_end[tgt]).astype(np.int8)  # T-2 -> train, T-1 -> valid, T -> test
    idx, lens = history_index(su, np.ones(su.size, dtype=bool), max_len)
    idx, lens = idx[tgt], lens[tgt]

    ucode = np.cumsum(new) - 1
    sitem = np.asarray(item)[order]
    rng = np.random.default_rng(seed)
    neg, ok = sample_valid_negatives(rng, ucode[tgt], n_items, negatives, ucode, sitem)
    src, which, label = interleave(tgt.size, negatives, ok)
    cand = np.concatenate([sitem[tgt][:, None], neg], axis=1)[src, which]

    rows = order[tgt][src]  # event of each output row's target
    cols = {name: np.asarray(v)[rows] for name, v in {**user_cols, **context_cols}.items()}
    cols.update({name: np.asarray(t)[cand] for name, t in item_cols.items()})
    cols["item"] = cand
    hidx, hl = idx[src], lens[src]
    lengths = {}
    for name, v in hist_cols.items():
        cols[name] = gather(np.asarray(v)[order], hidx, hl)
        lengths[name] = hl
    cols["label"] = label
    sp = split[src]
    meta = {"protocol": "DG-ENN: per user targets T-2 / T-1 / T, "
                        f"{negatives} sampled non-interacted items each",
            "users": int(np.unique(ucode[tgt]).size), "users_dropped_lt3": int((counts < 3).sum()),
            "instances": int(sp.size), "negatives_dropped": int((~ok).sum()),
            "per_split": {k: int((sp == v).sum()) for k, v in (("train", 0), ("valid", 1), ("test", 2))}}
    return cols, lengths, sp, meta
