"""``alimama``: Alimama display ads on Taobao (Tianchi data set 56) with DG-ENN's fields.

DG-ENN (§5.1.1): "12 feature fields including user ID, item ID, user micro group ID, occupation,
shopping level, brand, category and some other information". Our reading of the 12 (the paper
does not list them): ``user_id`` + the 8 profile fields of ``user_profile.csv`` (``cms_segid`` =
micro group, ``cms_group_id``, ``final_gender_code``, ``age_level``, ``pvalue_level``,
``shopping_level``, ``occupation``, ``new_user_class_level``) + ``adgroup_id`` (the item) +
``cate_id`` + ``brand``. ``extra_fields=True`` adds ``campaign_id``, ``customer`` (item) and ``pid``
(context). Missing values (``NULL`` brands, empty profile levels, users without a profile) are -1.

Two input layouts (``--data-dir``, ``$CTRGRAPH_DATA/alimama`` or ``~/.cache/ctrgraph/raw/alimama``):

- ``tianchi`` (the official files, DG-ENN's protocol): ``raw_sample.csv`` (``user,time_stamp,
  adgroup_id,pid,nonclk,clk``), ``ad_feature.csv`` and ``user_profile.csv`` (its last header name
  has a trailing space in the official file; names are stripped). Behaviours = the clicked
  impressions (``clk = 1``) per user sorted by ``time_stamp`` (ties: file order); targets T-2 / T-1
  / T with histories [1..T-3] / [1..T-2] / [1..T-1] (``hist_adgroup_id``, ``hist_cate_id``,
  ``hist_brand``), 10 uniformly drawn ads (from ``ad_feature.csv`` and the log) the user never
  clicked as negatives per target (:mod:`._dgenn`). ``behavior_log.csv`` is not used.
- ``dmr`` (the DMR authors' preprocessed rows, e.g. PaddleRec's ``alimama_sampled_train.txt``: 267
  comma-separated numbers, no header; the shared sample): each row is one impression with its
  ``clk`` label (DMR's protocol, not DG-ENN's: these rows carry no timestamps and no clicked-ad
  histories). Histories are DMR's last 50 behaviours of ``behavior_log`` (all types):
  ``hist_cate_id`` (main sequence, target ``cate_id``), ``hist_brand`` and ``hist_btag``
  (behaviour codes), left padding moved to our right padding. Split: files named ``*test*`` are
  the test split and ``valid`` of the others' rows is validation; without a test file random
  8:1:1 (``seed``).

Departures: DG-ENN's Alimama has 43,047 users (473,517 = 43,047 x 11 instances), a subset it does
not describe (``max_users`` keeps a seeded random subset, tianchi layout); the 12 fields are our
reading; ``price`` is not a field; the ``dmr`` layout follows DMR's impression protocol.

Source: https://tianchi.aliyun.com/dataset/56 (login required: no downloader). Terms: Tianchi's
research/non-commercial terms (PaddleRec's sample keeps them), no redistribution: never bundled
or committed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from ...errors import ConfigError, DataError
from ..io import numeric_column, read_table, require_columns
from ..raw import TEST, TRAIN, VALID, RawDataset
from ..schema import Field, Kind, Role, Schema
from ..split import random_split
from ._dgenn import leave_three_out
from .base import Recipe

TIANCHI = "https://tianchi.aliyun.com/dataset/56"
PROFILE = ["cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
           "occupation", "new_user_class_level"]
AD = ["cate_id", "campaign_id", "customer", "brand", "price"]
RAW_SAMPLE = ["user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk"]
DMR_T = 50
DMR_COLUMNS = 267


class AlimamaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: Literal["auto", "tianchi", "dmr"] = PField("auto", description="input layout (auto: from the files)")
    extra_fields: bool = PField(False, description="add campaign_id, customer and pid to DG-ENN's 12 fields")
    negatives: int = PField(10, ge=1, description="tianchi layout: sampled non-clicked ads per target")
    max_len: int = PField(50, ge=1, description="tianchi layout: history length cap")
    max_users: int | None = PField(None, ge=1, description="tianchi layout: keep a random subset of users (seed)")
    seed: int = PField(0, description="negative-sampling, user-subset and (dmr) split seed")
    valid: float = PField(0.1, ge=0, lt=1, description="dmr layout: validation fraction")
    test: float = PField(0.1, ge=0, lt=1, description="dmr layout without a test file: test fraction")


def folders(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / "alimama"]
    out = [Path(os.environ["CTRGRAPH_DATA"]) / "alimama"] if os.environ.get("CTRGRAPH_DATA") else []
    return out + [Path.home() / ".cache" / "ctrgraph" / "raw" / "alimama"]


def _file(d: Path, name: str) -> Path | None:
    return next((d / n for n in (name, name + ".gz") if (d / n).is_file()), None)


def locate(p: AlimamaParams, data_dir: Path | None) -> tuple[str, list[Path]]:
    """(layout, files): tianchi [raw_sample, ad_feature, user_profile]; dmr [train files..., test files...]."""
    cands = folders(data_dir)
    for d in cands:
        raw = _file(d, "raw_sample.csv")
        if raw is not None and p.layout in ("auto", "tianchi"):
            files = [raw, _file(d, "ad_feature.csv"), _file(d, "user_profile.csv")]
            if None in files:
                raise DataError(f"alimama: {d} has raw_sample.csv but not ad_feature.csv and user_profile.csv")
            return "tianchi", files
        dmr = sorted(f for g in ("*.txt", "*.txt.gz") for f in d.glob(g) if f.is_file())
        if dmr and p.layout in ("auto", "dmr"):
            return "dmr", sorted(dmr, key=lambda f: "test" in f.name)
    raise DataError(f"alimama: no raw_sample.csv (Tianchi layout) or DMR *.txt[.gz] files in "
                    f"{', '.join(map(str, cands))}. The data is distributed by Tianchi after login ({TIANCHI}): "
                    f"download raw_sample.csv, ad_feature.csv and user_profile.csv and pass --data-dir FOLDER")


def sources(p: AlimamaParams, data_dir: Path | None) -> list[Path]:
    return locate(p, data_dir)[1]


def _ints(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Integers with missing / ``NULL`` as -1; other non-numbers are an error naming the row."""
    s = df[col].astype(str).str.strip()
    null = df[col].isna().to_numpy() | s.isin(["", "NULL", "nan"]).to_numpy()
    x = pd.to_numeric(s.where(~null), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(x) & ~null
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column {col!r}, row {r + 1}: value {df[col].iloc[r]!r} is not a number")
    return np.where(null, -1, np.nan_to_num(x)).astype(np.int64)


def _item_fields(extra: bool) -> list[str]:
    return ["cate_id", "brand"] + (["campaign_id", "customer"] if extra else [])


def _fields(extra: bool, hist: list[tuple[str, str, str | None]], L: int) -> tuple[Field, ...]:
    out = [Field("user_id", Kind.CATEGORICAL, Role.USER)]
    out += [Field(c, Kind.CATEGORICAL, Role.USER_ATTR) for c in PROFILE]
    out.append(Field("adgroup_id", Kind.CATEGORICAL, Role.ITEM))
    out += [Field(c, Kind.CATEGORICAL, Role.ITEM_ATTR) for c in _item_fields(extra)]
    if extra:
        out.append(Field("pid", Kind.CATEGORICAL, Role.CONTEXT))
    main = hist[0][0]
    for name, vocab, target in hist:
        out.append(Field(name, Kind.SEQUENCE, Role.BEHAVIOR, vocab=vocab, max_len=L, target=target,
                         group=None if name == main else main))
    out.append(Field("label", Kind.NUMERIC, Role.LABEL))
    return tuple(out)


def build_tianchi(p: AlimamaParams, files: list[Path]) -> RawDataset:
    raw_path, ad_path, prof_path = files
    raw = read_table(raw_path, "alimama raw_sample")
    raw.columns = raw.columns.astype(str).str.strip()
    require_columns(raw, RAW_SAMPLE, raw_path, "alimama raw_sample")
    clk = numeric_column(raw, "clk", raw_path)
    sel = np.flatnonzero(clk == 1)
    user = numeric_column(raw, "user", raw_path)[sel]
    ts = numeric_column(raw, "time_stamp", raw_path)[sel]
    ad = numeric_column(raw, "adgroup_id", raw_path)
    pid = raw["pid"].astype(str).str.strip().to_numpy()[sel]
    if p.max_users is not None:
        users = np.unique(user)
        if users.size > p.max_users:
            keep = np.isin(user, np.random.default_rng(p.seed).choice(users, p.max_users, replace=False))
            sel, user, ts, pid = sel[keep], user[keep], ts[keep], pid[keep]

    adf = read_table(ad_path, "alimama ad_feature", dtype=str)
    adf.columns = adf.columns.astype(str).str.strip()
    require_columns(adf, ["adgroup_id", *AD], ad_path, "alimama ad_feature")
    ad_ids = numeric_column(adf, "adgroup_id", ad_path)
    items = np.unique(np.concatenate([ad_ids, ad]))
    arow = pd.Index(ad_ids).get_indexer(items)  # -1: an ad of the log without features
    item_cols = {"adgroup_id": items}
    for c in _item_fields(p.extra_fields):
        v = _ints(adf, c, ad_path)
        item_cols[c] = np.where(arow >= 0, v[np.maximum(arow, 0)], -1)

    prof = read_table(prof_path, "alimama user_profile", dtype=str)
    prof.columns = prof.columns.astype(str).str.strip()
    require_columns(prof, ["userid", *PROFILE], prof_path, "alimama user_profile")
    urow = pd.Index(numeric_column(prof, "userid", prof_path)).get_indexer(user)
    user_cols = {"user_id": user}
    for c in PROFILE:
        v = _ints(prof, c, prof_path)
        user_cols[c] = np.where(urow >= 0, v[np.maximum(urow, 0)], -1)

    icode = np.searchsorted(items, ad[sel])
    hist = {"hist_adgroup_id": items[icode], "hist_cate_id": item_cols["cate_id"][icode],
            "hist_brand": item_cols["brand"][icode]}
    cols, lengths, split, info = leave_three_out(
        user, icode, items.size, ts, sel, user_cols=user_cols, item_cols=item_cols,
        context_cols={"pid": pid} if p.extra_fields else {}, hist_cols=hist, negatives=p.negatives,
        max_len=p.max_len, seed=p.seed, what=f"alimama: {raw_path}")
    del cols["item"]
    hist_spec = [("hist_adgroup_id", "adgroup_id", "adgroup_id"), ("hist_cate_id", "cate_id", "cate_id"),
                 ("hist_brand", "brand", "brand")]
    meta = {"source": list(map(str, files)), "layout": "tianchi", "clicks": int(sel.size), **info}
    return RawDataset(Schema(_fields(p.extra_fields, hist_spec, p.max_len), label="label",
                             description="Alimama (Tianchi 56), DG-ENN protocol"), cols, lengths, split, meta=meta)


def _read_dmr(path: Path) -> np.ndarray:
    try:
        df = pd.read_csv(path, header=None, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"alimama: {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"alimama: cannot parse {path}: {e}") from None
    if df.shape[1] != DMR_COLUMNS:
        raise DataError(f"alimama: {path}: {df.shape[1]} columns, the DMR layout has {DMR_COLUMNS}")
    x = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(x).any():
        r, c = np.argwhere(np.isnan(x))[0]
        raise DataError(f"alimama: {path}, row {r + 1}, column {c + 1}: {df.iat[r, c]!r} is not a number")
    return x


def _left_to_right(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Left-padded [N, T] rows (values last) -> values first, then padding (0)."""
    T = values.shape[1]
    ar = np.arange(T)[None, :]
    src = np.minimum(ar + (T - lengths)[:, None], T - 1)
    out = np.take_along_axis(values, src, axis=1)
    out[ar >= lengths[:, None]] = 0
    return out


def build_dmr(p: AlimamaParams, files: list[Path]) -> RawDataset:
    parts = [_read_dmr(f) for f in files]
    is_test = np.concatenate([np.full(len(x), "test" in f.name) for x, f in zip(parts, files)])
    x = np.concatenate(parts)
    ids = x[:, :264].astype(np.int64)
    mask = ids[:, 150:200]
    lengths = mask.sum(axis=1)
    tail = (np.arange(DMR_T)[None, :] >= DMR_T - lengths[:, None])
    if not (mask.astype(bool) == tail).all():
        r = int(np.flatnonzero(~(mask.astype(bool) == tail).all(axis=1))[0])
        raise DataError(f"alimama: DMR row {r + 1}: the history mask (columns 151-200) is not left padding")
    label = x[:, 266]
    if not np.isin(label, (0, 1)).all():
        r = int(np.flatnonzero(~np.isin(label, (0, 1)))[0])
        raise DataError(f"alimama: DMR row {r + 1}: label (column 267) {label[r]!r} is not 0 or 1")
    cols = {"user_id": ids[:, 250]}
    cols.update({c: ids[:, 251 + i] for i, c in enumerate(PROFILE)})
    cols["adgroup_id"] = ids[:, 259]
    ad = {"cate_id": 260, "campaign_id": 261, "customer": 262, "brand": 263}
    cols.update({c: ids[:, ad[c]] for c in _item_fields(p.extra_fields)})
    if p.extra_fields:
        cols["pid"] = x[:, 265].astype(np.int64)
    for name, lo in (("hist_cate_id", 50), ("hist_brand", 100), ("hist_btag", 0)):
        cols[name] = _left_to_right(ids[:, lo:lo + DMR_T], lengths)
    cols["label"] = label.astype(np.int8)
    n = label.size
    if is_test.any():
        split = np.where(is_test, TEST, TRAIN).astype(np.int8)
        tr = np.flatnonzero(~is_test)
        split[tr] = np.where(random_split(tr.size, valid=p.valid, test=0.0, seed=p.seed) == VALID, VALID, TRAIN)
    else:
        split = random_split(n, valid=p.valid, test=p.test, seed=p.seed)
    hist_spec = [("hist_cate_id", "cate_id", "cate_id"), ("hist_brand", "brand", "brand"),
                 ("hist_btag", "btag", None)]
    meta = {"source": list(map(str, files)), "layout": "dmr", "instances": int(n), "positives": int(label.sum()),
            "protocol": "DMR impressions with DG-ENN's 12 fields; random split" if not is_test.any() else
                        "DMR impressions with DG-ENN's 12 fields; the test file is the test split"}
    return RawDataset(Schema(_fields(p.extra_fields, hist_spec, DMR_T), label="label",
                             description="Alimama (DMR preprocessed rows), DG-ENN fields"), cols,
                      {k: lengths.copy() for k, _, _ in hist_spec}, split, meta=meta)


def build(p: AlimamaParams, data_dir: Path | None) -> RawDataset:
    layout, files = locate(p, data_dir)
    return build_tianchi(p, files) if layout == "tianchi" else build_dmr(p, files)


def download(dest: Path) -> Path:
    """Tianchi needs a login: no downloader; the error names the manual step."""
    raise ConfigError(f"alimama: no downloader (Tianchi requires a login), nothing downloaded. Download "
                      f"raw_sample.csv, ad_feature.csv and user_profile.csv from {TIANCHI} into "
                      f"{Path(dest) / 'alimama'} and pass --data-dir")


RECIPE = Recipe("alimama", ("Alimama display ads (Tianchi 56) with DG-ENN's 12 fields: DG-ENN protocol on the "
                            "official files, DMR's impressions on its preprocessed rows"), AlimamaParams, build,
                sources, download=download)
