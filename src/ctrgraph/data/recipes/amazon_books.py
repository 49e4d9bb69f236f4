"""``amazon-books``: Amazon Books reviews (McAuley) as click sequences, DemiNet's protocol by default.

Input: McAuley's official files, found in ``--data-dir`` (or ``$CTRGRAPH_DATA/amazon-books``, or
``~/.cache/ctrgraph/raw/amazon-books``), or given with ``reviews`` / ``meta``:

- 2014 layout (http://jmcauley.ucsd.edu/data/amazon/, the data set DemiNet cites):
  ``reviews_Books_5.json.gz`` (the 5-core reviews, one JSON object per line with ``reviewerID``,
  ``asin``, ``unixReviewTime``, ...) and ``meta_Books.json.gz`` (one Python dict literal per line
  with ``asin`` and ``categories``: a list of category paths, e.g.
  ``[['Books', 'Literature & Fiction', 'Classics']]``). ``ctrgraph download amazon-books`` fetches
  these two files.
- 2018 layout (https://nijianmo.github.io/amazon/): ``Books_5.json.gz`` (JSON, same keys) and
  ``meta_Books.json.gz`` (JSON, ``category``: ONE flat path, e.g. ``["Books", "Literature &
  Fiction"]``).

Both files may be gzipped or not, and each may hold JSON or Python literals, one record per line
(the layout is read from the first line). JSON lines are parsed by pandas' JSON reader. Python-literal
lines are never evaluated: each needed key is found by a regular expression that consumes the line
from its opening brace token by token, string literals as a whole (so text inside a title or a
description can never pass for a key), and only the extracted category path (checked to be a list
of string literals, at most 20,000 characters) goes through ``ast.literal_eval``, once per
distinct path. Files are read in chunks (the 2014 metadata is about 1 GB of text).

Protocol (DemiNet, AAAI 2022 "Datasets"/"Settings"; negatives after DIN/DIEN, which DemiNet does
not describe):

- a review is an interaction (a click); duplicate (user, item, time) reviews count once;
  ``max_users`` optionally keeps a random subset of users (seed).
- ``protocol="deminet"`` (default): users with fewer than 5 reviews removed, split point = the
  80 % quantile of all review times, train <= point < test, valid = the instances in (the 70 %
  quantile, the split point] (see :func:`~ctrgraph.data.recipes.taobao.split_instances`).
  ``protocol="default"``: the taobao recipe's split over the instances' times.
  ``protocol="din"`` (Res-embedding's Amazon protocol as DIN built it, :mod:`._din`): per user,
  every review after the first is a positive with one random negative, the last review is test
  (``din_valid``: the second-last valid); ``protocol="res"``: one pair per user (the last review),
  users split at random (``valid_users``, ``test_users``). Both ignore the quantile options and
  ``min_history``/``history_ties``/``negative_dist``.
- category of an item: ``category_level`` of its (first) category path; the default ``-1`` is the
  most specific level, DIEN's ``categories[0][-1]`` (1,602 categories on the 2014 Books 5-core,
  the count DemiNet reports); ``k >= 0`` the level-k name (0 is ``Books``), the last name of paths
  shorter than that. Items without metadata or with an empty path have no category (code -1,
  counted in ``meta["items_without_category"]``).
- reviews of a user ordered by (time, asin) (review times are whole days); every review after the
  user's first ``min_history`` is a positive whose history is the ``max_len`` reviews before it
  (``hist_item_id``, ``hist_category``, raw ``hist_ts``); ``history_ties="exclude"`` keeps only
  reviews of earlier days. ``negatives`` random reviewed items the user never reviewed (with their
  category) share the positive's user, time and history.

Fields: ``user_id`` (reviewerID), ``item_id`` (asin), ``category`` (item_attr),
``hist_item_id``, ``hist_category`` (behaviour sequences targeting ``item_id`` / ``category``),
``hist_ts`` (raw unix seconds, not embedded), ``timestamp`` (context, raw), ``label``.
Compact raw values, because the [instances, max_len] history arrays of the full data set would need
tens of GiB as strings: ``item_id`` / ``hist_item_id`` hold the asin as a base-36 integer
(10 characters 0-9A-Z; :func:`decode_asin` gives the asin back; the order is the asins' order;
a file with other asins keeps the strings), ``category`` / ``hist_category`` hold the index of
the category name in ``meta["category_names"]`` (sorted; -1 = none). Users stay strings.

Terms: the data set pages ask users to cite the papers (2014: McAuley, Targett, Shi, van den Hengel,
SIGIR 2015; He & McAuley, WWW 2016; 2018: Ni, Li, McAuley, EMNLP 2019) and state no licence for
redistribution: never bundled.
"""
from __future__ import annotations

