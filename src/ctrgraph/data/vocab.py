"""Vocabularies: raw values -> ids with 0 = padding and 1 = out-of-vocabulary.

Built from the train split only; ids 2.. follow the sorted order of the raw values, so the
mapping does not depend on row order. Integer values use a lookup table (O(N)); strings use a
sorted array and ``searchsorted``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PAD, OOV = 0, 1
_LUT_MAX = 50_000_000  # largest integer value for which a dense lookup table is used


class Vocab:
    """A sorted array of known raw values; ``encode`` maps values to ``2 + position`` or ``OOV``."""

    def __init__(self, name: str, values: np.ndarray):
        self.name = name
        self.values = np.asarray(values)
        self._lut: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of ids including padding and OOV."""
        return int(self.values.shape[0]) + 2

    @property
    def size(self) -> int:
        return len(self)

    @classmethod
    def build(cls, name: str, parts, min_count: int = 1) -> "Vocab":
        """Vocabulary of the values in ``parts`` (an iterable of train-split arrays, consumed
        chunk by chunk) seen at least ``min_count`` times."""
        counts: np.ndarray | None = None  # dense counts for small non-negative integers
        uniq: list[tuple[np.ndarray, np.ndarray]] = []  # (values, counts) per chunk otherwise
        for p in parts:
            p = np.asarray(p).ravel()
            if p.size == 0:
                continue
            if p.dtype.kind in "iu" and int(p.min()) >= 0 and int(p.max()) < _LUT_MAX and not uniq:
                c = np.bincount(p.astype(np.int64, copy=False))
                if counts is None:
                    counts = c
                else:
                    if c.size > counts.size:
                        c[: counts.size] += counts
                        counts = c
                    else:
                        counts[: c.size] += c
                continue
            if counts is not None:  # switch to the general path
                nz = np.flatnonzero(counts)
                uniq.append((nz.astype(np.int64), counts[nz]))
                counts = None
            v = p.astype(np.int64) if p.dtype.kind in "iu" else p.astype(str)
            uniq.append(np.unique(v, return_counts=True))
        if counts is not None:
            return cls(name, np.flatnonzero(counts >= min_count).astype(np.int64))
        if not uniq:
            return cls(name, np.array([], dtype=np.int64))
        kinds = {u[0].dtype.kind for u in uniq}
        if len(kinds) > 1:  # mixed integers and strings: compare as strings
            uniq = [(u[0].astype(str), u[1]) for u in uniq]
        vals = np.concatenate([u[0] for u in uniq])
        cnts = np.concatenate([u[1] for u in uniq])
        v, inv = np.unique(vals, return_inverse=True)
        tot = np.bincount(inv.ravel(), weights=cnts, minlength=v.size)
        return cls(name, v[tot >= min_count])

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Map raw values (any shape) to int32 ids; unseen values -> OOV (1)."""
        raw = np.asarray(raw)
        if self.values.size == 0:
            return np.full(raw.shape, OOV, dtype=np.int32)
        if self.values.dtype.kind in "iu":
            if raw.dtype.kind not in "iu":
                if raw.dtype.kind == "f" and np.all(np.mod(raw, 1) == 0):
                    raw = raw.astype(np.int64)
                else:
                    # strings (e.g. read from a CSV at predict time): compare as strings
                    return self._encode_sorted(raw.astype(str), self.values.astype(str))
            hi = int(self.values[-1])
            if hi < _LUT_MAX and int(self.values[0]) >= 0:
                if self._lut is None:
                    lut = np.full(hi + 1, OOV, dtype=np.int32)
                    lut[self.values] = np.arange(2, len(self), dtype=np.int32)
                    self._lut = lut
                inside = (raw >= 0) & (raw <= hi)
                out = np.full(raw.shape, OOV, dtype=np.int32)
                out[inside] = self._lut[raw[inside]]
                return out
            return self._encode_sorted(raw.astype(np.int64), self.values)
        return self._encode_sorted(raw.astype(str), self.values)

    @staticmethod
    def _encode_sorted(raw: np.ndarray, values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        sv = values[order]
        pos = np.searchsorted(sv, raw)
        pos_c = np.minimum(pos, sv.size - 1)
        hit = sv[pos_c] == raw
        out = np.full(raw.shape, OOV, dtype=np.int32)
        out[hit] = (order[pos_c[hit]] + 2).astype(np.int32)
        return out

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Inverse of ``encode`` for known ids (padding/OOV -> None-like sentinel ``-1`` / ``''``)."""
        ids = np.asarray(ids)
        fill = "" if self.values.dtype.kind == "U" else -1
        out = np.full(ids.shape, fill, dtype=self.values.dtype)
        known = ids >= 2
        out[known] = self.values[ids[known] - 2]
        return out

    def save(self, path: Path) -> None:
        np.save(path, self.values, allow_pickle=False)

    @classmethod
    def load(cls, name: str, path: Path) -> "Vocab":
        return cls(name, np.load(path, allow_pickle=False))
