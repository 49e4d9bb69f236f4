"""The output of a recipe: raw (unencoded) columns, a schema and a split.

Columns are numpy arrays: 1-D ``[N]`` for categorical and numeric fields, 2-D ``[N, max_len]``
plus a length array for multi-valued and sequence fields (values first, then padding whose
content is ignored). Raw values may be integers or strings; the encoder maps them to ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .schema import Kind, Role, Schema

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass
class RawDataset:
    """Unencoded instances of one recipe.

    Attributes:
        schema: the fields.
        columns: field name -> raw values (see module docstring).
        lengths: sequence/multi-valued field name -> int array [N] of true lengths.
        split: int8 array [N] with 0 = train, 1 = valid, 2 = test.
        meta: free-form provenance (recipe, parameters, counts).
    """

    schema: Schema
    columns: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    split: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.split.shape[0])

    def validate(self, source: str = "data") -> None:
        """Check shapes, lengths, labels and numeric values; raise :class:`DataError` naming the field and row."""
        n = len(self)
        if n == 0:
            raise DataError(f"{source}: no instances (empty input)")
        for f in self.schema.fields:
            if f.name not in self.columns:
                raise DataError(f"{source}: field {f.name!r} has no column")
            col = self.columns[f.name]
            if col.shape[0] != n:
                raise DataError(f"{source}: column {f.name!r} has {col.shape[0]} rows, expected {n}")
            if f.is_sequence_like:
                if col.ndim != 2 or col.shape[1] != f.max_len:
                    raise DataError(f"{source}: field {f.name!r} must be [N, {f.max_len}], got {col.shape}")
                ln = self.lengths.get(f.name)
                if ln is None:
                    raise DataError(f"{source}: field {f.name!r} has no lengths")
                bad = np.flatnonzero((ln < 0) | (ln > f.max_len))
                if bad.size:
                    raise DataError(f"{source}: field {f.name!r}, row {int(bad[0])}: length {int(ln[bad[0]])} "
                                    f"outside [0, {f.max_len}]")
            elif col.ndim != 1:
                raise DataError(f"{source}: field {f.name!r} must be 1-D, got shape {col.shape}")
            if f.kind == Kind.NUMERIC or (not f.embed and col.dtype.kind == "f"):
                if col.dtype.kind not in "fiub":
                    raise DataError(f"{source}: numeric field {f.name!r} has non-numeric dtype {col.dtype}")
                if col.dtype.kind == "f":
                    bad = np.flatnonzero(np.isnan(col).reshape(n, -1).any(axis=1))
                    if bad.size:
                        raise DataError(f"{source}: field {f.name!r}, row {int(bad[0])}: value is NaN")
        lab = self.columns[self.schema.label]
        ok = (lab == 0) | (lab == 1)
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise DataError(f"{source}: label {self.schema.label!r}, row {r}: value {lab[r]!r} is not 0 or 1")
        if self.split.shape != (n,):
            raise DataError(f"{source}: split has shape {self.split.shape}, expected ({n},)")
        if not (self.split == TRAIN).any():
            raise DataError(f"{source}: the train split is empty")

    def counts(self) -> dict[str, int]:
        return {SPLIT_NAMES[k]: int((self.split == k).sum()) for k in SPLIT_NAMES}

    def label_field(self):
        return self.schema[self.schema.label]

    def users(self) -> np.ndarray | None:
        f = self.schema.first(Role.USER)
        return None if f is None else self.columns[f.name]