import ast
import gzip
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field as PField

from ...errors import DataError
from ..raw import RawDataset
from ..schema import Schema
from ._din import DinOptions, din_instances
from .base import Recipe
from .taobao import SequenceParams, active_users, sequence_instances

PAGE = "http://jmcauley.ucsd.edu/data/amazon/"
URLS = {  # 2014 layout, the files linked from PAGE
    "reviews_Books_5.json.gz": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Books_5.json.gz",
    "meta_Books.json.gz": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Books.json.gz",
}
REVIEW_NAMES = ("reviews_Books_5.json.gz", "reviews_Books_5.json", "Books_5.json.gz", "Books_5.json")
META_NAMES = ("meta_Books.json.gz", "meta_Books.json")
REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")
CHUNK_LINES = 200_000  # JSON records per chunk
CHUNK_BYTES = 64 << 20  # Python-literal text per chunk
MAX_PATH_CHARS = 20_000

# Python-literal records: a key at key position (after "{" or ","), then a string / integer / list value
_STR = r"""u?(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")"""
_STR_NC = r"""u?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_LIST = r"\[\s*(?:" + _STR_NC + r"\s*(?:,\s*" + _STR_NC + r"\s*)*)?\]"


_TOKEN = r"""(?:[^'"]|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""  # a non-quote character or a whole string literal


def _key(k: str) -> str:
    """``k`` at key position, outside every string value: the line is consumed from its opening
    brace token by token (string literals as a whole, so text inside them never matches) up to the
    first ``{`` or ``,`` followed by the quoted key and a colon."""
    return r"""^\s*\{""" + _TOKEN + r"""*?(?<=[{,])\s*u?['"]""" + re.escape(k) + r"""['"]\s*:\s*"""


class AmazonBooksParams(SequenceParams, DinOptions):
    protocol: Literal["default", "deminet", "din", "res"] = PField(
        "deminet", description="deminet: users with < 5 reviews removed, split point = quantile of all review "
                               "times, train <= point < test; default: the taobao recipe's split; din: DIN's "
                               "per-user protocol (last review test); res: Res-embedding's one pair per user, "
                               "users split")
    reviews: str | None = PField(None, description="reviews file (reviews_Books_5.json[.gz] or Books_5.json[.gz])")
    meta: str | None = PField(None, description="metadata file (meta_Books.json[.gz])")
    category_level: int = PField(-1, description="level of the category path: -1 the most specific (DIEN), "
                                                 "k >= 0 the k-th (0 = 'Books')")
    max_users: int | None = PField(None, ge=1, description="keep a random subset of this many users (seed)")


def _folders(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / "amazon-books"]
    out = []
    if os.environ.get("CTRGRAPH_DATA"):
        out.append(Path(os.environ["CTRGRAPH_DATA"]) / "amazon-books")
    out.append(Path.home() / ".cache" / "ctrgraph" / "raw" / "amazon-books")
    return out


def _find(given: str | None, names: tuple[str, ...], data_dir: Path | None, what: str) -> Path:
    if given:
        p = Path(given).expanduser()
        if data_dir is not None and not p.is_absolute() and (data_dir / p).exists():
            p = data_dir / p
        if not p.is_file():
            raise DataError(f"amazon-books: {what} file not found: {p}")
        return p
    folders = _folders(data_dir)
    for d in folders:
        for n in names:
            if (d / n).is_file():
                return d / n
    raise DataError(f"amazon-books: no {what} file ({' / '.join(names)}) in {', '.join(map(str, folders))}. "
                    f"Run `ctrgraph download amazon-books` (2014 files from {PAGE}) and pass --data-dir, or give "
                    f"--set data.params.{what}=FILE")


def locate(p: AmazonBooksParams, data_dir: Path | None) -> tuple[Path, Path]:
    """(reviews file, metadata file)."""
    return _find(p.reviews, REVIEW_NAMES, data_dir, "reviews"), _find(p.meta, META_NAMES, data_dir, "meta")


def sources(p: AmazonBooksParams, data_dir: Path | None) -> list[Path]:
    return list(locate(p, data_dir))


# ---------------------------------------------------------------------------------------------
# reading one-record-per-line files (JSON or Python literals), chunk by chunk
# ---------------------------------------------------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _layout(path: Path, what: str) -> str:
    """``json`` or ``literal``, from the first non-empty line."""
    if path.stat().st_size == 0:
        raise DataError(f"amazon-books {what}: {path} is empty")
    try:
        with _open(path) as f:
            for n, line in enumerate(f, start=1):  # leading blank lines only
                s = line.strip()
                if s:
                    if s.startswith('{"') or s == "{}":
                        return "json"
                    if s.startswith(("{'", "{u'")):
                        return "literal"
                    raise DataError(f"amazon-books {what}: {path}, line {n}: not a JSON object or Python dict: "
                                    f"{s[:80]!r}")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"amazon-books {what}: cannot read {path}: {e}") from None
    raise DataError(f"amazon-books {what}: {path} is empty")


def _chunks(path: Path, keys: tuple[str, ...], what: str, list_keys: tuple[str, ...] = (),
            only: pd.Index | None = None):
    """Yield (DataFrame with ``keys`` and ``list_keys`` columns (NaN where absent), 1-based line numbers,
    layout) per chunk.

    JSON values keep their JSON types; Python-literal scalars are the text of the string or integer.
    List keys hold Python lists in JSON files and the raw text of the list in literal files (for
    ``categories`` the text of its FIRST path; see :func:`_paths_from_text`). With ``only``, literal
    files extract the list keys only on the records whose first key is in ``only`` (the others get
    NaN: the metadata of items nobody reviewed is not parsed).
    """
    layout = _layout(path, what)
    wanted = list(keys) + list(list_keys)
    try:
        if layout == "json":
            start = 0
            for ch in pd.read_json(path, lines=True, chunksize=CHUNK_LINES, dtype=False, encoding="utf-8"):
                n = len(ch)
                df = pd.DataFrame({k: ch[k] if k in ch.columns else pd.Series(np.nan, index=ch.index, dtype=object)
                                   for k in wanted})
                yield df.reset_index(drop=True), np.arange(start + 1, start + n + 1), "json"
                start += n
            return
        with _open(path) as f:
            start = 0
            while True:
                lines = f.readlines(CHUNK_BYTES)
                if not lines:
                    return
                s = pd.Series(lines, dtype=object)
                ln = np.arange(start + 1, start + len(lines) + 1)
                start += len(lines)
                keep = s.str.strip().str.len().to_numpy() > 0
                s, ln = s[keep].reset_index(drop=True), ln[keep]
                df = {}
                for k in keys:
                    m = s.str.extract(_key(k) + r"(?:" + _STR + r"|(-?\d+))")
                    df[k] = m[0].fillna(m[1]).fillna(m[2])
                sub = s if only is None else s[only.get_indexer(df[keys[0]].fillna("").astype(str)) >= 0]
                for k in list_keys:  # a record holding an earlier list key is not searched again
                    inner = r"\[\s*(" + _LIST + r")" if k == "categories" else r"(" + _LIST + r")"
                    df[k] = sub.str.extract(_key(k) + inner)[0].reindex(s.index) if len(sub) else \
                        pd.Series(np.nan, index=s.index, dtype=object)
                    sub = sub[df[k].reindex(sub.index).isna().to_numpy()]
                yield pd.DataFrame(df), ln, "literal"
    except ValueError as e:  # pandas' JSON errors
        raise DataError(f"amazon-books {what}: cannot parse {path} as JSON lines: {e}") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"amazon-books {what}: cannot read {path}: {e}") from None


