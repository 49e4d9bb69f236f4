"""``taobao``: Taobao UserBehavior (Tianchi data set 649) as click-through instances.

Input: ``UserBehavior.csv`` (no header: ``user_id,item_id,category_id,behavior_type,timestamp``;
``behavior_type`` in pv / buy / cart / fav, ``pv`` = a click on the item page). The file is only
distributed by Tianchi after login (https://tianchi.aliyun.com/dataset/649), so there is no
downloader: give its path (``path`` parameter or ``--data-dir``, a file or a folder holding
``UserBehavior*.csv[.gz]``).

Protocol (DIN/DIEN convention; EGIN and DemiNet leave the negatives unstated):

- exact duplicate rows are dropped; ``window`` optionally keeps events inside [start, end)
  (unix seconds; the official window is 2017-11-25..2017-12-03 China time, 35 of the sample's
  rows fall outside it); ``max_users`` optionally keeps a random subset of users (the full file
  has 100M rows: the [N, max_len] history arrays then need tens of GiB).
- each item has ONE category: its most frequent ``category_id`` in the file (ties: the
  smallest). It is used for the target, the history and the negatives alike.
- clicks (``click_behaviors``, default ``pv``) of a user are ordered by (timestamp, item_id).
  Every click after the user's first ``min_history`` clicks is a positive instance; its history
  is the ``max_len`` most recent clicks strictly before it in that order (``hist_item_id``, with
  the parallel ``hist_category`` and raw ``hist_ts``). With ``history_btag`` the history holds
  all behaviour types (order (timestamp, item_id, pv < fav < cart < buy)) plus a parallel
  ``hist_btag`` sequence of behaviour codes 0 pv, 1 fav, 2 cart, 3 buy (``meta["btag_codes"]``);
  instances are still the clicks, ``min_history`` then counts history events.
- ``negatives`` negatives per positive: a random item of the file (uniform, or by click count with
  ``negative_dist="popularity"``) that the user never clicked, with its category, sharing the
  positive's user, timestamp and history. Rows are interleaved: positive, its negatives, ...
  The draws (``negative_sampler="keyed"``, the default) are a hash of (``seed``, user id, the
  positive's index among the user's positives, draw, redraw round)
  (:func:`~ctrgraph.data.negatives.keyed_negatives`): the same whether the file is encoded at once
  or streamed in parts. ``negative_sampler="global"`` is the sampler of the earlier versions (one
  random stream over all positives, same distribution, other draws), in memory only.
  A draw that still hits a clicked item after the redraw rounds (a user who clicked nearly
  every item) is dropped, never emitted as a false negative (``meta["negatives_dropped"]``).
- memory: in memory, the output holds three [instances, max_len] arrays (ids as int32 when they
  fit), about 2.4 GiB per million events at max_len 50 (11.8 GiB measured at 5M). ``stream=true``
  (automatic above 64 MiB of CSV) encodes out of core into memory-mapped columns, part by part
  (``chunk_rows`` events of whole users): peak memory 1.5-1.8 GiB measured from 1M to 10M events,
  plus O(items + users); the result
  equals the in-memory encoding (see "out of core" below and docs/data.md).
- split: global time split on the instance timestamp (``time_quantile_split`` over the
  positives' timestamps: test >= the ``test_quantile`` quantile, valid in
  [``valid_quantile``, ``test_quantile``)); negatives follow their positive.
- ``protocol="deminet"`` (DemiNet, AAAI 2022, "Settings"): users with fewer than 5 clicks are
  removed first (``min_user_events`` overrides the 5; it also works with the default protocol);
  the split point is the ``test_quantile`` (0.8) quantile of the timestamps of ALL remaining
  clicks (the data set's interactions, not only the instances): instances at or before it are
  train, after it test. Validation (the paper has none): the instances in (the
  ``valid_quantile`` (0.7) quantile of the click times, the split point], i.e. the last 10 % of
  the interactions before the split point; ``valid_quantile=None``: no validation split.
- ``history_ties="exclude"``: histories hold only events with a strictly smaller timestamp (the
  default ``order`` also holds same-second events earlier in (timestamp, item_id) order).

The shared machinery (:class:`SequenceParams`, :func:`sequence_instances`,
:func:`split_instances`, :func:`active_users`) also serves ``amazon-books`` and ``retailrocket``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field as PField, model_validator

from ...errors import ConfigError, DataError
from ..io import numeric_column, read_table
from ..negatives import keyed_negatives
from ..raw import TEST, TRAIN, VALID, RawDataset
from ..schema import Field, Kind, Role, Schema
from ..sequences import gather, history_index, rank_in_group, sort_events
from .base import Recipe
from .custom import interleave, sample_valid_negatives

COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
BEHAVIORS = ["pv", "fav", "cart", "buy"]  # also the tie order of same-second events
TIANCHI = "https://tianchi.aliyun.com/dataset/649"
DEMINET_MIN_USER_EVENTS = 5  # DemiNet (AAAI 2022): "we filter out users with less than 5 interactions"


class SequenceParams(BaseModel):
    """Parameters shared by the click-sequence recipes (``taobao``, ``amazon-books``, ``retailrocket``)."""

    model_config = ConfigDict(extra="forbid")
    max_len: int = PField(50, ge=1, description="history length cap (most recent kept)")
    min_history: int = PField(1, ge=0, description="clicks a user needs before a click becomes an instance")
    negatives: int = PField(1, ge=0, description="sampled negatives per positive")
    negative_dist: Literal["uniform", "popularity"] = "uniform"
    seed: int = PField(0, description="negative-sampling seed")
    protocol: Literal["default", "deminet"] = PField(
        "default", description="default: split quantiles over the instances' times, test >= the point; deminet: "
                               "users with < 5 clicks removed, split point = quantile of all click times, "
                               "train <= point < test")
    min_user_events: int | None = PField(None, ge=0, description="remove users with fewer clicks (None: 5 with "
                                                                 "protocol deminet, else 0)")
    history_ties: Literal["order", "exclude"] = PField(
        "order", description="order: a history holds the events before the instance in (time, item) order; "
                             "exclude: only events with a strictly smaller timestamp")
    test_quantile: float = PField(0.8, gt=0, lt=1)
    valid_quantile: float | None = PField(0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _check_split(self) -> "SequenceParams":
        if self.valid_quantile is not None and self.valid_quantile >= self.test_quantile:
            raise ValueError("valid_quantile must be smaller than test_quantile")
        return self

    def user_threshold(self) -> int:
        """Clicks a user needs to be kept (``min_user_events``, or the protocol's default)."""
        if self.min_user_events is not None:
            return self.min_user_events
        return DEMINET_MIN_USER_EVENTS if self.protocol == "deminet" else 0


class TaobaoParams(SequenceParams):
    path: str | None = PField(None, description="UserBehavior*.csv[.gz] file or a folder holding one")
    click_behaviors: list[str] = PField(["pv"], min_length=1, description="behaviour types that count as clicks")
    history_btag: bool = PField(False, description="histories of all behaviour types plus a hist_btag sequence")
    window: tuple[int, int] | None = PField(None, description="keep events with start <= timestamp < end")
    max_users: int | None = PField(None, ge=1, description="keep a random subset of this many users (seed)")
    negative_sampler: Literal["keyed", "global"] = PField(
        "keyed", description="keyed: each draw a hash of (seed, user, the positive's index among the user's "
                             "positives, draw, redraw round), the same in memory and streamed; global: one random "
                             "stream over all positives (the sampler before the streamed path; in memory only)")
    stream: bool | None = PField(None, description="encode out of core, the file read in chunks (None: when the "
                                                   "file is over 64 MiB, 16 MiB gzipped)")
    chunk_rows: int = PField(250_000, ge=1, description="streamed path: events per part (whole users)")

    @model_validator(mode="after")
    def _check(self) -> "TaobaoParams":
        bad = [b for b in self.click_behaviors if b not in BEHAVIORS]
        if bad:
            raise ValueError(f"click_behaviors: unknown behaviour(s) {bad}; known: {BEHAVIORS}")
        return self


def _candidates(p: TaobaoParams, data_dir: Path | None) -> list[Path]:
    if p.path:
        path = Path(p.path).expanduser()
        if data_dir is not None and not path.is_absolute() and (data_dir / path).exists():
            return [data_dir / path]
        return [path]
    if data_dir is not None:
        return [data_dir]
    out = []
    if os.environ.get("CTRGRAPH_DATA"):
        out.append(Path(os.environ["CTRGRAPH_DATA"]) / "taobao")
    out.append(Path.home() / ".cache" / "ctrgraph" / "raw" / "taobao")
    return out


def locate(p: TaobaoParams, data_dir: Path | None) -> Path:
    """The UserBehavior file (see module doc)."""
    cands = _candidates(p, data_dir)
    for c in cands:
        if c.is_file():
            return c
        if c.is_dir():
            found = sorted(set(c.glob("UserBehavior*.csv")) | set(c.glob("UserBehavior*.csv.gz")))
            exact = [f for f in found if f.name in ("UserBehavior.csv", "UserBehavior.csv.gz")]
            if exact:
                return exact[0]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise DataError(f"taobao: several UserBehavior files in {c}: {[f.name for f in found]}; "
                                f"choose one with --set data.params.path=FILE")
    raise DataError(f"taobao: no UserBehavior*.csv[.gz] at {', '.join(map(str, cands))}. The data set is "
                    f"distributed by Tianchi after login ({TIANCHI}); download UserBehavior.csv there and pass "
                    f"--data-dir FOLDER or --set data.params.path=FILE")


def sources(p: TaobaoParams, data_dir: Path | None) -> list[Path]:
    return [locate(p, data_dir)]


def read_events(path: Path) -> pd.DataFrame:
    """The five columns, ids and timestamps checked (errors name the row and column)."""
    df = read_table(path, "taobao", header=None, names=COLUMNS, dtype={"behavior_type": str})
    out = pd.DataFrame({c: numeric_column(df, c, path) for c in ("user_id", "item_id", "category_id", "timestamp")})
    out["btag"] = behavior_codes(df, path)
    return out


def behavior_codes(df: pd.DataFrame, path: Path, first_row: int = 0) -> np.ndarray:
    """``behavior_type`` as int8 codes of :data:`BEHAVIORS`; an unknown value is a DataError naming the
    row (``first_row``: the file row of ``df``'s first row, for chunks)."""
    b = df["behavior_type"].astype(str).str.strip()
    code = pd.Index(BEHAVIORS).get_indexer(b)
    if (code < 0).any():
        r = int(np.flatnonzero(code < 0)[0])
        raise DataError(f"{path}: column 'behavior_type', row {first_row + r + 1}: {df['behavior_type'].iloc[r]!r}"
                        f" is not one of {BEHAVIORS}")
    return code.astype(np.int8)


def _compact(a: np.ndarray) -> np.ndarray:
    """int32 when the values fit (halves the [N, max_len] history arrays); other dtypes unchanged."""
    if a.dtype == np.int32:
        return a
    if a.dtype.kind in "iu" and a.size and a.min() >= np.iinfo(np.int32).min and a.max() <= np.iinfo(np.int32).max:
        return a.astype(np.int32)
    return a


def pair_counts(item: np.ndarray, cat: np.ndarray, weights: tuple[np.ndarray, ...] = ()
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Distinct (item, category) pairs sorted by (item, category), and per pair the sum of each array
    in ``weights`` (counts: pass ones)."""
    order = np.lexsort((cat, item))
    si, sc = item[order], cat[order]
    new = np.ones(si.size, dtype=bool)
    new[1:] = (si[1:] != si[:-1]) | (sc[1:] != sc[:-1])
    starts = np.flatnonzero(new)
    sums = [np.add.reduceat(np.asarray(w)[order], starts) if starts.size else np.zeros(0, np.int64) for w in weights]
    return si[starts], sc[starts], sums


def best_category(pi: np.ndarray, pc: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From distinct (item, category) pairs with their counts: (sorted unique items, the most frequent
    category of each; ties -> smallest category)."""
    best = np.lexsort((pc, -cnt, pi))  # per item: most frequent first, then the smallest category
    pi, pc = pi[best], pc[best]
    first = np.ones(pi.size, dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    return pi[first], pc[first]


def item_categories(item: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique items, the most frequent category of each; ties -> smallest category)."""
    pi, pc, (cnt,) = pair_counts(item, cat, (np.ones(item.size, dtype=np.int64),))
    return best_category(pi, pc, cnt)


def active_users(user: np.ndarray, is_click: np.ndarray, threshold: int) -> np.ndarray:
    """Mask of the events whose user has at least ``threshold`` clicks (all True for 0 or 1)."""
    if threshold <= 1:
        return np.ones(user.size, dtype=bool)
    _, inv = np.unique(user, return_inverse=True)
    clicks = np.bincount(inv.reshape(-1), weights=is_click, minlength=int(inv.max()) + 1 if inv.size else 0)
    return clicks[inv.reshape(-1)] >= threshold


def run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """For rows sorted by ``sorted_keys``, the index of the first row of each row's run of equal keys."""
    n = sorted_keys[0].shape[0]
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for k in sorted_keys:
        new[1:] |= k[1:] != k[:-1]
    first = np.flatnonzero(new)
    return np.repeat(first, np.diff(np.append(first, n)))


def split_points(p: SequenceParams, inst_ts: np.ndarray, click_ts: np.ndarray) -> dict:
    """The time points of :func:`split_instances` (``np.quantile`` of the instances' or the clicks'
    times); the streamed taobao path computes the same points from counts of distinct times."""
    if p.protocol == "default":
        out = {"test_from_ts": float(np.quantile(inst_ts, p.test_quantile))}
        if p.valid_quantile is not None:
            out["valid_from_ts"] = float(np.quantile(inst_ts, p.valid_quantile))
        return out
    out = {"split_point": float(np.quantile(click_ts, p.test_quantile))}
    if p.valid_quantile is not None:
        out["valid_point"] = float(np.quantile(click_ts, p.valid_quantile))
    return out


def apply_split(p: SequenceParams, inst_ts: np.ndarray, points: dict) -> np.ndarray:
    """The split of instances at ``inst_ts`` given :func:`split_points` (rules: :func:`split_instances`)."""
    split = np.full(inst_ts.size, TRAIN, dtype=np.int8)
    if p.protocol == "default":  # as time_quantile_split: test >= point, valid in [valid point, point)
        t_test = points["test_from_ts"]
        split[inst_ts >= t_test] = TEST
        if "valid_from_ts" in points:
            split[(inst_ts >= points["valid_from_ts"]) & (inst_ts < t_test)] = VALID
        return split
    t_test = points["split_point"]
    split[inst_ts > t_test] = TEST
    if "valid_point" in points:
        split[(inst_ts > points["valid_point"]) & (inst_ts <= t_test)] = VALID
    return split


def split_instances(p: SequenceParams, inst_ts: np.ndarray, click_ts: np.ndarray,
                    points: dict | None = None) -> tuple[np.ndarray, dict]:
    """The split of the instances (positives) and its provenance (``points``: precomputed
    :func:`split_points`, e.g. global ones for one part of a streamed data set).

    ``default``: :func:`time_quantile_split` over the instances' times (test >= the
    ``test_quantile`` point, valid in [``valid_quantile``, ``test_quantile``)). ``deminet``: the
    split point is the ``test_quantile`` quantile of ALL click times of the data set (the paper's
    "80% time splitting point"), train <= point < test; valid = the instances in
    (``valid_quantile`` point, split point], so train <= valid point < valid <= split point < test.
    """
    if points is None:
        points = split_points(p, inst_ts, click_ts)
    info = {k: v for k, v in points.items() if k != "valid_from_ts"}
    return apply_split(p, inst_ts, points), info


def sequence_instances(p: SequenceParams, user: np.ndarray, icode: np.ndarray, ts: np.ndarray, items: np.ndarray,
                       item_cat: np.ndarray, *, is_click: np.ndarray | None = None, order_keys: tuple = (),
                       event_cat: np.ndarray | None = None, neg_cat=None, extra_hist: dict | None = None,
                       cat_field: str = "category_id", what: str = "data", sampler: str = "global",
                       neg_probs: np.ndarray | None = None, points: dict | None = None
                       ) -> tuple[dict, dict, list[Field], np.ndarray, dict]:
    """Click instances with DIN-style histories and negatives (shared by the sequence recipes).

    Args:
        user, icode, ts: [E] events (any order): raw user ids, item codes into ``items``, times.
            Every event enters histories; ``is_click`` (default: all) marks those that can become
            instances and that count as the user's clicks (negatives avoid them).
        items, item_cat: sorted unique raw item ids and one category per item.
        order_keys: extra [E] tie-breakers after (time, item) (taobao: the behaviour code).
        event_cat: [E] category of each event's item at that event (default ``item_cat[icode]``).
        neg_cat: ``f(neg_codes [P, k], pos_times [P]) -> [P, k]`` categories of the negatives
            (default ``item_cat[neg_codes]``).
        extra_hist: name -> ([E] values, vocab): further sequences parallel to the history.
        sampler: ``global``: the negatives from one random stream (``seed``) over all positives;
            ``keyed``: :func:`~ctrgraph.data.negatives.keyed_negatives` keyed by (raw user id, the
            positive's index among its user's positives): a user's draws do not depend on the other
            users, so that a data set built in parts of whole users equals the one built at once.
        neg_probs: [items] popularity distribution (default: from the clicks given here).
        points: precomputed :func:`split_points` (default: from the times given here).

    Returns (columns, lengths, fields, split, meta) of a RawDataset.
    """
    n = user.size
    is_click = np.ones(n, dtype=bool) if is_click is None else is_click
    order = sort_events(user, ts, icode, *order_keys)
    user, icode, ts, is_click = user[order], icode[order], ts[order], is_click[order]
    items, item_cat = _compact(items), _compact(item_cat)
    ecat = item_cat[icode] if event_cat is None else _compact(np.asarray(event_cat)[order])
    idx, lens = history_index(user, np.ones(n, dtype=bool), p.max_len)
    rank = rank_in_group(user)
    if p.history_ties == "exclude":  # the history of the first event of each (user, time) run
        g = run_starts(user, ts)
        idx, lens, rank = idx[g], lens[g], rank[g]

    # positives: clicks with enough history
    pos = np.flatnonzero(is_click & (rank >= p.min_history))
    if pos.size == 0:
        raise DataError(f"{what}: no click has {p.min_history} earlier events (min_history)")

    # negatives: items the user never clicked, uniform or by click count
    ucode = pd.factorize(user)[0]
    clicked_u, clicked_i = ucode[is_click], icode[is_click]
    probs = None
    if p.negative_dist == "popularity":
        if neg_probs is not None:
            probs = neg_probs
        else:
            c = np.bincount(clicked_i, minlength=items.size).astype(np.float64)
            probs = c / c.sum()
    if sampler == "keyed":
        neg, ok = keyed_negatives(p.seed, user[pos], rank_in_group(user[pos]), ucode[pos], items.size, p.negatives,
                                  clicked_u, clicked_i, probs=probs)
    else:
        rng = np.random.default_rng(p.seed)
        neg, ok = sample_valid_negatives(rng, ucode[pos], items.size, p.negatives, clicked_u, clicked_i,
                                         probs=probs)
    rep, which, label = interleave(pos.size, p.negatives, ok)
    cand = np.concatenate([icode[pos][:, None], neg], axis=1)[rep, which]
    ncat = item_cat[neg] if neg_cat is None else neg_cat(neg, ts[pos])
    ccat = np.concatenate([ecat[pos][:, None], ncat.astype(ecat.dtype, copy=False)], axis=1)[rep, which]
    del neg, ncat, clicked_u, clicked_i, ucode

    # one [N, max_len] index per output row (negatives share their positive's history)
    src = pos[rep]
    hidx, hl = idx[src], lens[src]
    del idx
    L = p.max_len
    cols = {
        "user_id": user[src], "item_id": items[cand], cat_field: ccat,
        "hist_item_id": gather(items[icode], hidx, hl), "hist_category": gather(ecat, hidx, hl),
        "hist_ts": gather(ts, hidx, hl), "timestamp": ts[src], "label": label,
    }
    lengths = {"hist_item_id": hl, "hist_category": hl, "hist_ts": hl}
    fields = [
        Field("user_id", Kind.CATEGORICAL, Role.USER),
        Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field(cat_field, Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"),
        Field("hist_category", Kind.SEQUENCE, Role.BEHAVIOR, vocab=cat_field, max_len=L, target=cat_field,
              group="hist_item_id"),
    ]
    for name, (values, vocab) in (extra_hist or {}).items():
        cols[name] = gather(np.asarray(values)[order], hidx, hl)
        lengths[name] = hl
        fields.append(Field(name, Kind.SEQUENCE, Role.BEHAVIOR, vocab=vocab, max_len=L, group="hist_item_id"))
    fields += [
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False),
        Field("label", Kind.NUMERIC, Role.LABEL),
    ]
    split, info = split_instances(p, ts[pos], ts[is_click], points)
    meta = {"events_used": int(n), "positives": int(pos.size), "instances": int(rep.size),
            "users": int(np.count_nonzero(user[pos][1:] != user[pos][:-1]) + 1), "items": int(items.size),
            "negatives_dropped": int((~ok).sum()), **info}
    return cols, lengths, fields, split[rep], meta


def chosen_users(users: np.ndarray, p: TaobaoParams) -> np.ndarray | None:
    """``max_users`` of the sorted distinct ``users`` (seeded), or None when all are kept."""
    if p.max_users is None or users.size <= p.max_users:
        return None
    return np.random.default_rng(p.seed).choice(users, p.max_users, replace=False)


def filter_events(ev: pd.DataFrame, p: TaobaoParams, keep: np.ndarray | None
                  ) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Duplicates, window, the kept users, the ``user_threshold``: (events, is_click, users removed).
    Every rule acts on whole users (or single rows), so a part of the file that holds whole users
    gives the rows the whole file would give for them."""
    ev = ev.drop_duplicates()
    if p.window is not None:
        ev = ev[(ev["timestamp"] >= p.window[0]) & (ev["timestamp"] < p.window[1])]
    if keep is not None:
        ev = ev[np.isin(ev["user_id"].to_numpy(), keep)]
    click_codes = [BEHAVIORS.index(b) for b in p.click_behaviors]
    is_click = np.isin(ev["btag"].to_numpy(), click_codes)
    active = active_users(ev["user_id"].to_numpy(), is_click, p.user_threshold())
    n_removed = 0
    if not active.all():
        n_removed = int(np.unique(ev["user_id"].to_numpy()[~active]).size)
        ev, is_click = ev[active], is_click[active]
    return ev, is_click, n_removed


def instance_events(ev: pd.DataFrame, is_click: np.ndarray, p: TaobaoParams) -> tuple[np.ndarray, ...]:
    """(user, item, timestamp, btag, is_click) of the events that enter histories (only the clicks
    unless ``history_btag``)."""
    if not p.history_btag:
        ev = ev[is_click]
        is_click = np.ones(len(ev), dtype=bool)
    return (*(ev[c].to_numpy() for c in ("user_id", "item_id", "timestamp", "btag")), is_click)


def protocol_meta(p: TaobaoParams) -> dict:
    return {"btag_codes": list(BEHAVIORS),
            "protocol": ("taobao clicks, DIN-style negatives, global time split" if p.protocol == "default" else
                         f"DemiNet: users with < {p.user_threshold()} clicks removed, global time split at the "
                         f"{p.test_quantile:g} quantile of the click times; DIN-style negatives")}


def block_instances(p: TaobaoParams, user, item, ts, btag, is_click, items, cats, what: str, **kw):
    """:func:`sequence_instances` with the taobao settings (items coded in the sorted ``items``)."""
    icode = np.searchsorted(items, item)  # every item is in the table
    return sequence_instances(
        p, user, icode, ts, items, cats, is_click=is_click, order_keys=(btag,),
        extra_hist={"hist_btag": (btag, "btag")} if p.history_btag else None, what=what,
        sampler=p.negative_sampler, **kw)


def build(p: TaobaoParams, data_dir: Path | None) -> RawDataset:
    path = locate(p, data_dir)
    ev = read_events(path)
    n_read = len(ev)
    keep = None
    if p.max_users is not None:
        w = ev.drop_duplicates()
        if p.window is not None:
            w = w[(w["timestamp"] >= p.window[0]) & (w["timestamp"] < p.window[1])]
        keep = chosen_users(np.unique(w["user_id"].to_numpy()), p)
        del w
    ev, is_click, n_removed = filter_events(ev, p, keep)
    if not is_click.any():
        raise DataError(f"taobao: {path} has no {p.click_behaviors} events (after the window and user filters)")
    items, cats = item_categories(ev["item_id"].to_numpy(), ev["category_id"].to_numpy())
    user, item, ts, btag, is_click = instance_events(ev, is_click, p)
    del ev
    cols, lengths, fields, split, info = block_instances(p, user, item, ts, btag, is_click, items, cats,
                                                         what=f"taobao: {path}")
    meta = {"source": str(path), "events_read": n_read, **info, **protocol_meta(p)}
    if p.user_threshold() > 1:
        meta["users_removed"] = n_removed
    return RawDataset(Schema(tuple(fields), label="label", description="Taobao UserBehavior"), cols, lengths, split,
                      meta=meta)


# ---------------------------------------------------------------------------------- out of core
# The ``taobao`` recipe out of core: the full UserBehavior file (100M events) with bounded memory.
#
# The protocol (module doc) needs global state before any user's instances: the item -> category
# table (most frequent category over the file), the popularity of the items (``negative_dist:
# popularity``), the item table the negatives are drawn from, and the time quantile(s) of the split. So:
#
# 0. **users** (pyarrow's streaming CSV reader, only ``user_id`` and ``timestamp``): the distinct users
#    with their event counts (and the ``max_users`` draw over the users inside the ``window``, as
#    :func:`build` does).
# 1. **spill**: every row once more, parsed and checked; rows outside the window or of users not drawn
#    are dropped; the rest is appended to one binary file per *part*: parts are ranges of user ids of
#    about ``chunk_rows`` events, so a part holds whole users and the parts in order hold the users in
#    ascending id order, the order of the in-memory path. The input needs no order at all (the
#    official file is grouped by user in string order of the id; the time-slice sample is ordered by
#    time).
# 2. **statistics** (part by part, the same per-user filters as in memory: duplicates, the
#    ``user_threshold``): counts of (item, category) pairs and of clicks per pair, counts of the
#    distinct timestamps of the positives (and of all clicks, protocol ``deminet``); from them the
#    item table, each item's category, the popularity distribution and the exact ``np.quantile``
#    split points (:func:`quantile_from_counts`).
# 3. **instances**: part by part, :func:`block_instances` with those global tables, the global
#    split points and the keyed negative sampler (a draw depends on the user and the positive, not on
#    the other users in the part); :func:`~ctrgraph.data.stream.stream_encode` reads the parts twice
#    (vocabularies, then positioned writes into memory-mapped columns).
#
# The result equals the in-memory encoding (same rows in the same order, vocabularies, negatives).
# Memory: one part of raw events and its instances, plus O(users) (the user counts), O(items) (the
# item table, categories, popularity) and O(distinct timestamps). Disk: the spill, 33 bytes per kept
# event, in a temporary folder (``TMPDIR``) removed when the encoding ends.

REC = np.dtype([("user_id", "<i8"), ("item_id", "<i8"), ("category_id", "<i8"), ("timestamp", "<i8"),
                ("btag", "i1")])
NUMERIC = ["user_id", "item_id", "category_id", "timestamp"]
CSV_BLOCK_BYTES = 32 << 20  # bytes of CSV text per parsed batch


def _find_bad_row(path: Path, reason: str) -> DataError:
    """The first malformed row of ``path`` (pandas, chunk by chunk: only on the error path)."""
    start = 0
    try:
        for df in pd.read_csv(path, header=None, dtype=str, chunksize=1_000_000, keep_default_na=False,
                              na_values=[""]):
            if df.shape[1] != len(COLUMNS):
                return DataError(f"{path}: rows {start + 1}..{start + len(df)} have {df.shape[1]} columns, expected "
                                 f"{len(COLUMNS)} ({','.join(COLUMNS)})")
            df.columns = COLUMNS
            for c in NUMERIC:
                miss = df[c].isna().to_numpy()
                if miss.any():
                    return DataError(f"{path}: column {c!r}, row {start + int(np.flatnonzero(miss)[0]) + 1}: "
                                     f"missing value")
                numeric_column(df, c, path, first_row=start)
            try:
                behavior_codes(df, path, first_row=start)
            except DataError as e:
                return e
            start += len(df)
    except pd.errors.ParserError as e:
        return DataError(f"{path}: malformed CSV ({str(e).strip()}); expected {len(COLUMNS)} columns "
                         f"{','.join(COLUMNS)}")
    except DataError as e:
        return e
    return DataError(f"{path}: {reason}")


def csv_batches(path: Path, columns: list[str] | None = None, block_bytes: int | None = None):
    """(first row number, {column: numpy array}) per parsed block of the headerless file; ``btag``
    (behaviour code) instead of ``behavior_type``. Errors name the file and the row."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    cols = columns or COLUMNS
    types = {c: pa.int64() for c in NUMERIC} | {"behavior_type": pa.string()}
    ropt = pcsv.ReadOptions(column_names=COLUMNS, block_size=block_bytes or CSV_BLOCK_BYTES)
    copt = pcsv.ConvertOptions(column_types={c: types[c] for c in cols}, include_columns=cols)
    first, k = 0, 0
    try:
        reader = pcsv.open_csv(str(path), read_options=ropt, convert_options=copt)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            out = {}
            for c in cols:
                a = batch.column(c)
                if a.null_count:
                    raise _find_bad_row(path, f"chunk {k} (rows from {first + 1}): missing value in column {c!r}")
                if c == "behavior_type":
                    d = pc.dictionary_encode(a)
                    lut = pd.Index(BEHAVIORS).get_indexer(
                        pd.Series(d.dictionary.to_numpy(zero_copy_only=False)).astype(str).str.strip())
                    code = lut[d.indices.to_numpy()]
                    if (code < 0).any():
                        r = int(np.flatnonzero(code < 0)[0])
                        raise DataError(f"{path}: column 'behavior_type', row {first + r + 1}: "
                                        f"{a[r].as_py()!r} is not one of {BEHAVIORS}")
                    out["btag"] = code.astype(np.int8)
                else:
                    out[c] = a.to_numpy()
            yield first, out
            first += batch.num_rows
            k += 1
    except pa.ArrowInvalid as e:
        raise _find_bad_row(path, f"chunk {k} (rows from {first + 1}): {str(e).strip()}") from None


class _Sums:
    """Sums of weights per distinct key tuple, merged lazily (buffered parts reduced when they outgrow
    the reduced table), so that adding many small parts costs O(total log total)."""

    def __init__(self, n_keys: int, n_weights: int):
        self.keys = [np.zeros(0, np.int64) for _ in range(n_keys)]
        self.w = [np.zeros(0, np.int64) for _ in range(n_weights)]
        self.buf: list[tuple[list, list]] = []
        self.buffered = 0

    def add(self, keys: list[np.ndarray], weights: list[np.ndarray]) -> None:
        self.buf.append(([np.asarray(k, np.int64) for k in keys], [np.asarray(w, np.int64) for w in weights]))
        self.buffered += keys[0].size
        if self.buffered > max(4_000_000, 2 * self.keys[0].size):
            self.reduce()

    def reduce(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.buf:
            keys = [np.concatenate([k] + [b[0][j] for b in self.buf]) for j, k in enumerate(self.keys)]
            w = [np.concatenate([x] + [b[1][j] for b in self.buf]) for j, x in enumerate(self.w)]
            self.buf, self.buffered = [], 0
            order = np.lexsort(tuple(reversed(keys)))
            keys = [k[order] for k in keys]
            new = np.ones(order.size, dtype=bool)
            new[1:] = False
            for k in keys:
                new[1:] |= k[1:] != k[:-1]
            starts = np.flatnonzero(new)
            self.keys = [k[starts] for k in keys]
            self.w = [np.add.reduceat(x[order], starts) if starts.size else x[:0] for x in w]
        return self.keys, self.w


def quantile_from_counts(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.quantile(np.repeat(values, counts), q)`` (method linear) without the repeat: ``values``
    sorted and distinct; the same interpolation (numpy's own, on the two neighbours), hence bitwise
    the same float."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    virtual = (n - 1) * np.float64(q)
    lo = int(np.floor(virtual))
    at = lambda i: values[int(np.searchsorted(cum, i, side="right"))]
    if lo >= n - 1:
        return float(at(n - 1))
    gamma = virtual - lo
    return float(np.quantile(np.array([at(lo), at(lo + 1)]), gamma))


class TaobaoStream:
    """Re-iterable parts of the streamed ``taobao`` data set (the "out of core" comment above): the
    first iteration reads the file (users, spill, statistics); every iteration yields the parts' raw
    data sets in order. :meth:`close` removes the spill."""

    def __init__(self, p: TaobaoParams, path: Path, block_bytes: int | None = None):
        self.p, self.path, self.block_bytes = p, Path(path), block_bytes
        self.dir: Path | None = None
        self.ready = False
        self.stats: dict = {}

    # ---------------------------------------------------------------- pass 0: users, part bounds
    def _users(self) -> tuple[np.ndarray, np.ndarray | None, int]:
        p = self.p
        users = _Sums(1, 1)
        in_window = _Sums(1, 0)
        n = 0
        for _, b in csv_batches(self.path, ["user_id", "timestamp"], self.block_bytes):
            u = b["user_id"]
            n += u.size
            vu, vc = np.unique(u, return_counts=True)
            users.add([vu], [vc])
            if p.window is not None and p.max_users is not None:
                t = b["timestamp"]
                in_window.add([np.unique(u[(t >= p.window[0]) & (t < p.window[1])])], [])
        if n == 0:
            raise DataError(f"taobao: {self.path} is empty")
        (u_all,), (c_all,) = users.reduce()
        keep = None
        if p.max_users is not None:
            keep = chosen_users(in_window.reduce()[0][0] if p.window is not None else u_all, p)
            if keep is not None:
                keep = np.sort(keep)
        # part bounds: consecutive user ranges of about chunk_rows events (kept users only)
        c = c_all if keep is None else np.where(np.isin(u_all, keep), c_all, 0)
        cum = np.cumsum(c)
        cuts = np.searchsorted(cum, np.arange(p.chunk_rows, int(cum[-1]), p.chunk_rows), side="left") + 1
        edges = np.unique(np.concatenate([[0], cuts[cuts < u_all.size]]))
        return u_all[edges], keep, n

    # ---------------------------------------------------------------- pass 1: spill into user-range parts
    def _spill(self, bounds: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        p = self.p
        sizes = np.zeros(bounds.size, dtype=np.int64)
        for _, b in csv_batches(self.path, None, self.block_bytes):
            m = np.ones(b["user_id"].size, dtype=bool)
            if p.window is not None:
                m &= (b["timestamp"] >= p.window[0]) & (b["timestamp"] < p.window[1])
            if keep is not None:
                m &= np.isin(b["user_id"], keep)
            part = np.searchsorted(bounds, b["user_id"][m], side="right") - 1
            order = np.argsort(part, kind="stable")  # file order kept inside a part
            rec = np.empty(order.size, dtype=REC)
            for c in REC.names:
                rec[c] = b[c][m][order]
            cnt = np.bincount(part, minlength=bounds.size)
            at = 0
            for k in np.flatnonzero(cnt):
                with open(self.dir / f"part-{k:06d}.bin", "ab") as fh:
                    fh.write(memoryview(rec[at:at + cnt[k]]).cast("B"))
                at += int(cnt[k])
            sizes += cnt
            del rec, order, part, b, m
        return sizes

    def _events(self, k: int) -> pd.DataFrame:
        rec = np.fromfile(self.dir / f"part-{k:06d}.bin", dtype=REC)
        return pd.DataFrame({c: rec[c] for c in REC.names})

    # ---------------------------------------------------------------- pass 2: global statistics
    def _statistics(self, sizes: np.ndarray) -> None:
        p = self.p
        pairs, inst_ts, click_ts = _Sums(2, 2), _Sums(1, 1), _Sums(1, 1)
        has_pos = np.zeros(sizes.size, dtype=bool)
        used = positives = users = removed = clicks = 0
        for k in np.flatnonzero(sizes):
            ev, is_click, n_removed = filter_events(self._events(int(k)), p, None)
            removed += n_removed
            pi, pc, (cnt, clk) = pair_counts(ev["item_id"].to_numpy(), ev["category_id"].to_numpy(),
                                                (np.ones(len(ev), dtype=np.int64), is_click.astype(np.int64)))
            pairs.add([pi, pc], [cnt, clk])
            user, item, ts, btag, is_click = instance_events(ev, is_click, p)
            del ev
            used += user.size
            clicks += int(is_click.sum())
            order = sort_events(user, ts, item, btag)  # raw item ids sort as their codes do
            u, t, c = user[order], ts[order], is_click[order]
            rank = rank_in_group(u)
            if p.history_ties == "exclude":
                rank = rank[run_starts(u, t)]
            pos = np.flatnonzero(c & (rank >= p.min_history))
            if pos.size:
                has_pos[k] = True
                positives += pos.size
                users += int(np.count_nonzero(u[pos][1:] != u[pos][:-1]) + 1)
                v, n = np.unique(t[pos], return_counts=True)
                inst_ts.add([v], [n])
            if p.protocol == "deminet":
                v, n = np.unique(ts[is_click], return_counts=True)
                click_ts.add([v], [n])
        if clicks == 0:
            raise DataError(f"taobao: {self.path} has no {p.click_behaviors} events (after the window and user "
                            f"filters)")
        if positives == 0:
            raise DataError(f"taobao: {self.path}: no click has {p.min_history} earlier events (min_history)")
        (pi, pc), (cnt, clk) = pairs.reduce()
        items, cats = best_category(pi, pc, cnt)
        first = np.ones(pi.size, dtype=bool)
        first[1:] = pi[1:] != pi[:-1]
        item_clicks = np.add.reduceat(clk, np.flatnonzero(first))
        probs = None
        if p.negative_dist == "popularity":
            cf = item_clicks.astype(np.float64)
            probs = cf / cf.sum()
        (tv,), (tn,) = inst_ts.reduce()
        if p.protocol == "default":
            points = {"test_from_ts": quantile_from_counts(tv, tn, p.test_quantile)}
            if p.valid_quantile is not None:
                points["valid_from_ts"] = quantile_from_counts(tv, tn, p.valid_quantile)
        else:
            (cv,), (cn,) = click_ts.reduce()
            points = {"split_point": quantile_from_counts(cv, cn, p.test_quantile)}
            if p.valid_quantile is not None:
                points["valid_point"] = quantile_from_counts(cv, cn, p.valid_quantile)
        self.items, self.cats, self.probs, self.points = _compact(items), _compact(cats), probs, points
        self.has_pos = has_pos
        self.stats = {"events_used": int(used), "positives": int(positives), "users": int(users),
                      "items": int(items.size), "users_removed": int(removed)}

    def prepare(self) -> None:
        if self.ready:
            return
        self.dir = Path(tempfile.mkdtemp(prefix="ctrgraph-taobao-spill-"))
        try:
            bounds, keep, n_read = self._users()
            sizes = self._spill(bounds, keep)
            self._statistics(sizes)
        except BaseException:
            self.close()
            raise
        self.n_read, self.parts = n_read, int(bounds.size)
        self.ready = True

    def meta(self) -> dict:
        p = self.p
        info = {k: v for k, v in self.points.items() if k != "valid_from_ts"}
        meta = {"recipe": "taobao", "params": p.model_dump(), "source": str(self.path), "events_read": self.n_read,
                "events_used": self.stats["events_used"], "positives": self.stats["positives"],
                "users": self.stats["users"], "items": self.stats["items"], **info, **protocol_meta(p),
                "streamed_parts": self.parts}
        if p.user_threshold() > 1:
            meta["users_removed"] = self.stats["users_removed"]
        return meta

    def __iter__(self):
        self.prepare()
        return self._parts()

    def _parts(self):
        p, meta = self.p, self.meta()
        for k in np.flatnonzero(self.has_pos):
            ev, is_click, _ = filter_events(self._events(int(k)), p, None)
            user, item, ts, btag, is_click = instance_events(ev, is_click, p)
            del ev
            cols, lengths, fields, split, _ = block_instances(
                p, user, item, ts, btag, is_click, self.items, self.cats, what=f"taobao: {self.path}, part {k}",
                neg_probs=self.probs, points=self.points)
            del user, item, ts, btag, is_click
            yield RawDataset(Schema(tuple(fields), label="label", description="Taobao UserBehavior"), cols, lengths,
                             split, meta=dict(meta))

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.ready = False

    def __del__(self):
        self.close()


STREAM_AUTO_BYTES = 64 << 20  # an uncompressed file above this is streamed when ``stream`` is None (gzip: / 4)


def chunks(p: TaobaoParams, data_dir: Path | None):
    """The streamed path (:mod:`.taobao_stream`) when ``stream`` is true, or None (automatic) and the
    file is large; None otherwise (the in-memory :func:`build`)."""
    if p.stream is False:
        return None
    path = locate(p, data_dir)
    if p.stream is None:
        size = path.stat().st_size * (4 if path.suffix == ".gz" else 1)
        if size <= STREAM_AUTO_BYTES or p.negative_sampler != "keyed":
            return None
    elif p.negative_sampler != "keyed":
        raise ConfigError("taobao: stream=true needs negative_sampler=keyed (the global sampler draws all "
                          "negatives from one random stream over the whole file)")
    return TaobaoStream(p, path)


RECIPE = Recipe("taobao", ("Taobao UserBehavior clicks with DIN-style sampled negatives, "
           "global time split"), TaobaoParams, build, sources, chunks=chunks)
