"""Encode a :class:`RawDataset` into an :class:`EncodedDataset` (vocabularies from train only).

Work is chunked over rows so that 10M-instance data sets with long sequences stay within a few
GiB; every step is a vectorised numpy operation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .dataset import EncodedDataset
from .hashing import HashedVocab, resolve_hash_buckets, table_kind, with_hashed
from .raw import SPLIT_NAMES, TRAIN, RawDataset
from .schema import Kind, Role
from .vocab import Vocab

ENCODING_VERSION = 1
CHUNK = 1 << 20


def _train_values(raw: RawDataset, name: str, train_idx: np.ndarray):
    """Yield the train-split raw values of one field, chunk by chunk (sequences: valid positions only)."""
    col = raw.columns[name]
    f = raw.schema[name]
    for s in range(0, train_idx.size, CHUNK):
        rows = train_idx[s:s + CHUNK]
        vals = col[rows]
        if f.is_sequence_like:
            ln = raw.lengths[name][rows]
            vals = vals[np.arange(f.max_len)[None, :] < ln[:, None]]
        yield vals


def build_vocabs(raw: RawDataset, min_count: int = 1, hash_buckets: dict[str, int] | None = None) -> dict[str, Vocab]:
    """One vocabulary per table from the train split of every field that uses it; a table in
    ``hash_buckets`` (``data.hash_buckets``, see :mod:`ctrgraph.data.hashing`) gets a
    :class:`HashedVocab` instead, whose kind (int / str) comes from its raw columns."""
    train_idx = np.flatnonzero(raw.split == TRAIN)
    hashed = resolve_hash_buckets(raw.schema, hash_buckets)

    def users(table):
        return [f for f in raw.schema.fields if f.encoded and f.role != Role.LABEL and f.table == table]

    def parts(table):
        for f in users(table):
            yield from _train_values(raw, f.name, train_idx)

    def kind(table):
        cols = [raw.columns[f.name] for f in users(table)]
        if any(np.asarray(c).dtype.kind == "f" for c in cols):  # integral floats: check valid positions only
            cols = list(parts(table))
        return table_kind(cols)

    return {t: HashedVocab(t, hashed[t], kind(t)) if t in hashed else Vocab.build(t, parts(t), min_count=min_count)
            for t in raw.schema.tables}


def encode_columns(raw_cols: dict[str, np.ndarray], lengths: dict[str, np.ndarray], schema, vocabs,
                   rows: np.ndarray | slice | None = None, consume: bool = False) -> dict[str, np.ndarray]:
    """Encode the given rows (all rows when ``rows`` is None; a slice avoids index copies).

    With ``consume=True`` each raw column is dropped from ``raw_cols`` once encoded, so raw and
    encoded copies of the whole data set never coexist.
    """
    n = next(iter(raw_cols.values())).shape[0]
    rows = slice(0, n) if rows is None else rows
    m = (rows.stop - rows.start) if isinstance(rows, slice) else rows.size
    out: dict[str, np.ndarray] = {}
    for f in schema.fields:
        col = raw_cols[f.name]
        if f.role == Role.LABEL or f.kind == Kind.NUMERIC and f.embed:
            out[f.name] = np.asarray(col[rows], dtype=np.float32)
        else:
            if f.embed:
                shape, dtype = ((m, f.max_len) if f.is_sequence_like else (m,)), np.int32
            else:
                shape, dtype = ((m, f.max_len) if f.is_sequence_like else (m,)), col.dtype
            inplace = (consume and isinstance(rows, slice) and rows.start == 0 and m == n and col.dtype == dtype
                       and col.shape == shape and col.flags.writeable and col.flags.c_contiguous)
            dst = col if inplace else np.zeros(shape, dtype=dtype)  # in place: the raw column is consumed
            for s in range(0, m, CHUNK):
                e = min(m, s + CHUNK)
                r = slice(rows.start + s, rows.start + e) if isinstance(rows, slice) else rows[s:e]
                vals = col[r]
                ids = vocabs[f.table].encode(vals) if f.embed else np.array(vals, copy=True)
                if f.is_sequence_like:
                    ids[np.arange(f.max_len)[None, :] >= lengths[f.name][r][:, None]] = 0
                dst[s:e] = ids
            out[f.name] = dst
        if consume:
            raw_cols.pop(f.name, None)
    return out


def encode(raw: RawDataset, min_count: int = 1, source: str = "data", consume: bool = False,
           hash_buckets: dict[str, int] | None = None) -> EncodedDataset:
    """Validate, build train-only vocabularies and encode; rows are reordered train | valid | test.

    ``consume=True`` frees each raw column once encoded (the RawDataset is unusable afterwards).
    ``hash_buckets``: tables to hash instead of building a vocabulary (:mod:`ctrgraph.data.hashing`);
    the returned schema records them (``meta.hashed``).
    """
    raw.validate(source)
    vocabs = build_vocabs(raw, min_count=min_count, hash_buckets=hash_buckets)
    split = raw.split
    # rows already ordered train | valid | test: slices, no copies
    order = None if np.all(split[1:] >= split[:-1]) else np.argsort(split, kind="stable")
    arrays = encode_columns(raw.columns, raw.lengths, raw.schema, vocabs, rows=order, consume=consume)
    counts = np.bincount(split.astype(np.int64), minlength=3)
    bounds, start = {}, 0
    for k in (0, 1, 2):
        bounds[SPLIT_NAMES[k]] = (start, start + int(counts[k]))
        start += int(counts[k])
    meta = dict(raw.meta)
    meta["min_count"] = min_count
    return EncodedDataset(with_hashed(raw.schema, vocabs), arrays, vocabs, bounds, meta)


def cache_root() -> Path:
    return Path(os.environ.get("CTRGRAPH_CACHE", Path.home() / ".cache" / "ctrgraph"))


def cache_key(recipe: str, params: dict, fingerprint: str) -> str:
    blob = json.dumps({"recipe": recipe, "params": params, "source": fingerprint, "v": ENCODING_VERSION},
                      sort_keys=True, default=str)
    return f"{recipe}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"