def _paths_from_text(text: pd.Series, path: Path) -> pd.Series:
    """Raw list literals (``"['Books', 'Classics']"``) -> Python lists, evaluated once per distinct
    text with :func:`ast.literal_eval` (the regex already checked it is a list of string literals)."""
    uniq = pd.Series(pd.unique(text.dropna()), dtype=object)
    if uniq.empty:
        return text
    if (uniq.str.len().to_numpy() > MAX_PATH_CHARS).any():
        raise DataError(f"amazon-books meta: {path}: a category list longer than {MAX_PATH_CHARS} characters")
    table = pd.Series(uniq.map(ast.literal_eval).to_numpy(), index=pd.Index(uniq.to_numpy(), dtype=object))
    return text.map(table)


def _collect(path: Path, keys: tuple[str, ...], what: str, list_keys: tuple[str, ...] = ()):
    """All chunks of :func:`_chunks` concatenated: (DataFrame, line numbers, layout)."""
    parts, lines, layout = [], [], "json"
    for df, ln, layout in _chunks(path, keys, what, list_keys):
        parts.append(df)
        lines.append(ln)
    if not parts:
        raise DataError(f"amazon-books {what}: {path} has no records")
    return pd.concat(parts, ignore_index=True), np.concatenate(lines), layout


def _require(df: pd.DataFrame, ln: np.ndarray, keys: tuple[str, ...], path: Path, what: str) -> None:
    """Every key present somewhere in the file, and in every record."""
    present = df[list(keys)].notna().to_numpy()
    lacking = [k for k, any_ in zip(keys, present.any(axis=0)) if not any_]
    if lacking:
        raise DataError(f"amazon-books {what}: {path} lacks key(s) {lacking} (needs {list(keys)})")
    if not present.all():
        r, c = np.argwhere(~present)[0]
        raise DataError(f"amazon-books {what}: {path}, line {ln[r]}: no {keys[c]!r}")


