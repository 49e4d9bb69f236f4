"""Your own data without code: recipes ``table`` and ``log`` (user guide: ``docs/data.md``).

``table``: one flat CSV/TSV/parquet file whose columns are already the features, plus a YAML
schema naming each column's kind and role (and optionally the split).

``log``: an interaction log (user, item, time and optionally a label or a rating) plus optional
user- and item-attribute tables. Instances, behaviour histories, labels (explicit, rating
thresholds, or sampled negatives for implicit logs) and the split are derived with the same
rules and helpers as the built-in recipes (``sequences.history_index``, ``split.*``,
``negatives.sample_negatives``).

Every error names the file and the column, row (data rows counted from 1, header excluded) or
YAML key at fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field as PField, model_validator

from ...errors import ConfigError, DataError
from ..io import numeric_column, read_table, require_columns
from ..negatives import sample_negatives
from ..raw import TEST, TRAIN, VALID, RawDataset
from ..schema import Field, Kind, Role, Schema
from ..sequences import gather, history_index, pad_ragged, sort_events
from ..split import leave_last_out, per_user_chronological, random_split, time_quantile_split
from .base import Recipe
from ._movielens import _lookup

# ---------------------------------------------------------------------------------------------
# column conversions shared by both recipes
# ---------------------------------------------------------------------------------------------


def _row(mask: np.ndarray) -> int:
    """0-based index of the first True."""
    return int(np.flatnonzero(mask)[0])


def _show(x: Any) -> str:
    """repr of a cell for messages (numpy scalars shown as plain Python values)."""
    return repr(x.item() if isinstance(x, np.generic) else x)


def resolve(path: str | Path, data_dir: Path | None) -> Path:
    """``path`` as given, or relative to ``data_dir`` when it is relative and exists there."""
    p = Path(path).expanduser()
    if data_dir is not None and not p.is_absolute() and (data_dir / p).exists():
        return data_dir / p
    return p


def read_input(path: Path, what: str, sep: str) -> tuple[Path, pd.DataFrame]:
    """Read a CSV/TSV (optionally compressed) or parquet file with a clear error when absent or empty.

    ``sep`` ``"\\t"`` or ``"tab"`` means a tab; ``.tsv[.gz]`` files default to tabs.
    """
    p = Path(path)
    if sep in ("\\t", "tab") or (sep == "," and (p.name.endswith(".tsv") or p.name.endswith(".tsv.gz"))):
        sep = "\t"
    df = read_table(p, what, sep=sep)
    return p, df.reset_index(drop=True)


def categorical_values(s: pd.Series) -> np.ndarray:
    """Raw categorical values: int64 when every value is an integer, else strings.

    Missing values become their own category: ``-1`` for integer columns, ``""`` otherwise.
    """
    s = s.reset_index(drop=True)
    missing = s.isna().to_numpy()
    if (pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s)) and not missing.any():
        return s.to_numpy().astype(np.int64)
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = ~missing & (np.mod(np.where(missing, 0, v), 1) == 0)
        if (integral | missing).all():
            return np.where(missing, -1, np.nan_to_num(v)).astype(np.int64)
        out = s.astype(str).to_numpy(dtype=object)
        out[integral] = v[integral].astype(np.int64).astype(str)
        out[missing] = ""
        return out.astype(str)
    out = s.astype(object).where(~missing, "").astype(str).str.strip().to_numpy(dtype=object)
    return out.astype(str)


def numeric_values(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """A float column; missing and non-numeric values are errors naming row and column."""
    miss = df[col].isna().to_numpy()
    if miss.any():
        r = _row(miss)
        raise DataError(f"{path}: column {col!r}, row {r + 1}: missing value (NaN) in a numeric column")
    v = numeric_column(df, col, path, dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        r = _row(bad)
        raise DataError(f"{path}: column {col!r}, row {r + 1}: value {_show(df[col].iloc[r])} is not a finite number")
    return v


def time_values(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Timestamps as numbers: numeric columns as they are, date strings as unix seconds (int64)."""
    s = df[col]
    miss = s.isna().to_numpy()
    if miss.any():
        raise DataError(f"{path}: column {col!r}, row {_row(miss) + 1}: missing timestamp")
    if pd.api.types.is_datetime64_any_dtype(s):
        s = s.dt.tz_localize("UTC") if s.dt.tz is None else s
        return (s - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy().astype(np.int64)
    num = pd.to_numeric(s, errors="coerce")
    if not num.isna().any():
        v = num.to_numpy()
        return v.astype(np.int64) if v.dtype.kind in "iub" or np.all(np.mod(v, 1) == 0) else v.astype(np.float64)
    if 2 * int(num.notna().sum()) > len(s):  # a column of numbers with bad values: blame the first of those
        r = _row(num.isna().to_numpy())
        raise DataError(f"{path}: column {col!r}, row {r + 1}: {_show(s.iloc[r])} is not a number (the other "
                        f"timestamps of the column are numbers)")
    dt = pd.to_datetime(s, errors="coerce", utc=True)
    if dt.isna().any():  # the format inferred from the first value does not fit all: parse each value
        dt = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
    bad = dt.isna().to_numpy()
    if bad.any():
        r = _row(bad)
        raise DataError(f"{path}: column {col!r}, row {r + 1}: {_show(s.iloc[r])} is neither a number nor a date")
    return (dt - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy().astype(np.int64)


def label_values(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """A 0/1 label column (numbers or booleans); other values are errors naming the row."""
    s = df[col]
    miss = s.isna().to_numpy()
    if miss.any():
        raise DataError(f"{path}: label column {col!r}, row {_row(miss) + 1}: missing label")
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy().astype(np.int8)
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((v == 0) | (v == 1))
    if bad.any():
        r = _row(bad)
        raise DataError(f"{path}: label column {col!r}, row {r + 1}: value {_show(s.iloc[r])} is not 0 or 1")
    return v.astype(np.int8)


def sample_valid_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int, per_row: int,
                           pos_users: np.ndarray, pos_items: np.ndarray, probs: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~ctrgraph.data.negatives.sample_negatives` plus a mask of the draws that are valid.

    Users who interacted with (nearly) every item can keep a collision after the redraw rounds;
    those draws are marked False so that callers drop them instead of emitting a false negative.
    """
    neg = sample_negatives(rng, users, n_items, per_row, pos_users, pos_items, probs=probs, max_rounds=50)
    keys = np.unique(np.asarray(pos_users, dtype=np.int64) * n_items + np.asarray(pos_items, dtype=np.int64))
    if keys.size == 0:
        return neg, np.ones(neg.shape, dtype=bool)
    k = np.asarray(users, dtype=np.int64)[:, None] * n_items + neg
    return neg, keys[np.minimum(np.searchsorted(keys, k), keys.size - 1)] != k


def interleave(n: int, per_row: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``positive, its negatives, ...`` without the invalid negatives.

    Returns (source instance of each row, column in [0, 1 + per_row) (0 = the positive), label).
    """
    keep = np.concatenate([np.ones((n, 1), dtype=bool), ok], axis=1).reshape(-1)
    src = np.repeat(np.arange(n), 1 + per_row)[keep]
    col = np.tile(np.arange(1 + per_row), n)[keep]
    return src, col, (col == 0).astype(np.int8)


def split_tokens(s: pd.Series, sep: str, max_len: int | None, keep: str, path: Path, col: str,
                 numeric: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delimiter-joined strings -> ([N, L] values, lengths, untruncated lengths).

    Tokens are stripped, empty tokens dropped, a missing cell is an empty list. Tokens become
    int64 when all are integers (so ``"12|7"`` shares a vocabulary with an integer item column),
    float64 with ``numeric`` (an error names the row otherwise), else strings (``"1.0"`` stays a
    string: it would not match the integer 1 of a categorical column anyway). ``keep='last'``
    keeps the tail of over-long lists (sequences: the most recent), ``'first'`` the head.
    """
    s = s.reset_index(drop=True)
    n = len(s)
    text = s.astype(object).where(s.notna(), "").astype(str)
    parts = text.str.split(sep, regex=False).explode().astype(str).str.strip()
    parts = parts[parts.str.len() > 0]
    rows = parts.index.to_numpy(dtype=np.int64)
    full = np.bincount(rows, minlength=n).astype(np.int64)
    num = pd.to_numeric(parts, errors="coerce")
    if num.dtype.kind == "i":  # all tokens are integers that fit int64: exact (no float round trip)
        values, fill = num.to_numpy(dtype=np.int64), 0
    elif numeric:
        f = num.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(f)
        if bad.any():
            i = _row(bad)
            raise DataError(f"{path}: column {col!r}, row {rows[i] + 1}: element {parts.iloc[i]!r} is not a number")
        values, fill = f, 0.0
    else:
        values, fill = parts.to_numpy(dtype=object), ""
    L = int(max_len or max(1, int(full.max()) if n else 1))
    offsets = np.concatenate([[0], np.cumsum(full)])
    out, lens = pad_ragged(values, offsets, L, keep=keep, fill=fill)
    if out.dtype == object:
        out = out.astype(str)
    return out, lens, full


# ---------------------------------------------------------------------------------------------
# recipe ``table``: flat file + YAML schema
# ---------------------------------------------------------------------------------------------

TOP_KEYS = {"label", "fields", "split", "description"}
FIELD_KEYS = {"name", "column", "kind", "role", "vocab", "max_len", "target", "group", "embed", "sep", "keep"}
SPLIT_KEYS = {
    "random": {"valid", "test", "seed", "stratify"},
    "column": {"column"},
    "per_user_chronological": {"user", "time", "valid", "test", "min_events"},
    "leave_last_out": {"user", "time"},
    "time_quantile": {"time", "test_quantile", "valid_quantile"},
}
SPLIT_VALUES = {"train": TRAIN, "valid": VALID, "validation": VALID, "val": VALID, "test": TEST}


class TableParams(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)
    path: str = PField(description="CSV/TSV (optionally .gz) or parquet file, one instance per row; or a "
                                   "partitioned parquet folder (Spark / Hive / Ray), encoded part by part")
    schema_path: str | dict = PField(alias="schema", description="YAML schema file (or the same mapping inline)")
    sep: str = PField(",", description="CSV column separator (ignored for parquet)")
    batch_rows: int = PField(1_000_000, ge=1, description="rows per part when path is a parquet folder")


@dataclass
class ColumnSpec:
    """One YAML field entry: the schema Field plus how to read its column."""

    field: dict
    column: str
    sep: str
    keep: str


def _type_check(where: str, key: str, value: Any, types: tuple, what: str) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigError(f"{where}: key {key!r} must be {what}, got {value!r}")


def load_table_schema(spec: str | Path | dict) -> tuple[dict, str]:
    """Read and check the YAML schema; returns (mapping, a name for messages)."""
    if isinstance(spec, dict):
        doc, where = spec, "schema"
    else:
        import yaml

        p = Path(spec).expanduser()
        if not p.exists():
            raise DataError(f"table schema: file not found: {p}")
        try:
            doc = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        where = str(p)
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: the schema must be a mapping with keys {sorted(TOP_KEYS)}")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(TOP_KEYS)}")
    for key in ("label", "fields"):
        if key not in doc:
            raise ConfigError(f"{where}: missing key {key!r}")
    _type_check(where, "label", doc["label"], (str,), "a column name")
    if not isinstance(doc["fields"], list) or not doc["fields"]:
        raise ConfigError(f"{where}: key 'fields' must be a non-empty list of field mappings")
    return doc, where


def _field_specs(doc: dict, where: str) -> list[ColumnSpec]:
    kinds, roles = [k.value for k in Kind], [r.value for r in Role]
    specs = []
    for i, f in enumerate(doc["fields"]):
        at = f"{where}: fields[{i}]"
        if not isinstance(f, dict):
            raise ConfigError(f"{at}: must be a mapping such as {{name: user, kind: categorical, role: user}}")
        unknown = sorted(set(f) - FIELD_KEYS)
        if unknown:
            raise ConfigError(f"{at} ({f.get('name', '?')!r}): unknown key(s) {unknown}; known: {sorted(FIELD_KEYS)}")
        for key in ("name", "kind", "role"):
            if key not in f:
                raise ConfigError(f"{at}: missing key {key!r}")
        _type_check(at, "name", f["name"], (str,), "a string")
        at = f"{where}: field {f['name']!r}"
        if f["kind"] not in kinds:
            raise ConfigError(f"{at}: key 'kind' must be one of {kinds}, got {f['kind']!r}")
        if f["role"] not in roles:
            raise ConfigError(f"{at}: key 'role' must be one of {roles}, got {f['role']!r}")
        if f["role"] == Role.LABEL.value or f["name"] == "label":
            raise ConfigError(f"{at}: the label is given by the top-level key 'label' (its field is always "
                              f"named 'label'); do not list it under 'fields'")
        for key in ("column", "vocab", "target", "group"):
            if key in f:
                _type_check(at, key, f[key], (str,), "a string")
        if "max_len" in f:
            _type_check(at, "max_len", f["max_len"], (int,), "a positive integer")
            if f["max_len"] < 1:
                raise ConfigError(f"{at}: key 'max_len' must be a positive integer, got {f['max_len']!r}")
        if "embed" in f:
            _type_check(at, "embed", f["embed"], (bool,), "true or false")
        seq = f["kind"] in (Kind.SEQUENCE.value, Kind.MULTI_VALUED.value)
        for key in ("sep", "keep", "max_len"):
            if key in f and not seq:
                raise ConfigError(f"{at}: key {key!r} applies to sequence and multi_valued fields only")
        sep = f.get("sep", "|")
        _type_check(at, "sep", sep, (str,), "a non-empty string")
        if not sep:
            raise ConfigError(f"{at}: key 'sep' must be a non-empty string")
        keep = f.get("keep", "last" if f["kind"] == Kind.SEQUENCE.value else "first")
        if keep not in ("first", "last"):
            raise ConfigError(f"{at}: key 'keep' must be 'first' or 'last', got {keep!r}")
        field = {k: v for k, v in f.items() if k not in ("column", "sep", "keep")}
        specs.append(ColumnSpec(field, f.get("column", f["name"]), sep, keep))
    return specs


def _split_spec(doc: dict, where: str) -> dict:
    sp = doc.get("split") or {"method": "random"}
    if not isinstance(sp, dict) or "method" not in sp:
        raise ConfigError(f"{where}: key 'split' must be a mapping with a 'method' (one of {sorted(SPLIT_KEYS)})")
    if sp["method"] not in SPLIT_KEYS:
        raise ConfigError(f"{where}: split.method must be one of {sorted(SPLIT_KEYS)}, got {sp['method']!r}")
    unknown = sorted(set(sp) - SPLIT_KEYS[sp["method"]] - {"method"})
    if unknown:
        raise ConfigError(f"{where}: split ({sp['method']}): unknown key(s) {unknown}; "
                          f"known: {sorted(SPLIT_KEYS[sp['method']])}")
    for key in ("valid", "test", "test_quantile"):
        if key in sp:
            _type_check(f"{where}: split", key, sp[key], (int, float), "a number in [0, 1)")
            if not 0 <= sp[key] < 1:
                raise ConfigError(f"{where}: split.{key} must be in [0, 1), got {sp[key]!r}")
    if sp.get("valid_quantile") is not None:
        _type_check(f"{where}: split", "valid_quantile", sp["valid_quantile"], (int, float), "a number or null")
    for key in ("column", "user", "time"):
        if key in sp:
            _type_check(f"{where}: split", key, sp[key], (str,), "a column name")
    if sp["method"] in ("column",) and "column" not in sp:
        raise ConfigError(f"{where}: split.method 'column' needs key 'column' (values train/valid/test)")
    if sp["method"] in ("per_user_chronological", "leave_last_out", "time_quantile") and "time" not in sp:
        raise ConfigError(f"{where}: split.method {sp['method']!r} needs key 'time' (a timestamp column)")
    return sp


def _table_split(sp: dict, df: pd.DataFrame, path: Path, fields: list[Field], specs: list[ColumnSpec],
                 label: np.ndarray, where: str) -> np.ndarray:
    n = len(df)
    method = sp["method"]
    if method == "random":
        return random_split(n, sp.get("valid", 0.1), sp.get("test", 0.1), seed=int(sp.get("seed", 0)),
                            stratify=label if sp.get("stratify", False) else None)
    if method == "column":
        col = sp["column"]
        s = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip().str.lower()
        code = s.map(SPLIT_VALUES)
        bad = code.isna().to_numpy()
        if bad.any():
            r = _row(bad)
            raise DataError(f"{path}: split column {col!r}, row {r + 1}: value {_show(df[col].iloc[r])} is not one of "
                            f"train/valid/test")
        return code.to_numpy().astype(np.int8)
    ts = time_values(df, sp["time"], path)
    if method == "time_quantile":
        return time_quantile_split(ts, sp.get("test_quantile", 0.8), sp.get("valid_quantile", 0.7))
    col_of = {s.field["name"]: s.column for s in specs}
    ucol = sp.get("user")
    if ucol is None:
        users = [f for f in fields if f.role == Role.USER]
        if not users:
            raise ConfigError(f"{where}: split.method {method!r} needs key 'user' (no field has role 'user')")
        ucol = col_of[users[0].name]
    user = categorical_values(df[ucol])
    items = [f for f in fields if f.role == Role.ITEM and f.kind == Kind.CATEGORICAL]
    keys = [pd.factorize(user, sort=True)[0], ts]
    if items:
        keys.append(pd.factorize(categorical_values(df[col_of[items[0].name]]), sort=True)[0])
    if method == "leave_last_out":
        return leave_last_out(*keys)
    return per_user_chronological(*keys, valid=sp.get("valid", 0.1), test=sp.get("test", 0.1),
                                  min_events=int(sp.get("min_events", 3)))


def sources_table(p: TableParams, data_dir: Path | None) -> list[Path]:
    out = [resolve(p.path, data_dir)]
    if isinstance(p.schema_path, str):
        out.append(resolve(p.schema_path, data_dir))
    return out


def _table_spec(p: TableParams, data_dir: Path | None) -> tuple[dict, str, list[ColumnSpec], dict, list[str]]:
    """The checked YAML schema: (mapping, its name, column specs, split spec, columns to read)."""
    schema = p.schema_path if isinstance(p.schema_path, dict) else resolve(p.schema_path, data_dir)
    doc, where = load_table_schema(schema)
    specs = _field_specs(doc, where)
    sp = _split_spec(doc, where)
    leak = [s.field["name"] for s in specs if s.column == doc["label"]]
    if leak:
        raise ConfigError(f"{where}: field {leak[0]!r} reads the label column {doc['label']!r}; a label cannot be "
                          f"a feature")
    need = [doc["label"]] + [s.column for s in specs] + [sp[k] for k in ("column", "user", "time") if k in sp]
    return doc, where, specs, sp, list(dict.fromkeys(need))


def build_table(p: TableParams, data_dir: Path | None) -> RawDataset:
    doc, where, specs, sp, need = _table_spec(p, data_dir)
    src = resolve(p.path, data_dir)
    if src.is_dir():  # a partitioned parquet folder, read whole (the streamed path: ``chunks_table``)
        return _concat_chunks(list(chunks_table(p, data_dir)))
    path, df = read_input(src, "table", p.sep)
    require_columns(df, need, path, "table")
    return _table_rows(df, path, doc, where, specs, sp)


class Tokens:
    """A list column already split (Arrow list arrays): flat ``values`` and row ``offsets`` [N + 1]."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    def padded(self, max_len: int | None, keep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        full = np.diff(self.offsets)
        L = int(max_len or max(1, int(full.max()) if full.size else 1))
        out, lens = pad_ragged(self.values, self.offsets, L, keep=keep, fill=0 if self.values.dtype.kind in "iuf" else "")
        return (out.astype(str) if out.dtype == object else out), lens, full


def _table_rows(df: pd.DataFrame, path: Path, doc: dict, where: str, specs: list[ColumnSpec], sp: dict,
                split: np.ndarray | None = None, tokens: dict[str, Tokens] | None = None) -> RawDataset:
    """The rows of ``df`` as a RawDataset (``split`` given: the streamed path's own split; ``tokens``:
    list columns given split, read without a string round trip)."""
    tokens = tokens or {}
    specs = [ColumnSpec(dict(s.field), s.column, s.sep, s.keep) for s in specs]  # widths are set per call

    cols: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    full: dict[str, np.ndarray] = {}
    by_name = {s.field["name"]: s for s in specs}
    # main sequences before their parallel ones, so that a parallel field inherits max_len
    ordered = sorted(specs, key=lambda s: s.field.get("group") is not None)
    for s in ordered:
        f = dict(s.field)
        name, kind = f["name"], Kind(f["kind"])
        embed = f.get("embed", True)
        if kind == Kind.NUMERIC:
            cols[name] = numeric_values(df, s.column, path)
        elif kind == Kind.CATEGORICAL:
            cols[name] = categorical_values(df[s.column]) if embed else _raw_values(df, s.column, path)
        else:
            g = f.get("group")
            keep = by_name[g].keep if g in by_name else s.keep  # parallel sequences truncate like their group
            if "max_len" not in f and g in lengths:  # ... and inherit its length
                f["max_len"] = cols[g].shape[1]
            if s.column in tokens:
                cols[name], lengths[name], full[name] = tokens[s.column].padded(f.get("max_len"), keep)
            else:
                cols[name], lengths[name], full[name] = split_tokens(
                    df[s.column], s.sep, f.get("max_len"), keep, path, s.column, numeric=not embed)
            s.field = {**s.field, "max_len": int(cols[name].shape[1])}
    for s in specs:
        g = s.field.get("group")
        if g is not None and g in full:
            bad = full[s.field["name"]] != full[g]
            if bad.any():
                r = _row(bad)
                raise DataError(f"{path}: row {r + 1}: column {s.column!r} has {int(full[s.field['name']][r])} "
                                f"elements but its group {by_name[g].column!r} has {int(full[g][r])}")
    fields = [Field.from_dict(s.field) for s in specs]
    label = label_values(df, doc["label"], path)
    cols["label"] = label
    fields.append(Field("label", Kind.NUMERIC, Role.LABEL))
    schema = Schema(tuple(fields), label="label", description=str(doc.get("description", f"table {path.name}")))
    split = _table_split(sp, df, path, fields, specs, label, where) if split is None else split
    return RawDataset(schema, cols, lengths, split,
                      meta={"source": str(path), "instances": len(df), "positives": int(label.sum()),
                            "split_method": sp["method"]})


#: split methods that need no other rows than a part's own (a streamed table is read part by part)
STREAMABLE_SPLITS = ("column", "random")


def _parquet_parts(src: Path, columns: list[str], batch_rows: int):
    """(frame, list columns as :class:`Tokens`) per record batch of a partitioned parquet folder
    (Spark / Hive / Ray layout: ``key=value`` sub-folders become columns); no Python loop over rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        dset = ds.dataset(str(src), format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{src}: not a readable parquet folder ({str(e).splitlines()[0][:200]})") from None
    missing = [c for c in columns if c not in dset.schema.names]
    if missing:
        raise DataError(f"{src}: column(s) {missing} not found; the parquet folder has {dset.schema.names}")
    for batch in dset.to_batches(columns=columns, batch_size=batch_rows):
        if batch.num_rows == 0:
            continue
        cols, tokens = {}, {}
        for name in batch.schema.names:
            a = batch.column(name)
            if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
                a = pc.fill_null(a, pa.scalar([], type=a.type))  # a missing list is an empty one
                flat = pc.list_flatten(a)
                vals = flat.to_numpy(zero_copy_only=False)
                if vals.dtype == object:
                    vals = vals.astype(str)
                off = np.concatenate([[0], np.cumsum(pc.list_value_length(a).to_numpy(zero_copy_only=False))])
                tokens[name] = Tokens(vals, off.astype(np.int64))
                a = pa.nulls(len(a))
            cols[name] = a
        yield pa.table(cols).to_pandas(), tokens


def chunks_table(p: TableParams, data_dir: Path | None):
    """The ``table`` recipe part by part when ``path`` is a parquet folder (``None`` otherwise):
    ``batch_rows`` rows at a time, each with its own split (``column``: as given; ``random``: seeded by
    (seed, part number)). Every sequence field needs a ``max_len`` so that all parts have one width."""
    src = resolve(p.path, data_dir)
    if not src.is_dir():
        return None
    doc, where, specs, sp, need = _table_spec(p, data_dir)
    if sp["method"] not in STREAMABLE_SPLITS:
        raise ConfigError(f"{where}: split.method {sp['method']!r} needs the whole table; a parquet folder is read "
                          f"part by part: write the split as a column (split.method: column) or use random")
    wide = [s.field["name"] for s in specs if s.field["kind"] in (Kind.SEQUENCE.value, Kind.MULTI_VALUED.value)
            and "max_len" not in s.field and not s.field.get("group")]
    if wide:
        raise ConfigError(f"{where}: field(s) {wide} need a max_len when the table is a parquet folder "
                          f"(every part must have the same width)")

    def parts():
        for i, (df, tokens) in enumerate(_parquet_parts(src, need, p.batch_rows)):
            split = None
            if sp["method"] == "random":
                lab = label_values(df, doc["label"], src) if sp.get("stratify", False) else None
                split = random_split(len(df), sp.get("valid", 0.1), sp.get("test", 0.1),
                                     seed=int(sp.get("seed", 0)) * 1_000_003 + i, stratify=lab)
            yield _table_rows(df, src, doc, where, specs, sp, split, tokens)

    return parts()


def _concat_chunks(chunks: list[RawDataset]) -> RawDataset:
    if not chunks:
        raise DataError("table: the parquet folder has no rows")
    first = chunks[0]
    cols = {k: np.concatenate([c.columns[k] for c in chunks]) for k in first.columns}
    lengths = {k: np.concatenate([c.lengths[k] for c in chunks]) for k in first.lengths}
    split = np.concatenate([c.split for c in chunks])
    meta = dict(first.meta, instances=int(split.size), positives=int(sum(c.meta["positives"] for c in chunks)))
    return RawDataset(first.schema, cols, lengths, split, meta)


def _raw_values(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """A non-embedded categorical column (ids kept raw): numbers when numeric, else strings."""
    if pd.api.types.is_numeric_dtype(df[col]):
        return numeric_column(df, col, path, dtype=np.float64) if df[col].dtype.kind == "f" \
            else numeric_column(df, col, path)
    return categorical_values(df[col])


# ---------------------------------------------------------------------------------------------
# recipe ``log``: interaction log + attribute tables
# ---------------------------------------------------------------------------------------------

RESERVED = {"user_id", "item_id", "hist_item_id", "hist_ts", "timestamp", "hour", "weekday", "label"}


class LogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = PField(description="interaction log (CSV/TSV, optionally .gz, or parquet)")
    sep: str = PField(",", description="CSV column separator of all files")
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = PField("timestamp", description="unix seconds, numbers or dates; None: file order")
    label_col: str | None = PField(None, description="explicit 0/1 label column")
    rating_col: str | None = PField(None, description="rating column, labelled with positive_min/negative_max")
    positive_min: float = PField(4.0, description="rating >= positive_min -> label 1")
    negative_max: float | None = PField(None, description="rating <= negative_max -> 0, ratings between dropped; "
                                                          "None: every rating < positive_min is 0")
    negatives_per_positive: int = PField(1, ge=1, description="implicit logs: sampled negatives per event")
    seed: int = PField(0, description="seed of negative sampling and of the random split")
    user_attrs: str | None = PField(None, description="user attribute table (key column + attributes)")
    item_attrs: str | None = PField(None, description="item attribute table (key column + attributes)")
    user_key: str | None = PField(None, description="key column of user_attrs (default: user_col)")
    item_key: str | None = PField(None, description="key column of item_attrs (default: item_col)")
    multi_valued: dict[str, str] = PField({}, description="attribute column -> separator (multi-valued field)")
    multi_max_len: dict[str, int] = PField({}, description="attribute column -> max values kept (default: longest)")
    ignore_columns: list[str] = PField([], description="attribute-table columns to leave out (e.g. titles)")
    missing_attrs: Literal["error", "fill"] = PField("error", description="log keys absent from an attribute "
                                                                          "table: error, or fill -1 / '' / empty")
    history_attrs: list[str] | None = PField(None, description="item attributes also given per behaviour as "
                                                               "hist_<name> (None: all)")
    max_len: int = PField(50, ge=1, description="history length cap (most recent kept)")
    min_history: int = PField(0, ge=0, description="drop instances with fewer earlier positives")
    time_features: bool = PField(False, description="add hour and weekday (UTC) of unix-second timestamps")
    split: Literal["per_user_chronological", "random", "leave_last_out", "time_quantile"] = "per_user_chronological"
    valid: float = PField(0.1, ge=0, lt=1)
    test: float = PField(0.1, ge=0, lt=1)
    stratify: bool = PField(False, description="random split: per label class")
    test_quantile: float = PField(0.8, gt=0, lt=1)
    valid_quantile: float | None = PField(0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "LogParams":
        if self.label_col and self.rating_col:
            raise ValueError("give label_col or rating_col, not both")
        if self.negative_max is not None and self.negative_max >= self.positive_min:
            raise ValueError(f"negative_max ({self.negative_max}) must be smaller than positive_min "
                             f"({self.positive_min})")
        if self.min_history > self.max_len:
            raise ValueError("min_history must not exceed max_len")
        if self.split == "time_quantile" and self.valid_quantile is not None \
                and self.valid_quantile >= self.test_quantile:
            raise ValueError("valid_quantile must be smaller than test_quantile")
        return self


def sources_log(p: LogParams, data_dir: Path | None) -> list[Path]:
    return [resolve(x, data_dir) for x in (p.path, p.user_attrs, p.item_attrs) if x]


@dataclass
class AttrTable:
    """An attribute table: sorted-able keys and per-row attribute arrays."""

    keys: np.ndarray
    cols: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]  # multi-valued columns only
    path: Path


def _same_kind(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys of the log and of a table compared as integers when both are, else as strings."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return a, b
    return a.astype(str), b.astype(str)


def read_attrs(path: Path, key: str, p: LogParams, what: str) -> AttrTable:
    f, df = read_input(path, what, p.sep)
    require_columns(df, [key], f, what)
    keys = categorical_values(df[key])
    miss = df[key].isna().to_numpy()
    if miss.any():
        raise DataError(f"{f}: key column {key!r}, row {_row(miss) + 1}: missing key")
    u, first, cnt = np.unique(keys, return_index=True, return_counts=True)
    if (cnt > 1).any():
        k = u[cnt > 1][0]
        rows = np.flatnonzero(keys == k)[:2] + 1
        raise DataError(f"{f}: key column {key!r}: {_show(k)} appears more than once (rows {rows[0]} and {rows[1]})")
    cols, lengths = {}, {}
    for c in df.columns:
        if c == key or c in p.ignore_columns:
            continue
        if c in RESERVED:
            raise DataError(f"{f}: attribute column {c!r} clashes with a generated field name; rename it")
        if c in p.multi_valued:
            cols[c], lengths[c], _ = split_tokens(df[c], p.multi_valued[c], p.multi_max_len.get(c), "first", f, c)
        else:
            cols[c] = categorical_values(df[c])
    if not cols:
        raise DataError(f"{f}: no attribute columns besides the key {key!r}")
    return AttrTable(keys, cols, lengths, f)


def _attr_rows(t: AttrTable, keys: np.ndarray, what: str, missing: str) -> np.ndarray:
    """Row of each key in the table; -1 for absent keys with ``missing='fill'`` (else an error)."""
    k, tk = _same_kind(keys, t.keys)
    if missing == "error":
        return _lookup(tk, k, what, str(t.path))
    return pd.Index(tk).get_indexer(k)


def _attr_take(t: AttrTable, col: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Attribute values at ``rows`` (-1 = absent: -1 / '' / empty list)."""
    v = t.cols[col]
    absent = rows < 0
    out = v[np.maximum(rows, 0)]
    ln = t.lengths[col][np.maximum(rows, 0)] if col in t.lengths else None
    if absent.any():
        if ln is not None:
            ln = np.where(absent, 0, ln)
        else:
            out = out.copy()
            out[absent] = -1 if out.dtype.kind in "iu" else ""
    return out, ln


def build_log(p: LogParams, data_dir: Path | None) -> RawDataset:
    path, df = read_input(resolve(p.path, data_dir), "log", p.sep)
    need = [p.user_col, p.item_col] + [c for c in (p.time_col, p.label_col, p.rating_col) if c]
    require_columns(df, need, path, "log")
    for c in (p.user_col, p.item_col):
        miss = df[c].isna().to_numpy()
        if miss.any():
            raise DataError(f"{path}: column {c!r}, row {_row(miss) + 1}: missing id")
    user = categorical_values(df[p.user_col])
    item = categorical_values(df[p.item_col])
    ts = time_values(df, p.time_col, path) if p.time_col else np.arange(len(df), dtype=np.int64)
    implicit = not (p.label_col or p.rating_col)
    if p.label_col:
        label = label_values(df, p.label_col, path)
        keep = np.ones(len(df), dtype=bool)
    elif p.rating_col:
        rating = numeric_values(df, p.rating_col, path)
        label = (rating >= p.positive_min).astype(np.int8)
        keep = (rating >= p.positive_min) | (rating <= p.negative_max if p.negative_max is not None else True)
    else:
        label = np.ones(len(df), dtype=np.int8)
        keep = np.ones(len(df), dtype=bool)
    if not keep.any():
        raise DataError(f"{path}: no rating is >= positive_min ({p.positive_min}) or <= negative_max "
                        f"({p.negative_max})")
    user, item, ts, label = user[keep], item[keep], ts[keep], label[keep]

    # codes whose order is the order of the raw values: ties are broken by item id
    ucode, users = pd.factorize(user, sort=True)
    icode, items = pd.factorize(item, sort=True)
    users, items = (np.asarray(a) if np.asarray(a).dtype != object else np.asarray(a).astype(str)
                    for a in (users, items))
    order = sort_events(ucode, ts, icode)
    ucode, icode, ts, label = ucode[order], icode[order], ts[order], label[order]
    idx, lens = history_index(ucode, label.astype(bool), p.max_len)
    inst = np.flatnonzero(lens >= p.min_history)
    if inst.size == 0:
        raise DataError(f"{path}: no event has {p.min_history} earlier positives (min_history)")

    n_dropped = 0
    if implicit:
        rng = np.random.default_rng(p.seed)
        neg, ok = sample_valid_negatives(rng, ucode[inst], items.size, p.negatives_per_positive, ucode, icode)
        pos_of, which, lab = interleave(inst.size, p.negatives_per_positive, ok)
        cand = np.concatenate([icode[inst][:, None], neg], axis=1)[pos_of, which]
        n_dropped = int((~ok).sum())
    else:
        pos_of, cand, lab = np.arange(inst.size), icode[inst], label[inst]
    rep = inst[pos_of]

    cols: dict[str, np.ndarray] = {"user_id": users[ucode[rep]], "item_id": items[cand]}
    fields = [Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM)]
    lengths: dict[str, np.ndarray] = {}
    ut = it = None
    if p.user_attrs:
        t = ut = read_attrs(resolve(p.user_attrs, data_dir), p.user_key or p.user_col, p, "user attributes")
        rows = _attr_rows(t, users, "user", p.missing_attrs)[ucode[rep]]
        for c in t.cols:
            cols[c], ln = _attr_take(t, c, rows)
            kind = Kind.CATEGORICAL if ln is None else Kind.MULTI_VALUED
            fields.append(Field(c, kind, Role.USER_ATTR, max_len=0 if ln is None else t.cols[c].shape[1]))
            if ln is not None:
                lengths[c] = ln
    hist_attrs: list[tuple[str, np.ndarray]] = []
    if p.item_attrs:
        t = it = read_attrs(resolve(p.item_attrs, data_dir), p.item_key or p.item_col, p, "item attributes")
        irows = _attr_rows(t, items, "item", p.missing_attrs)
        wanted = list(t.cols) if p.history_attrs is None else p.history_attrs
        unknown = [c for c in wanted if c not in t.cols]
        if unknown:
            raise ConfigError(f"history_attrs: {unknown} are not columns of {t.path} (it has {list(t.cols)})")
        for c in t.cols:
            cols[c], ln = _attr_take(t, c, irows[cand])
            kind = Kind.CATEGORICAL if ln is None else Kind.MULTI_VALUED
            fields.append(Field(c, kind, Role.ITEM_ATTR, max_len=0 if ln is None else t.cols[c].shape[1]))
            if ln is not None:
                lengths[c] = ln
            if c in wanted:  # the attribute of each behaviour (multi-valued: its first value, as hist_genre)
                v, vl = _attr_take(t, c, irows)
                if vl is not None:
                    v = v[:, 0].copy()
                    v[vl == 0] = -1 if v.dtype.kind in "iu" else ""
                hist_attrs.append((c, v[icode]))
    if p.history_attrs and not p.item_attrs:
        raise ConfigError("history_attrs needs item_attrs (an item attribute table)")
    attr_cols = set(ut.cols if ut else ()) | set(it.cols if it else ())
    for key, names in (("multi_valued", p.multi_valued), ("multi_max_len", p.multi_max_len)):
        unknown = sorted(set(names) - attr_cols)
        if unknown:
            raise ConfigError(f"{key}: {unknown} are not attribute columns (they have {sorted(attr_cols)})")
    if p.time_features:
        if ts.dtype.kind == "f":
            raise ConfigError("time_features needs integer unix-second timestamps")
        cols["hour"] = (ts[rep] // 3600) % 24
        cols["weekday"] = (ts[rep] // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        fields += [Field("hour", Kind.CATEGORICAL, Role.CONTEXT), Field("weekday", Kind.CATEGORICAL, Role.CONTEXT)]

    # histories: one index row per output row (negatives share their positive's history)
    hidx, hl = idx[rep], lens[rep]
    del idx
    L = p.max_len
    cols["hist_item_id"] = gather(items[icode], hidx, hl)
    fields.append(Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=L, target="item_id"))
    for c, v in hist_attrs:
        cols[f"hist_{c}"] = gather(v, hidx, hl, fill=v[0])
        fields.append(Field(f"hist_{c}", Kind.SEQUENCE, Role.BEHAVIOR, vocab=c, max_len=L, target=c,
                            group="hist_item_id"))
    cols["hist_ts"] = gather(ts, hidx, hl)
    fields.append(Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False))
    lengths.update({k: hl for k in ["hist_item_id", *(f"hist_{c}" for c, _ in hist_attrs), "hist_ts"]})
    cols["timestamp"] = ts[rep]
    cols["label"] = lab
    fields += [Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False), Field("label", Kind.NUMERIC, Role.LABEL)]

    # the split: computed on the events (positives for implicit logs); negatives follow their positive
    u_e, t_e, i_e = ucode[inst], ts[inst], icode[inst]
    if p.split == "per_user_chronological":
        split = per_user_chronological(u_e, t_e, i_e, valid=p.valid, test=p.test)
    elif p.split == "leave_last_out":
        split = leave_last_out(u_e, t_e, i_e)
    elif p.split == "time_quantile":
        split = time_quantile_split(t_e, p.test_quantile, p.valid_quantile)
    else:
        split = random_split(inst.size, p.valid, p.test, seed=p.seed,
                             stratify=label[inst] if p.stratify and not implicit else None)
    split = split[pos_of]
    mode = "implicit (sampled negatives)" if implicit else ("label column" if p.label_col else "rating thresholds")
    meta = {"source": str(path), "events": int(keep.sum()), "instances": int(rep.size), "positives": int(lab.sum()),
            "labels": mode, "users": int(len(users)), "items": int(items.size),
            "negatives_dropped": n_dropped}
    return RawDataset(Schema(tuple(fields), label="label", description=f"log {path.name}"), cols, lengths, split,
                      meta=meta)


TABLE_RECIPE = Recipe("table", "your own flat CSV/parquet file (or partitioned parquet folder) described by a YAML schema",
                      TableParams, build_table, sources_table, chunks=chunks_table)


LOG_RECIPE = Recipe("log", ("your own interaction log (+ user/item attribute tables): histories, labels, "
           "negatives and split derived"), LogParams, build_log, sources_log)
