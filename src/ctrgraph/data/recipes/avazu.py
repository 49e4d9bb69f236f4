"""``avazu``: Avazu Click-Through Rate Prediction (Kaggle 2014) under GraphFM's protocol.

GraphFM (§5.1, "follows [AutoInt]"; random 8:1:1) and its code (CRIPAC-DIG/GraphCTR
``data/Dataprocess/Avazu/preprocess.py``):

- 23 fields, all categorical: every column of ``train.csv`` except the label ``click``, INCLUDING
  the raw ``id`` (unique per row, so it is always rare: a constant field) and the raw ``hour``
  (``YYMMDDHH``) as in the reference; ``keep_id=False`` drops ``id`` (22 fields).
- a value keeps its own id when seen at least 5 times (``Bound = 5``: ``rare_min_count=5``);
  rarer values share the field's one rare value (raw code -1). Counts over the whole file
  (``count_on="train"``: train only).
- split: random 8:1:1, stratified by the label, seed 2018 (the reference's StratifiedKFold).

Departures: the reference counts in ONE streaming pass, so the first 4 occurrences of a value that
later becomes frequent were already written with the rare index; here the count over the whole file
decides for every occurrence (as its Criteo script and the research note's reading). The stratified
permutation is numpy's, not scikit-learn's.

Input (``--data-dir``, ``$CTRGRAPH_DATA/avazu`` or ``~/.cache/ctrgraph/raw/avazu``): Kaggle's
``train.gz`` / ``train.csv[.gz]`` (CSV with header ``id,click,hour,C1,banner_pos,...,C21``), any one
``*.csv[.gz]`` there, or ``path``. ``max_rows`` reads only the head (the file has 40,428,967 rows).

Source: https://www.kaggle.com/c/avazu-ctr-prediction (login and the competition rules required:
no downloader; ``ctrgraph download avazu`` prints the ``kaggle`` command). Terms: Kaggle
competition rules, no redistribution: never bundled or committed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field as PField

from ...errors import ConfigError, DataError
from ..raw import RawDataset
from ..schema import Field, Kind, Role, Schema
from ._fieldwise import (
    CHUNK_ROWS,
    Factorizer,
    FieldwiseParams,
    check_label,
    factorized,
    labels_split,
    replace_rare,
)
from ._fieldwise import locate as _locate
from .base import Recipe

KAGGLE = "https://www.kaggle.com/c/avazu-ctr-prediction"
COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
           "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
           "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
FEATURES = [c for c in COLUMNS if c != "click"]


class AvazuParams(FieldwiseParams):
    rare_min_count: int = PField(5, ge=1, description="a value seen fewer times becomes the field's rare value "
                                                      "(the reference's Bound = 5)")
    keep_id: bool = PField(True, description="keep the raw 'id' column as a field (the reference does)")


def _instructions(folder: Path) -> str:
    return (f"Avazu is distributed by Kaggle after login and accepting the competition rules ({KAGGLE}). "
            f"With the Kaggle CLI: `kaggle competitions download -c avazu-ctr-prediction -f train.gz -p {folder}`, "
            f"then pass --data-dir {folder}")


def locate(p: AvazuParams, data_dir: Path | None) -> Path:
    return _locate(p, data_dir, "avazu", ("train.gz", "train.csv", "train.csv.gz"), ("*.csv", "*.csv.gz"),
                   _instructions(Path("~/.cache/ctrgraph/raw/avazu")))


def sources(p: AvazuParams, data_dir: Path | None) -> list[Path]:
    return [locate(p, data_dir)]


def read_chunks(path: Path, max_rows: int | None):
    """Yield (DataFrame of string columns, first row number) chunk by chunk."""
    kw = {"dtype": str, "keep_default_na": False, "na_filter": False, "chunksize": CHUNK_ROWS, "nrows": max_rows,
              "compression": "gzip" if path.suffix == ".gz" else "infer"}
    start = 0
    try:
        for ch in pd.read_csv(path, **kw):
            missing = [c for c in COLUMNS if c not in ch.columns]
            if missing:
                raise DataError(f"avazu: {path} lacks column(s) {missing} (test.csv has no 'click'); "
                                f"it has {list(ch.columns)[:6]}...")
            yield ch, start
            start += len(ch)
    except pd.errors.EmptyDataError:
        raise DataError(f"avazu: {path} is empty") from None
    except pd.errors.ParserError as e:
        raise DataError(f"avazu: cannot parse {path}: {e}") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"avazu: cannot read {path}: {e}") from None


def build(p: AvazuParams, data_dir: Path | None) -> RawDataset:
    path = locate(p, data_dir)
    names = FEATURES if p.keep_id else [c for c in FEATURES if c != "id"]
    fac = {c: Factorizer() for c in names}
    labels, codes = [], {c: [] for c in names}
    for ch, start in read_chunks(path, p.max_rows):
        labels.append(check_label(ch["click"], path, "click", start))
        for c in names:
            codes[c].append(factorized(fac[c], ch[c]))
    label, split, rows = labels_split(p, labels, f"avazu: {path}")
    cols, kept = {}, {}
    for c in names:
        cols[c], kept[c] = replace_rare(np.concatenate(codes[c]), p.rare_min_count, rows)
    cols["label"] = label
    fields = tuple(Field(c, Kind.CATEGORICAL, Role.CONTEXT) for c in names) + (Field("label", Kind.NUMERIC,
                                                                                     Role.LABEL),)
    meta = {"source": str(path), "instances": int(label.size), "positives": int(label.sum()),
            "values_kept": kept, "rare_rows": {c: int((cols[c] == -1).sum()) for c in names},
            "protocol": (f"GraphFM/AutoInt Avazu: {len(names)} categorical fields, values seen < "
                         f"{p.rare_min_count} times ({p.count_on}) -> rare; random 8:1:1"
                         f"{' stratified' if p.stratify else ''}, seed {p.seed}")}
    return RawDataset(Schema(fields, label="label", description="Avazu (Kaggle), GraphFM protocol"), cols, {},
                      split, meta=meta)


def download(dest: Path) -> Path:
    """Kaggle needs a login: print the ``kaggle`` command unless the file is already in ``dest/avazu``."""
    folder = Path(dest) / "avazu"
    try:
        return locate(AvazuParams(), folder).parent
    except DataError:
        pass
    raise ConfigError(f"avazu: no downloader (Kaggle login required), nothing downloaded. {_instructions(folder)}")


RECIPE = Recipe("avazu", ("Avazu Kaggle CTR, GraphFM protocol: 23 categorical fields, values seen < 5 times "
                          "-> rare, random 8:1:1"), AvazuParams, build, sources, download=download)
