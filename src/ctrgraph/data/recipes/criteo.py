"""``criteo``: Criteo Display Advertising Challenge (Kaggle 2014) under GraphFM's protocol.

GraphFM (§5.1: "the data preparation follows [AutoInt]"; random 8:1:1) and its code
(CRIPAC-DIG/GraphCTR ``data/Dataprocess/Criteo``, the AutoInt scripts):

- 39 fields: ``I1``..``I13`` (counts) and ``C1``..``C26`` (hashed categoricals); label ``label``.
- categorical: a value keeps its own id only when seen MORE than 10 times in the file
  (``rare_min_count=11``); rarer values share the field's one rare value (raw code -1).
  Counts are taken over the whole file as in the reference (``count_on="train"``: train only).
- numeric (``numeric="scale"``, the reference): one embedding per field multiplied by the value;
  missing -> 0; AutoInt's ``scale.py``: ``x > 2 -> int(log(x) ** 2)``, other values unchanged
  (Criteo's ``I2`` has -1..-3). ``numeric="bucket"``: the same transform as a categorical value
  instead (the Kaggle winners' discretisation; missing is its own value).
- split: random 8:1:1, stratified by the label, seed 2018 (the reference's ``StratifiedKFold(10,
  shuffle=True, random_state=2018)``: part 1 test, part 2 valid, parts 3-10 train).

Departures: a missing categorical value is a value of its own (the reference keeps its index but
multiplies the embedding by 0); the stratified permutation is numpy's, not scikit-learn's, so rows
land in other parts than in the reference; valid/test sizes are ``round(0.1 n)`` per class.

Input (``--data-dir``, ``$CTRGRAPH_DATA/criteo`` or ``~/.cache/ctrgraph/raw/criteo``): the official
``train.txt`` (tab-separated ``label I1..I13 C1..C26``, no header, empty = missing; ``.gz`` allowed,
or any one ``*.txt[.gz]`` there, or ``path``), or a CSV with header ``label,I1..I13,C1..C26``
(DeepCTR's sample layout). ``max_rows`` reads only the head of the file.

Source: https://ailab.criteo.com/ressources/ (Kaggle: https://www.kaggle.com/c/criteo-display-ad-challenge);
``ctrgraph download criteo`` fetches the official tarball (4.3 GB). Terms: Criteo's data terms of
use (non-commercial research; "You shall not distribute the Data in any manner"): never bundled or
committed; the user downloads it.
"""
from __future__ import annotations

import csv
import gzip
import tarfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field as PField

from ...errors import DataError
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ._fieldwise import (
    CHUNK_ROWS,
    Factorizer,
    FieldwiseParams,
    check_label,
    factorized,
    labels_split,
    log2_scale,
    replace_rare,
)
from ._fieldwise import locate as _locate
from .base import Recipe

URL = "https://go.criteo.net/criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz"
PAGE = "https://ailab.criteo.com/ressources/"
NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *NUMERIC, *CATEGORICAL]
MISSING_BUCKET = -(10 ** 9)  # raw value of a missing count in numeric="bucket" mode


class CriteoParams(FieldwiseParams):
    rare_min_count: int = PField(11, ge=1, description="a categorical value seen fewer times (the reference: "
                                                       "<= 10) becomes the field's rare value")
    numeric: Literal["scale", "bucket"] = PField(
        "scale", description="scale: numeric field, value int(log(x)^2) for x > 2 (reference); bucket: the same "
                             "transform as a categorical value")


def locate(p: CriteoParams, data_dir: Path | None) -> Path:
    return _locate(p, data_dir, "criteo", ("train.txt", "train.txt.gz"), ("*.txt", "*.txt.gz"),
                   f"Download the Kaggle Display Advertising Challenge data ({PAGE}; `ctrgraph download "
                   f"criteo`) and pass --data-dir, or --set data.params.path=FILE")


def sources(p: CriteoParams, data_dir: Path | None) -> list[Path]:
    return [locate(p, data_dir)]


