"""File reading with errors that name the file (and column) at fault."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError


def read_table(path: str | Path, what: str = "table", **kw) -> pd.DataFrame:
    """Read a CSV/TSV (optionally gzipped) or parquet file into a DataFrame; clear errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what}: file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what}: {path} is empty")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif kw.get("header", "infer") is None:  # no header row: nothing to check (ML-1M's ``::`` files)
            df = pd.read_csv(path, **kw)
        else:
            head = [str(c) for c in pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                                                  **{k: v for k, v in kw.items() if k in ("sep", "compression")}
                                                  ).iloc[0]]
            dup = sorted({c for c in head if head.count(c) > 1})
            if dup:
                raise DataError(f"{what}: {path}: duplicate column name(s) {dup} in the header; rename them")
            df = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what}: {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise DataError(f"{what}: cannot parse {path}: {e}") from None
    if len(df) == 0:
        raise DataError(f"{what}: {path} has a header but no rows")
    return df


def require_columns(df: pd.DataFrame, columns: list[str], path: str | Path, what: str = "table") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: {path} lacks column(s) {missing}; it has {list(df.columns)}")


def numeric_column(df: pd.DataFrame, col: str, path: str | Path, dtype=np.int64, allow_nan: bool = False,
                   first_row: int = 0) -> np.ndarray:
    """A column as numbers; the first non-numeric or missing row is named in the error (rows counted
    from ``first_row`` + 1: a chunk of a larger file names the file's row)."""
    s = pd.to_numeric(df[col], errors="coerce")
    bad = s.isna() & (df[col].notna() if allow_nan else True)
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {col!r}, row {first_row + r + 1}: value {df[col].iloc[r]!r} is not a number")
    if dtype is np.int64 and not allow_nan:
        v = s.to_numpy()
        if v.dtype.kind == "f" and not np.all(np.mod(v, 1) == 0):
            r = int(np.flatnonzero(np.mod(v, 1) != 0)[0])
            raise DataError(f"{path}: column {col!r}, row {first_row + r + 1}: value {v[r]!r} is not an integer")
        return v.astype(np.int64)
    return s.to_numpy(dtype=np.float64 if dtype is not np.int64 else dtype)


_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised in this process per (path, size, mtime, ctime, inode)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def file_fingerprint(paths: list[Path]) -> str:
    """The data cache key of a recipe's source files: each file's name and SHA-256 of its contents
    (a folder: every file under it). An edit that keeps a file's size and modification time (``cp -p``,
    ``rsync``, ``tar``) changes the key; hashing costs one read of the sources per process
    (benchmarks/cache_key_cost.py)."""
    out = []
    for p in sorted(Path(x) for x in paths):
        if p.is_dir():
            out += [f"{f.relative_to(p.parent).as_posix()}:{_digest(f)}" for f in sorted(p.rglob("*")) if f.is_file()]
        elif p.exists():
            out.append(f"{p.name}:{_digest(p)}")
    return ";".join(out)


def split_joined(values, sep: str, max_len: int | None = None, keep: str = "first"):
    """Delimiter-joined strings (one per row, e.g. ``"Action|Comedy"``) -> ([N, L] object array, lengths).

    Vectorised with pandas' string split + explode; empty or missing strings give length 0.
    ``keep='last'`` keeps the last ``max_len`` values (most recent, for sequences).
    """
    from .sequences import pad_ragged

    s = pd.Series(values, dtype=object).fillna("").astype(str)
    parts = s.str.split(sep, regex=False).explode()
    parts = parts[parts.astype(str).str.len() > 0]
    lens = np.bincount(parts.index.to_numpy(dtype=np.int64), minlength=len(s)).astype(np.int64)
    L = int(max_len or max(1, int(lens.max()) if lens.size else 1))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    return pad_ragged(parts.to_numpy(dtype=object), offsets, L, keep=keep, fill="")
