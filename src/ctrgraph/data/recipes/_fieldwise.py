"""Shared machinery of the field-wise click logs ``criteo`` and ``avazu`` (GraphFM's preprocessing,
i.e. the AutoInt scripts in CRIPAC-DIG/GraphCTR ``data/Dataprocess``).

- :class:`Factorizer`: string values -> dense int codes, chunk by chunk (vectorised, so the 45M-row
  Criteo file never holds Python strings for all rows at once).
- :func:`replace_rare`: values seen fewer than ``min_count`` times become the field's one rare
  value (:data:`RARE`).
- :func:`log2_scale`: AutoInt's ``scale``: ``x > 2 -> int(log(x) ** 2)``, other values unchanged.
- :class:`FieldwiseParams` / :func:`graphfm_split`: the random 8:1:1 split, stratified by the label
  as the reference's ``StratifiedKFold(10, shuffle=True, random_state=2018)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import DataError
from ..raw import TRAIN
from ..split import random_split

RARE = -1  #: raw code of a field's rare value
CHUNK_ROWS = 1_000_000


class FieldwiseParams(BaseModel):
    """Parameters shared by ``criteo`` and ``avazu`` (each sets its own ``rare_min_count`` default)."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = PField(None, description="the data file (default: found in --data-dir)")
    rare_min_count: int = PField(1, ge=1, description="a value seen fewer times becomes the field's rare value")
    count_on: Literal["all", "train"] = PField(
        "all", description="all: counts over the whole file (the reference scripts); train: the train split only")
    seed: int = PField(2018, description="seed of the random 8:1:1 split (the reference's random_state)")
    stratify: bool = PField(True, description="split each label class 8:1:1 (the reference's StratifiedKFold)")
    valid: float = PField(0.1, ge=0, lt=1, description="validation fraction")
    test: float = PField(0.1, ge=0, lt=1, description="test fraction")
    max_rows: int | None = PField(None, ge=1, description="read only the first rows of the file")


class Factorizer:
    """Dense int codes of string values, consistent across chunks (first appearance order)."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        codes = self.index.get_indexer(values)
        new = codes < 0
        if new.any():
            self.index = self.index.append(pd.Index(pd.unique(values[new]), dtype=object))
            codes[new] = self.index.get_indexer(values[new])
        return codes.astype(np.int32)


def replace_rare(codes: np.ndarray, min_count: int, count_rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Codes counted (over ``count_rows``, default all) fewer than ``min_count`` times -> :data:`RARE`.

    Returns (int32 codes, number of distinct values kept)."""
    counted = codes if count_rows is None else codes[count_rows]
    counts = np.bincount(counted, minlength=int(codes.max()) + 1 if codes.size else 0)
    keep = counts >= min_count
    out = np.where(keep[codes], codes, RARE).astype(np.int32)
    return out, int(keep.sum())


def log2_scale(x: np.ndarray) -> np.ndarray:
    """AutoInt/GraphFM ``scale``: ``int(log(x) ** 2)`` for x > 2, other values unchanged."""
    x = np.asarray(x, dtype=np.float64)
    big = x > 2
    return np.where(big, np.floor(np.log(np.where(big, x, 1.0)) ** 2), x)


def graphfm_split(p: FieldwiseParams, label: np.ndarray) -> np.ndarray:
    return random_split(label.size, valid=p.valid, test=p.test, seed=p.seed, stratify=label if p.stratify else None)


def count_rows(p: FieldwiseParams, split: np.ndarray) -> np.ndarray | None:
    """The rows the rare-value counts use (None: all)."""
    return None if p.count_on == "all" else split == TRAIN


def locate(p: FieldwiseParams, data_dir: Path | None, name: str, files: tuple[str, ...], globs: tuple[str, ...],
           how: str) -> Path:
    """The data file: ``path``, else the first of ``files`` in the folder, else the one file matching ``globs``."""
    if p.path:
        f = Path(p.path).expanduser()
        if data_dir is not None and not f.is_absolute() and (data_dir / f).exists():
            f = data_dir / f
        if not f.is_file():
            raise DataError(f"{name}: file not found: {f}")
        return f
    if data_dir is not None:
        folders = [data_dir, data_dir / name]
    else:
        folders = ([Path(os.environ["CTRGRAPH_DATA"]) / name] if os.environ.get("CTRGRAPH_DATA") else []) + \
                  [Path.home() / ".cache" / "ctrgraph" / "raw" / name]
    for d in folders:
        for n in files:
            if (d / n).is_file():
                return d / n
        found = sorted({f for g in globs for f in d.glob(g) if f.is_file()})
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"{name}: several candidate files in {d}: {[f.name for f in found]}; "
                            f"choose one with --set data.params.path=FILE")
    raise DataError(f"{name}: no {' / '.join(files)} in {', '.join(map(str, folders))}. {how}")


def check_label(values: pd.Series, path: Path, col: str, first_row: int) -> np.ndarray:
    """A 0/1 label column; the first other value is named with its row."""
    s = values.astype(str).str.strip()
    ok = s.isin(["0", "1"]).to_numpy()
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{path}: column {col!r}, row {first_row + r + 1}: label {values.iloc[r]!r} is not 0 or 1")
    return (s.to_numpy() == "1").astype(np.int8)


def factorized(fac, values: pd.Series) -> np.ndarray:
    """Codes of one part's categorical column (values as stripped strings; one Factorizer per field)."""
    return fac(values.astype(str).str.strip().to_numpy(dtype=object))


def labels_split(p: FieldwiseParams, labels: list[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray | None]:
    """(labels of every part, the GraphFM split, the rows that count values); an error without rows."""
    if not labels:
        raise DataError(f"{what} has no rows")
    label = np.concatenate(labels)
    split = graphfm_split(p, label)
    return label, split, count_rows(p, split)