def _first_line(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.readline()
    except (OSError, EOFError) as e:
        raise DataError(f"criteo: cannot read {path}: {e}") from None


def read_chunks(path: Path, max_rows: int | None):
    """Yield (DataFrame of string columns ``COLUMNS``, first row number) chunk by chunk.

    The raw layout is read one line per row (no separator inside a line) and split on tabs, so a
    row with another number of fields is an error naming it."""
    line = _first_line(path)
    if not line.strip():
        raise DataError(f"criteo: {path} is empty")
    header = line.startswith("label,")
    if header:
        kw = {"sep": ",", "header": 0, "dtype": str, "keep_default_na": False, "na_filter": False}
    else:
        kw = {"sep": "\x1f", "header": None, "names": ["line"], "dtype": str, "keep_default_na": False,
              "na_filter": False, "quoting": csv.QUOTE_NONE}
    start = 0
    try:
        for ch in pd.read_csv(path, chunksize=CHUNK_ROWS, nrows=max_rows, **kw):
            if header:
                missing = [c for c in COLUMNS if c not in ch.columns]
                if missing:
                    raise DataError(f"criteo: {path} lacks column(s) {missing}; expected {COLUMNS[:3]}...")
            else:
                tabs = ch["line"].str.count("\t").to_numpy()
                if (tabs != len(COLUMNS) - 1).any():
                    r = int(np.flatnonzero(tabs != len(COLUMNS) - 1)[0])
                    raise DataError(f"criteo: {path}, row {start + r + 1}: {tabs[r] + 1} tab-separated fields, "
                                    f"expected {len(COLUMNS)} (label I1..I13 C1..C26)")
                ch = ch["line"].str.split("\t", expand=True, regex=False)
                ch.columns = COLUMNS
            yield ch, start
            start += len(ch)
    except pd.errors.ParserError as e:
        raise DataError(f"criteo: cannot parse {path}: {e}") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"criteo: cannot read {path}: {e}") from None


def _numbers(s: pd.Series, path: Path, col: str, start: int) -> np.ndarray:
    """Counts as float64, NaN where missing; the first non-number is named."""
    txt = s.astype(str).str.strip()
    x = pd.to_numeric(txt.where(txt != ""), errors="coerce")
    bad = x.isna().to_numpy() & (txt != "").to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"criteo: {path}: column {col!r}, row {start + r + 1}: {s.iloc[r]!r} is not a number")
    return x.to_numpy(dtype=np.float64)


def build(p: CriteoParams, data_dir: Path | None) -> RawDataset:
    path = locate(p, data_dir)
    fac = {c: Factorizer() for c in CATEGORICAL}
    labels, nums, cats = [], {c: [] for c in NUMERIC}, {c: [] for c in CATEGORICAL}
    for ch, start in read_chunks(path, p.max_rows):
        labels.append(check_label(ch["label"], path, "label", start))
        for c in NUMERIC:
            nums[c].append(_numbers(ch[c], path, c, start))
        for c in CATEGORICAL:
            cats[c].append(factorized(fac[c], ch[c]))
    label, split, rows = labels_split(p, labels, f"criteo: {path}")
    cols: dict[str, np.ndarray] = {}
    fields: list[Field] = []
    missing = {}
    for c in NUMERIC:
        x = np.concatenate(nums[c])
        missing[c] = int(np.isnan(x).sum())
        if p.numeric == "scale":
            cols[c] = log2_scale(np.nan_to_num(x, nan=0.0))
            fields.append(Field(c, Kind.NUMERIC, Role.CONTEXT))
        else:
            cols[c] = np.where(np.isnan(x), MISSING_BUCKET, log2_scale(np.nan_to_num(x, nan=0.0))).astype(np.int64)
            fields.append(Field(c, Kind.CATEGORICAL, Role.CONTEXT))
    kept = {}
    for c in CATEGORICAL:
        cols[c], kept[c] = replace_rare(np.concatenate(cats[c]), p.rare_min_count, rows)
        fields.append(Field(c, Kind.CATEGORICAL, Role.CONTEXT))
    cols["label"] = label
    fields.append(Field("label", Kind.NUMERIC, Role.LABEL))
    meta = {"source": str(path), "instances": int(label.size), "positives": int(label.sum()),
            "values_kept": kept, "rare_rows": {c: int((cols[c] == -1).sum()) for c in CATEGORICAL},
            "numeric_missing": missing,
            "protocol": (f"GraphFM/AutoInt Criteo: categorical values seen < {p.rare_min_count} times "
                         f"({p.count_on}) -> rare; counts {p.numeric} with int(log(x)^2) for x > 2; random "
                         f"8:1:1{' stratified' if p.stratify else ''}, seed {p.seed}")}
    return RawDataset(Schema(tuple(fields), label="label", description="Criteo (Kaggle), GraphFM protocol"),
                      cols, {}, split, meta=meta)


def download(dest: Path) -> Path:
    """Download the official tarball (4.3 GB; Criteo's terms apply) and unpack it into ``dest/criteo``."""
    from ..download import fetch_file

    folder = Path(dest) / "criteo"
    if (folder / "train.txt").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Criteo's terms of use apply ({PAGE}): non-commercial research, no redistribution.")
    tgz = fetch_file(URL, folder / "dac.tar.gz")
    with tarfile.open(tgz) as t:
        t.extractall(folder, filter="data")
    tgz.unlink()
    return folder


RECIPE = Recipe("criteo", ("Criteo Kaggle display ads, GraphFM protocol: 39 fields, values seen <= 10 times "
                           "-> rare, log^2 counts, random 8:1:1"), CriteoParams, build, sources, download=download)