def read_reviews(path: Path) -> pd.DataFrame:
    """Columns user (str), item (str), ts (int64); errors name the file and line."""
    df, ln, _ = _collect(path, REVIEW_KEYS, "reviews")
    _require(df, ln, REVIEW_KEYS, path, "reviews")
    t = pd.to_numeric(df["unixReviewTime"], errors="coerce")
    bad = t.isna().to_numpy() | (np.mod(t.fillna(0).to_numpy(dtype=np.float64), 1) != 0)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"amazon-books reviews: {path}, line {ln[r]}: 'unixReviewTime' "
                        f"{df['unixReviewTime'].iloc[r]!r} is not an integer")
    return pd.DataFrame({"user": df["reviewerID"].astype(str).to_numpy(dtype=object).astype(str),
                         "item": df["asin"].astype(str).to_numpy(dtype=object).astype(str),
                         "ts": t.to_numpy().astype(np.int64)})


def category_at_level(paths: pd.Series, level: int) -> np.ndarray:
    """The ``level``-th name of each path (lists); the last name when the path is shorter; ``""``
    for missing or empty paths."""
    if not paths.notna().any():
        return np.full(len(paths), "", dtype=object).astype(str)
    c = paths.str[level]
    c = c.where(c.notna(), paths.str[-1])
    return c.astype(object).where(c.notna(), "").astype(str).to_numpy(dtype=object).astype(str)


