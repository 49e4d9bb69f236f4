"""Hashed categorical tables: ids from a stable hash of the raw value, no vocabulary of values.

``data.hash_buckets: {table_or_field: n}`` (``"*"`` for every categorical table) encodes a table's
values as ``2 + hash(value) mod n``: ids 0 (padding) and 1 (out-of-vocabulary) keep their meaning,
so the table has ``n + 2`` rows whatever the number of distinct values, and a value never seen in
training still maps to a fixed bucket at predict time. Every field of a table hashes alike (the
history ``hist_item_id`` hashes like the target ``item_id``).

The hash is stable across processes, machines and runs (no salted ``hash()``):
- integer values: the splitmix64 finaliser of the value's 64-bit two's complement (vectorised numpy);
- other values: their ``str`` spelling hashed by ``pandas.util.hash_array`` (SipHash-2-4 with pandas'
  fixed key ``"0123456789123456"``, UTF-8).
Which of the two a table uses (its *kind*) is fixed at training time from the dtypes of its raw
columns and recorded with the bucket count in ``schema.json`` (``meta.hashed``), so a CSV read as text
at predict time is parsed back to integers for an integer table (a value that does not parse, e.g.
``"abc"`` for an integer table, gets the OOV id 1). ``min_count`` does not apply to hashed tables.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .schema import Schema
from .vocab import OOV, Vocab

#: name of the hash function recorded with each hashed table (a change would re-bucket every value)
HASH_ALGO = "ctrgraph-hash-v1"
_KINDS = ("int", "str")
_SIPHASH_KEY = "0123456789123456"  # pandas' default hash key, spelled out so that it cannot drift
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash_int64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of int64 values (any shape) -> uint64 of the same shape."""
    x = np.asarray(values, dtype=np.int64).view(np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def hash_str(values: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (pandas' fixed key, UTF-8) of the values' ``str`` spelling -> uint64, same shape."""
    v = np.asarray(values)
    flat = v.ravel().astype(str).astype(object)
    return pd.util.hash_array(flat, encoding="utf8", hash_key=_SIPHASH_KEY, categorize=True).reshape(v.shape)


def _as_int64(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(int64 values, mask of values that are not integers or None when all are) of any array."""
    if raw.dtype.kind in "iub":
        return raw.astype(np.int64, copy=False), None
    if raw.dtype.kind == "f":
        ok = np.isfinite(raw) & (np.mod(raw, 1) == 0)
        return np.where(ok, raw, 0).astype(np.int64), (None if ok.all() else ~ok)
    s = raw.astype(str)
    try:
        return s.astype(np.int64), None  # exact for every int64, the common case
    except (ValueError, OverflowError):
        pass
    f = pd.to_numeric(pd.Series(s.ravel()), errors="coerce").to_numpy(dtype=np.float64).reshape(s.shape)
    ok = np.isfinite(f) & (np.mod(np.nan_to_num(f), 1) == 0) & (np.abs(np.nan_to_num(f)) < 2.0 ** 63)
    out = np.zeros(s.shape, dtype=np.int64)
    if ok.any():
        try:
            out[ok] = s[ok].astype(np.int64)  # exact where the spelling is a plain integer
        except (ValueError, OverflowError):
            out[ok] = f[ok].astype(np.int64)  # "12.0" and the like
    return out, (None if ok.all() else ~ok)


class HashedVocab(Vocab):
    """A table whose ids are ``2 + hash(value) mod buckets`` (see the module docstring)."""

    def __init__(self, name: str, buckets: int, kind: str = "int"):
        if int(buckets) < 2:
            raise ConfigError(f"data.hash_buckets: table {name!r} needs at least 2 buckets, got {buckets}")
        if kind not in _KINDS:
            raise ConfigError(f"hashed table {name!r}: kind must be one of {_KINDS}, got {kind!r}")
        super().__init__(name, np.array([], dtype=np.int64 if kind == "int" else str))
        self.buckets, self.kind = int(buckets), kind

    def __len__(self) -> int:
        """Table rows: padding, OOV and ``buckets`` hash buckets."""
        return self.buckets + 2

    def __repr__(self) -> str:
        return f"HashedVocab({self.name!r}, buckets={self.buckets}, kind={self.kind!r})"

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (any shape) -> int32 ids in [2, buckets + 2); OOV (1) for a value that is not
        an integer in an integer table."""
        raw = np.asarray(raw)
        bad = None
        if self.kind == "int":
            vals, bad = _as_int64(raw)
            h = hash_int64(vals)
        else:
            h = hash_str(raw)
        ids = (h % np.uint64(self.buckets)).astype(np.int32) + np.int32(2)
        if bad is not None:
            ids[bad] = OOV
        return ids

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Bucket labels (``"#<bucket>"``; ``""`` for padding / OOV): a hash has no inverse."""
        ids = np.asarray(ids)
        out = np.full(ids.shape, "", dtype=object)
        known = ids >= 2
        out[known] = np.char.add("#", (ids[known] - 2).astype(str))
        return out

    def spec(self) -> dict:
        """What ``schema.json`` records of the table (``meta.hashed[name]``)."""
        return {"buckets": self.buckets, "kind": self.kind, "hash": HASH_ALGO}

    @classmethod
    def from_spec(cls, name: str, spec: dict) -> HashedVocab:
        if not isinstance(spec, dict) or spec.get("hash") != HASH_ALGO:
            raise DataError(f"hashed table {name!r}: unknown hash spec {spec!r} (this ctrgraph hashes with "
                            f"{HASH_ALGO!r})")
        return cls(name, int(spec["buckets"]), str(spec["kind"]))

    def save(self, path) -> None:
        raise TypeError(f"hashed table {self.name!r} has no vocabulary file: schema.json's meta.hashed holds it")


def resolve_hash_buckets(schema: Schema, asked: dict[str, int] | None) -> dict[str, int]:
    """``data.hash_buckets`` -> {table: buckets}. Keys are table names, field names (meaning the
    field's table) or ``"*"`` (every categorical table not named otherwise)."""
    if not asked:
        return {}
    tables = schema.tables
    out: dict[str, int] = {}
    for key, n in asked.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ConfigError(f"data.hash_buckets.{key}: the number of buckets must be an integer >= 2, got {n!r}")
        if key == "*":
            continue
        if key in tables:
            table = key
        elif key in schema and schema[key].encoded:
            table = schema[key].table
        else:
            what = "is not a categorical field" if key in schema else "is neither a table nor a field"
            raise ConfigError(f"data.hash_buckets: {key!r} {what} of this data set; categorical tables: {tables}")
        if table in out and out[table] != int(n):
            raise ConfigError(f"data.hash_buckets: table {table!r} is given {out[table]} and {n} buckets "
                              f"(its fields share one table)")
        out[table] = int(n)
    if "*" in asked:
        out = {t: out.get(t, int(asked["*"])) for t in tables}
    return out


def table_kind(columns: list[np.ndarray]) -> str:
    """``int`` when every raw column of a table holds integers (floats only with integral values),
    else ``str``."""
    for c in columns:
        c = np.asarray(c)
        if c.dtype.kind in "iub":
            continue
        if c.dtype.kind == "f" and bool(np.all(np.isfinite(c) & (np.mod(c, 1) == 0))):
            continue
        return "str"
    return "int"


def hashed_specs(schema: Schema) -> dict[str, dict]:
    """{table: spec} of the hashed tables a schema records (``meta.hashed``)."""
    return dict(schema.meta.get("hashed") or {})


def with_hashed(schema: Schema, vocabs: dict[str, Vocab]) -> Schema:
    """``schema`` recording its hashed tables in ``meta.hashed`` (unchanged when there are none)."""
    specs = {t: v.spec() for t, v in vocabs.items() if isinstance(v, HashedVocab)}
    if not specs:
        return schema
    return schema.replace(meta=dict(schema.meta, hashed=specs))


def load_vocabs(schema: Schema, load_file: Callable[[str], Vocab]) -> dict[str, Vocab]:
    """One vocabulary per table: hashed tables from the schema's record, the others by ``load_file``."""
    specs = hashed_specs(schema)
    return {t: HashedVocab.from_spec(t, specs[t]) if t in specs else load_file(t) for t in schema.tables}
