"""Encode data larger than memory: raw chunks in, memory-mapped ``.npy`` columns on disk out.

A recipe that can stream (``Recipe.chunks``; today ``table`` over a partitioned parquet folder)
yields :class:`~ctrgraph.data.raw.RawDataset` chunks of bounded size. :func:`stream_encode` reads them
twice: pass 1 counts the train values of every vocabulary (:class:`VocabCounter`: memory grows with
the number of distinct values, not with the rows) and the rows of each split; pass 2 encodes each
chunk with the same :func:`~ctrgraph.data.encode.encode_columns` as the in-memory path and writes it
at its offset into preallocated ``.npy`` files (rows ordered train | valid | test, in chunk order
within a split). The result is the on-disk format of :meth:`EncodedDataset.save`, opened with
``mmap=True``; :class:`~ctrgraph.data.loader.BatchLoader` reads such arrays block by block.

Peak memory: one chunk of raw values plus its encoded copy, plus the vocabularies' distinct values.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import EncodedDataset, write_encoded_dir
from .encode import encode_columns
from .hashing import HashedVocab, resolve_hash_buckets, table_kind, with_hashed
from .raw import SPLIT_NAMES, TRAIN, RawDataset
from .schema import Kind, Role, Schema
from .vocab import Vocab


class VocabCounter:
    """Counts of distinct values, merged chunk by chunk (integers and strings kept apart until
    :meth:`vocab`, which then compares them as strings, as :meth:`Vocab.build` does)."""

    def __init__(self, name: str):
        self.name = name
        self.values: np.ndarray | None = None
        self.counts: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values).ravel()
        if v.size == 0:
            return
        v = v.astype(np.int64) if v.dtype.kind in "iu" else v.astype(str)
        u, c = np.unique(v, return_counts=True)
        if self.values is None:
            self.values, self.counts = u, c
            return
        if (self.values.dtype.kind == "U") != (u.dtype.kind == "U"):
            self.values, u = self.values.astype(str), u.astype(str)
        allv = np.concatenate([self.values, u])
        merged, inv = np.unique(allv, return_inverse=True)
        self.counts = np.bincount(inv.ravel(), weights=np.concatenate([self.counts, c]),
                                  minlength=merged.size).astype(np.int64)
        self.values = merged

    def vocab(self, min_count: int = 1) -> Vocab:
        if self.values is None:
            return Vocab(self.name, np.array([], dtype=np.int64))
        return Vocab(self.name, self.values[self.counts >= min_count])


def _train_values(chunk: RawDataset, name: str, rows: np.ndarray) -> np.ndarray:
    f = chunk.schema[name]
    vals = chunk.columns[name][rows]
    if f.is_sequence_like:
        vals = vals[np.arange(f.max_len)[None, :] < chunk.lengths[name][rows][:, None]]
    return vals


def _check_same_schema(first: Schema, other: Schema, source: str, i: int) -> None:
    a = [(f.name, f.kind, f.max_len) for f in first.fields]
    b = [(f.name, f.kind, f.max_len) for f in other.fields]
    if a != b:
        raise DataError(f"{source}: chunk {i} has fields {b}, the first chunk {a} (a streamed data set needs the "
                        f"same columns and sequence widths in every part: give each sequence field a max_len)")


def _npy_writer(path: Path, dtype: np.dtype, shape: tuple[int, ...]):
    """An ``.npy`` file of ``shape`` (header written, data zero-filled sparsely) opened for
    positioned writes: (file, header bytes, bytes per row)."""
    m = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # header + size, no data
    header = int(m.offset)
    del m
    row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    return open(path, "r+b"), header, row


def stream_encode(chunks: Callable[[], Iterable[RawDataset]], path: str | Path, min_count: int = 1,
                  source: str = "data", progress: Callable[[str], None] | None = None,
                  hash_buckets: dict[str, int] | None = None) -> EncodedDataset:
    """Two passes over ``chunks()`` (a fresh iterator each call, the same chunks in the same order);
    writes the encoded data set to ``path`` (atomically) and returns it memory-mapped. Tables in
    ``hash_buckets`` (data/hashing.py) are hashed: no counting pass for them, their kind (integer or
    text) from the first part."""
    path = Path(path)
    schema: Schema | None = None
    counters: dict[str, VocabCounter] = {}
    counts = np.zeros(3, dtype=np.int64)
    meta: dict = {}
    positives = 0
    for i, ch in enumerate(chunks()):  # pass 1: vocabularies and split sizes
        ch.validate(f"{source}, chunk {i}")
        if schema is None:
            schema, meta = ch.schema, dict(ch.meta)
            hashed = resolve_hash_buckets(schema, hash_buckets)
            kinds = {t: table_kind([ch.columns[f.name] for f in schema.fields
                                    if f.encoded and f.role != Role.LABEL and f.table == t]) for t in hashed}
            counters = {t: VocabCounter(t) for t in schema.tables if t not in hashed}
        else:
            _check_same_schema(schema, ch.schema, source, i)
        train = np.flatnonzero(ch.split == TRAIN)
        for f in schema.fields:
            if f.encoded and f.role != Role.LABEL and f.table in counters:
                counters[f.table].add(_train_values(ch, f.name, train))
        counts += np.bincount(ch.split.astype(np.int64), minlength=3)[:3]
        positives += int(np.asarray(ch.columns[schema.label]).sum())
        del ch, train
        if progress is not None:
            progress(f"{source}: pass 1 (vocabularies), chunk {i + 1}, {int(counts.sum()):,} rows")
    if schema is None:
        raise DataError(f"{source}: no rows (the input has no parts)")
    if counts[TRAIN] == 0:
        raise DataError(f"{source}: the train split is empty")
    vocabs = {t: HashedVocab(t, hashed[t], kinds[t]) if t in hashed else counters[t].vocab(min_count)
              for t in schema.tables}
    schema = with_hashed(schema, vocabs)
    del counters
    n = int(counts.sum())
    offsets = {k: int(counts[:k].sum()) for k in (0, 1, 2)}
    out = {}
    for f in schema.fields:
        if f.role == Role.LABEL or f.kind == Kind.NUMERIC and f.embed:
            dtype = np.float32
        elif f.embed:
            dtype = np.int32
        else:
            dtype = None  # the raw dtype, known from the first chunk
        out[f.name] = ((n, f.max_len) if f.is_sequence_like else (n,), dtype)

    def write_columns(tmp: Path) -> None:  # pass 2: encode each part and write it at its split's offset
        files: dict[str, tuple[object, int, int]] = {}  # name -> (open file, header bytes, bytes per row)
        pos = dict(offsets)
        try:
            for i, ch in enumerate(chunks()):
                if i > 0:
                    _check_same_schema(schema, ch.schema, source, i)
                order = np.argsort(ch.split, kind="stable")
                enc = encode_columns(ch.columns, ch.lengths, schema, vocabs, rows=order)
                k_counts = np.bincount(ch.split.astype(np.int64), minlength=3)[:3]
                for name, arr in enc.items():
                    shape, dtype = out[name]
                    dtype = np.dtype(dtype or arr.dtype)
                    if name not in files:
                        files[name] = _npy_writer(tmp / f"{name}.npy", dtype, shape)
                    fh, header, row = files[name]
                    arr = np.ascontiguousarray(arr, dtype=dtype)
                    start = 0
                    for k in (0, 1, 2):
                        m = int(k_counts[k])
                        if m:  # plain file writes: the written pages are never mapped into this process
                            fh.seek(header + pos[k] * row)
                            fh.write(memoryview(arr[start:start + m].reshape(-1).view(np.uint8)))
                        start += m
                for k in (0, 1, 2):
                    pos[k] += int(k_counts[k])
                del ch, enc, arr, order  # before the next part is built: one part in memory at a time
                if progress is not None:
                    progress(f"{source}: pass 2 (encode), chunk {i + 1}, "
                             f"{sum(pos[k] - offsets[k] for k in pos):,}/{n:,} rows")
        finally:
            for fh, _, _ in files.values():
                fh.close()
        if any(pos[k] - offsets[k] != counts[k] for k in (0, 1, 2)):
            raise DataError(f"{source}: the second pass read other rows than the first (did the input change?)")

    bounds = {SPLIT_NAMES[k]: (offsets[k], offsets[k] + int(counts[k])) for k in (0, 1, 2)}
    meta.update(instances=n, positives=positives, min_count=min_count, streamed=True)
    write_encoded_dir(path, write_columns, schema, vocabs, bounds, meta)
    return EncodedDataset.load(path, mmap=True)


__all__ = ["VocabCounter", "stream_encode"]