def read_meta(path: Path, level: int, wanted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(asins, category of each at ``level``; ``""`` when the item has no category path).

    Only asins in ``wanted`` (the reviewed items) are kept; duplicate asins keep the first record.
    2014 records: the first path of ``categories``; 2018 records: the flat ``category`` list.
    """
    want = None if wanted is None else pd.Index(wanted)
    asins, cats = [], []
    seen_asin = seen_cat = False
    last = parsed = 0
    for df, ln, layout in _chunks(path, ("asin",), "meta", list_keys=("categories", "category"), only=want):
        last = int(ln[-1]) if ln.size else last
        miss = df["asin"].isna().to_numpy()
        seen_asin |= bool((~miss).any())
        if miss.any():
            raise DataError(f"amazon-books meta: {path}, line {ln[int(np.flatnonzero(miss)[0])]}: no 'asin'")
        if want is not None:
            df = df[want.get_indexer(df["asin"].astype(str)) >= 0]
        parsed += len(df)
        seen_cat |= bool(df["categories"].notna().any() or df["category"].notna().any())
        two, flat = df["categories"], df["category"]
        if layout == "literal":  # the regex already took the first path of "categories"
            first, flat = _paths_from_text(two, path), _paths_from_text(flat, path)
        else:
            first = two.str[0] if two.notna().any() else two
        paths = first.where(first.notna(), flat)
        asins.append(df["asin"].astype(str).to_numpy(dtype=object).astype(str))
        cats.append(category_at_level(paths, level))
    if not seen_asin:
        raise DataError(f"amazon-books meta: {path} lacks key 'asin'" if last else f"amazon-books meta: {path} "
                        f"has no records")
    if not seen_cat and parsed:
        raise DataError(f"amazon-books meta: {path} lacks key 'categories' (2014 layout) or 'category' (2018)")
    a, c = np.concatenate(asins), np.concatenate(cats)
    _, first = np.unique(a, return_index=True)
    first.sort()
    return a[first], c[first]


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------


def asin_to_int(asins: np.ndarray) -> np.ndarray | None:
    """10-character asins of digits and capital letters as base-36 integers (int64; the order of the
    strings is kept: ``"0000000001"`` -> 1); None when some asin has another form."""
    a = np.asarray(asins, dtype=str)
    if a.size == 0 or a.dtype.itemsize != 10 * 4 or (np.char.str_len(a) != 10).any():
        return None
    c = np.ascontiguousarray(a).view(np.uint32).reshape(-1, 10).astype(np.int64)
    d = np.where((c >= 48) & (c <= 57), c - 48, np.where((c >= 65) & (c <= 90), c - 55, -1))
    if (d < 0).any():
        return None
    return d @ (36 ** np.arange(9, -1, -1, dtype=np.int64))


def decode_asin(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`asin_to_int` (the raw ``item_id`` values -> asin strings)."""
    v = np.asarray(ids, dtype=np.int64).reshape(-1, 1) // (36 ** np.arange(9, -1, -1, dtype=np.int64)) % 36
    chars = np.where(v < 10, v + 48, v + 55).astype(np.uint32)
    return np.ascontiguousarray(chars).view("U10").reshape(np.shape(ids))


def review_instances(p: AmazonBooksParams, user: np.ndarray, icode: np.ndarray, ts: np.ndarray, items: np.ndarray,
                     item_cat: np.ndarray, what: str) -> tuple[dict, dict, list, np.ndarray, dict]:
    """The instances of ``p.protocol``: ``din`` / ``res`` (:mod:`._din`) or the sequence recipes' protocols."""
    if p.protocol in ("din", "res"):
        return din_instances(p.protocol, user, icode, ts, items, item_cat, max_len=p.max_len,
                             negatives=p.negatives, seed=p.seed, opts=p, cat_field="category", what=what)
    return sequence_instances(p, user, icode, ts, items, item_cat, cat_field="category", what=what)


def build_reviews(p: AmazonBooksParams, rpath: Path, mpath: Path, name: str, description: str) -> RawDataset:
    """The recipe on McAuley's reviews + metadata files (shared with ``amazon-electronics``)."""
    rev = read_reviews(rpath)
    n_read = len(rev)
    rev = rev.drop_duplicates()
    if p.max_users is not None:
        users = np.unique(rev["user"].to_numpy())
        if users.size > p.max_users:
            keep = np.random.default_rng(p.seed).choice(users, p.max_users, replace=False)
            rev = rev[np.isin(rev["user"].to_numpy(), keep)]
    user, item, ts = rev["user"].to_numpy().astype(str), rev["item"].to_numpy().astype(str), rev["ts"].to_numpy()
    active = active_users(user, np.ones(user.size, dtype=bool), p.user_threshold())
    n_removed = int(np.unique(user[~active]).size)
    user, item, ts = user[active], item[active], ts[active]
    if user.size == 0:
        raise DataError(f"{name}: {rpath}: no user has {p.user_threshold()} reviews (min_user_events)")
    items = np.unique(item)
    icode = np.searchsorted(items, item)
    m_asin, m_cat = read_meta(mpath, p.category_level, wanted=items)
    row = pd.Index(m_asin).get_indexer(items) if m_asin.size else np.full(items.size, -1)
    names = np.where(row >= 0, m_cat[np.maximum(row, 0)] if m_cat.size else "", "").astype(str)
    cat_names = np.unique(names[names != ""])
    item_cat = np.where(names == "", -1, np.searchsorted(cat_names, names)).astype(np.int64)
    item_ids = asin_to_int(items)
    cols, lengths, fields, split, info = review_instances(
        p, user, icode, ts, items if item_ids is None else item_ids, item_cat, what=f"{name}: {rpath}")
    negs = "DIN-style negatives" if p.protocol != "res" else "one negative per user (Res-embedding)"
    meta = {"source": [str(rpath), str(mpath)], "events_read": n_read, **info, "users_removed": n_removed,
            "items_without_category": int((item_cat < 0).sum()), "categories": int(cat_names.size),
            "category_names": cat_names.tolist(),
            "item_id": "asin" if item_ids is None else "asin as a base-36 integer (decode_asin)",
            "protocol": (f"{description} as clicks; {p.protocol} protocol (users with < "
                         f"{p.user_threshold()} reviews removed); {negs}")}
    return RawDataset(Schema(tuple(fields), label="label", description=f"{description} (McAuley)"), cols,
                      lengths, split, meta=meta)


def build(p: AmazonBooksParams, data_dir: Path | None) -> RawDataset:
    rpath, mpath = locate(p, data_dir)
    return build_reviews(p, rpath, mpath, "amazon-books", "Amazon Books reviews")


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (through a temporary file, so an interrupted download leaves nothing)."""
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                shutil.copyfileobj(r, tmp)
        except OSError as e:
            tmp.close()
            Path(tmp.name).unlink(missing_ok=True)
            raise DataError(f"download of {url} failed: {e}") from None
    Path(tmp.name).replace(dest)


def download(dest: Path) -> Path:
    """Download the 2014 ``reviews_Books_5.json.gz`` and ``meta_Books.json.gz`` into ``dest/amazon-books``."""
    folder = Path(dest) / "amazon-books"
    folder.mkdir(parents=True, exist_ok=True)
    for name, url in URLS.items():
        if not (folder / name).exists():
            _fetch(url, folder / name)
    return folder


RECIPE = Recipe("amazon-books", ("Amazon Books reviews (McAuley) as click sequences, DemiNet protocol, "
                                 "DIN-style negatives"), AmazonBooksParams, build, sources, download=download)
