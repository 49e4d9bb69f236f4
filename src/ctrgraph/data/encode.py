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


def build_vocabs(raw: RawDataset, min_count: int = 1) -> dict[str, Vocab]:
    """One vocabulary per table from the train split of every field that uses it."""
    train_idx = np.flatnonzero(raw.split == TRAIN)
    vocabs = {}
    for table in raw.schema.tables:
        parts = []
        for f in raw.schema.fields:
            if f.encoded and f.role != Role.LABEL and f.table == table:
                parts.extend(_train_values(raw, f.name, train_idx))
        vocabs[table] = Vocab.build(table, parts, min_count=min_count)
    return vocabs


def encode_columns(raw_cols: dict[str, np.ndarray], lengths: dict[str, np.ndarray], schema, vocabs,
                   rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Encode the given rows (all rows when ``rows`` is None) of raw columns."""
    n = next(iter(raw_cols.values())).shape[0]
    rows = np.arange(n) if rows is None else rows
    out: dict[str, np.ndarray] = {}
    for f in schema.fields:
        col = raw_cols[f.name]
        if f.role == Role.LABEL:
            out[f.name] = np.asarray(col[rows], dtype=np.float32)
        elif f.kind == Kind.NUMERIC:
            out[f.name] = np.asarray(col[rows], dtype=np.float32)
        elif not f.embed:
            a = col[rows]
            if f.is_sequence_like:
                a = a.copy()
                a[np.arange(f.max_len)[None, :] >= lengths[f.name][rows][:, None]] = 0
            out[f.name] = a
        else:
            shape = (rows.size, f.max_len) if f.is_sequence_like else (rows.size,)
            dst = np.zeros(shape, dtype=np.int32)
            for s in range(0, rows.size, CHUNK):
                r = rows[s:s + CHUNK]
                ids = vocabs[f.table].encode(col[r])
                if f.is_sequence_like:
                    ids[np.arange(f.max_len)[None, :] >= lengths[f.name][r][:, None]] = 0
                dst[s:s + CHUNK] = ids
            out[f.name] = dst
    return out


def encode(raw: RawDataset, min_count: int = 1, source: str = "data") -> EncodedDataset:
    """Validate, build train-only vocabularies and encode; rows are reordered train | valid | test."""
    raw.validate(source)
    vocabs = build_vocabs(raw, min_count=min_count)
    order = np.argsort(raw.split, kind="stable")
    arrays = encode_columns(raw.columns, raw.lengths, raw.schema, vocabs, rows=order)
    counts = np.bincount(raw.split.astype(np.int64), minlength=3)
    bounds, start = {}, 0
    for k in (0, 1, 2):
        bounds[SPLIT_NAMES[k]] = (start, start + int(counts[k]))
        start += int(counts[k])
    meta = dict(raw.meta)
    meta["min_count"] = min_count
    return EncodedDataset(raw.schema, arrays, vocabs, bounds, meta)


def cache_root() -> Path:
    return Path(os.environ.get("CTRGRAPH_CACHE", Path.home() / ".cache" / "ctrgraph"))


def cache_key(recipe: str, params: dict, fingerprint: str) -> str:
    blob = json.dumps({"recipe": recipe, "params": params, "source": fingerprint, "v": ENCODING_VERSION},
                      sort_keys=True, default=str)
    return f"{recipe}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"
