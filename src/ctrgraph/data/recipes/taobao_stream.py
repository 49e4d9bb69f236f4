"""The ``taobao`` recipe out of core: the full UserBehavior file (100M events) with bounded memory.

The protocol (:mod:`.taobao`) needs global state before any user's instances: the item -> category
table (most frequent category over the file), the popularity of the items (``negative_dist:
popularity``), the item table the negatives are drawn from, and the time quantile(s) of the split. So:

0. **users** (pyarrow's streaming CSV reader, only ``user_id`` and ``timestamp``): the distinct users
   with their event counts (and the ``max_users`` draw over the users inside the ``window``, as
   :func:`.taobao.build` does).
1. **spill**: every row once more, parsed and checked; rows outside the window or of users not drawn
   are dropped; the rest is appended to one binary file per *part*: parts are ranges of user ids of
   about ``chunk_rows`` events, so a part holds whole users and the parts in order hold the users in
   ascending id order, the order of the in-memory path. The input needs no order at all (the
   official file is grouped by user in string order of the id; the time-slice sample is ordered by
   time).
2. **statistics** (part by part, the same per-user filters as in memory: duplicates, the
   ``user_threshold``): counts of (item, category) pairs and of clicks per pair, counts of the
   distinct timestamps of the positives (and of all clicks, protocol ``deminet``); from them the
   item table, each item's category, the popularity distribution and the exact ``np.quantile``
   split points (:func:`quantile_from_counts`).
3. **instances**: part by part, :func:`.taobao.block_instances` with those global tables, the global
   split points and the keyed negative sampler (a draw depends on the user and the positive, not on
   the other users in the part); :func:`~ctrgraph.data.stream.stream_encode` reads the parts twice
   (vocabularies, then positioned writes into memory-mapped columns).

The result equals the in-memory encoding (same rows in the same order, vocabularies, negatives).
Memory: one part of raw events and its instances, plus O(users) (the user counts), O(items) (the
item table, categories, popularity) and O(distinct timestamps). Disk: the spill, 33 bytes per kept
event, in a temporary folder (``TMPDIR``) removed when the encoding ends.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataError
from ..io import numeric_column
from ..raw import RawDataset
from ..schema import Schema
from ..sequences import rank_in_group, sort_events
from . import taobao as tb

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
            if df.shape[1] != len(tb.COLUMNS):
                return DataError(f"{path}: rows {start + 1}..{start + len(df)} have {df.shape[1]} columns, expected "
                                 f"{len(tb.COLUMNS)} ({','.join(tb.COLUMNS)})")
            df.columns = tb.COLUMNS
            for c in NUMERIC:
                numeric_column(df, c, path, first_row=start)
            b = df["behavior_type"].astype(str).str.strip()
            code = pd.Index(tb.BEHAVIORS).get_indexer(b)
            if (code < 0).any():
                r = int(np.flatnonzero(code < 0)[0])
                return DataError(f"{path}: column 'behavior_type', row {start + r + 1}: {df['behavior_type'].iloc[r]!r}"
                                 f" is not one of {tb.BEHAVIORS}")
            start += len(df)
    except pd.errors.ParserError as e:
        return DataError(f"{path}: malformed CSV ({str(e).strip()}); expected {len(tb.COLUMNS)} columns "
                         f"{','.join(tb.COLUMNS)}")
    except DataError as e:
        return e
    return DataError(f"{path}: {reason}")


def csv_batches(path: Path, columns: list[str] | None = None, block_bytes: int | None = None):
    """(first row number, {column: numpy array}) per parsed block of the headerless file; ``btag``
    (behaviour code) instead of ``behavior_type``. Errors name the file and the row."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    cols = columns or tb.COLUMNS
    types = {c: pa.int64() for c in NUMERIC} | {"behavior_type": pa.string()}
    ropt = pcsv.ReadOptions(column_names=tb.COLUMNS, block_size=block_bytes or CSV_BLOCK_BYTES)
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
                    lut = pd.Index(tb.BEHAVIORS).get_indexer(
                        pd.Series(d.dictionary.to_numpy(zero_copy_only=False)).astype(str).str.strip())
                    code = lut[d.indices.to_numpy()]
                    if (code < 0).any():
                        r = int(np.flatnonzero(code < 0)[0])
                        raise DataError(f"{path}: column 'behavior_type', row {first + r + 1}: "
                                        f"{a[r].as_py()!r} is not one of {tb.BEHAVIORS}")
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
    """Re-iterable parts of the streamed ``taobao`` data set (see the module doc): the first iteration
    reads the file (users, spill, statistics); every iteration yields the parts' raw data sets in
    order. :meth:`close` removes the spill."""

    def __init__(self, p: tb.TaobaoParams, path: Path, block_bytes: int | None = None):
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
            keep = tb.chosen_users(in_window.reduce()[0][0] if p.window is not None else u_all, p)
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
            ev, is_click, n_removed = tb.filter_events(self._events(int(k)), p, None)
            removed += n_removed
            pi, pc, (cnt, clk) = tb.pair_counts(ev["item_id"].to_numpy(), ev["category_id"].to_numpy(),
                                                (np.ones(len(ev), dtype=np.int64), is_click.astype(np.int64)))
            pairs.add([pi, pc], [cnt, clk])
            user, item, ts, btag, is_click = tb.instance_events(ev, is_click, p)
            del ev
            used += user.size
            clicks += int(is_click.sum())
            order = sort_events(user, ts, item, btag)  # raw item ids sort as their codes do
            u, t, c = user[order], ts[order], is_click[order]
            rank = rank_in_group(u)
            if p.history_ties == "exclude":
                rank = rank[tb.run_starts(u, t)]
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
        items, cats = tb.best_category(pi, pc, cnt)
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
        self.items, self.cats, self.probs, self.points = tb._compact(items), tb._compact(cats), probs, points
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
                "users": self.stats["users"], "items": self.stats["items"], **info, **tb.protocol_meta(p),
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
            ev, is_click, _ = tb.filter_events(self._events(int(k)), p, None)
            user, item, ts, btag, is_click = tb.instance_events(ev, is_click, p)
            del ev
            cols, lengths, fields, split, _ = tb.block_instances(
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


__all__ = ["TaobaoStream", "csv_batches", "quantile_from_counts"]
