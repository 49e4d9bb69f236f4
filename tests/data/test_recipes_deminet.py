"""DemiNet's data sets: the ``amazon-books`` and ``retailrocket`` recipes and the ``protocol="deminet"``
option of the sequence recipes (taobao included).

Every check compares the recipe with a brute-force reference written with plain Python loops on
small files written here in the official layouts (exact file names, column names and JSON keys).
"""
from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_data

from ctrgraph.data.encode import encode
from ctrgraph.errors import ConfigError, DataError
from ctrgraph.registry import build_raw, get_recipe, load_dataset

DAY = 86_400


# ------------------------------------------------------------------------------ brute-force reference


def quantile(sorted_values: list, q: float) -> float:
    """numpy's default (linear) quantile: the position by hand, the interpolation between the two
    neighbours by numpy (bit-identical to ``np.quantile``)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    return float(a) if a == b else float(np.quantile(np.array([a, b], dtype=np.float64), pos - lo))


def reference(events, max_len, min_users=5, min_history=1, test_q=0.8, valid_q=0.7, ties="order"):
    """events: (user, item, time) clicks, duplicates already merged. Returns (rows, split point,
    valid point, kept users); a row is (user, item, time, history items, history times, split)."""
    by_user = defaultdict(list)
    for u, i, t in events:
        by_user[u].append((t, i))
    kept = {u: sorted(v) for u, v in by_user.items() if len(v) >= min_users}
    times = sorted(t for v in kept.values() for t, _ in v)
    t_test, t_val = quantile(times, test_q), quantile(times, valid_q)
    rows = []
    for u in sorted(kept):
        seq = kept[u]
        for j in range(len(seq)):
            t, i = seq[j]
            before = seq[:j] if ties == "order" else [x for x in seq[:j] if x[0] < t]
            if len(before) < min_history:
                continue
            hist = before[-max_len:]
            split = 2 if t > t_test else (1 if t > t_val else 0)
            rows.append((u, i, t, [x[1] for x in hist], [x[0] for x in hist], split))
    return rows, t_test, t_val, set(kept)


def check_against_reference(raw, rows, t_test, cat_of, clicked, max_len, cat_field="category", time_div=1,
                            neg_cat=None):
    """Positives equal the reference row by row; each is followed by one negative sharing its history."""
    c, L = raw.columns, raw.lengths["hist_item_id"]
    lab = c["label"]
    assert len(raw) == 2 * len(rows)
    assert (lab[0::2] == 1).all() and (lab[1::2] == 0).all()
    for k, (u, i, t, hist, hts, split) in enumerate(rows):
        r = 2 * k
        assert c["user_id"][r] == u and c["item_id"][r] == i
        assert c["timestamp"][r] == t / time_div
        assert c[cat_field][r] == cat_of(i, t)
        assert L[r] == len(hist) <= max_len
        assert list(c["hist_item_id"][r, :L[r]]) == hist
        assert list(c["hist_ts"][r, :L[r]]) == [x / time_div for x in hts]
        assert list(c["hist_category"][r, :L[r]]) == [cat_of(x, y) for x, y in zip(hist, hts)]
        assert raw.split[r] == split
        # the negative: same user, time, history and split; an item the user never clicked, with its category
        n = r + 1
        for f in ("user_id", "timestamp", "hist_item_id", "hist_category", "hist_ts"):
            assert np.array_equal(c[f][n], c[f][r])
        assert L[n] == L[r] and raw.split[n] == raw.split[r]
        assert c["item_id"][n] not in clicked[u]
        assert c[cat_field][n] == (neg_cat or cat_of)(c["item_id"][n], t)
    # the global split (times and splits equal the reference's row by row): train <= split point < test
    assert all((t > t_test) == (s == 2) for _, _, t, _, _, s in rows)
    assert {s for *_, s in rows} == {0, 1, 2} or not raw.counts()["valid"]
    assert raw.meta["split_point"] == pytest.approx(t_test / time_div)
    ts, point = c["timestamp"], raw.meta["split_point"]
    assert (ts[raw.split != 2] <= point).all() and (ts[raw.split == 2] > point).all()
    raw.validate()


def check_train_vocab(raw, cat_field="category"):
    """Vocabularies hold the train split's values only (targets and histories); users seen only
    later are out of vocabulary."""
    tr = raw.split == 0
    L = raw.lengths["hist_item_id"][tr]
    valid = np.arange(raw.schema["hist_item_id"].max_len)[None, :] < L[:, None]
    c = raw.columns
    want = {"item_id": set(c["item_id"][tr].tolist()) | set(c["hist_item_id"][tr][valid].tolist()),
            cat_field: set(c[cat_field][tr].tolist()) | set(c["hist_category"][tr][valid].tolist()),
            "user_id": set(c["user_id"][tr].tolist())}
    late_users = set(c["user_id"].tolist()) - want["user_id"]
    ds = encode(raw)
    for table, values in want.items():
        assert set(ds.vocabs[table].values.tolist()) == values, table
    assert late_users, "the fixture should have users seen only after the train split"
    assert ds.vocabs["user_id"].encode(np.array(sorted(late_users))).tolist() == [1] * len(late_users)  # OOV


# ------------------------------------------------------------------------------------- amazon-books

GENRES = [["Books", "Literature & Fiction", "Classics"], ["Books", "Children's Books", "Animals"],
          ["Books", "Science & Math", "Physics"], ["Books", "History"], ["Books"]]


def amazon_fixture(seed: int = 0):
    """~250 reviews of 12 users (3 with fewer than 5) on 36 books, day-resolution times, plus metadata."""
    rng = np.random.default_rng(seed)
    asins = [f"{k:010d}" for k in range(30)] + [f"B0{k:07d}X" for k in range(6)]  # ISBN-like, leading zeros
    n_rev = [30, 28, 25, 24, 22, 20, 18, 12, 6, 4, 3, 1]
    reviews = []
    base = 1_300_000_000 // DAY * DAY
    for u, n in enumerate(n_rev):
        user = f"A{u:03d}XYZ"
        for a in rng.choice(len(asins), n, replace=False):
            reviews.append((user, asins[a], base + int(rng.integers(0, 50)) * DAY))
    for k in range(6):  # a user and new books seen on the last days only (not in the train vocabularies)
        reviews.append(("ALATE", f"N{k:08d}Z", base + (55 + k % 3) * DAY))
        reviews.append((f"A{k:03d}XYZ", f"N{k:08d}Z", base + (55 + k % 3) * DAY))
    asins += [f"N{k:08d}Z" for k in range(6)]
    reviews.append(reviews[3])  # an exact duplicate review counts once
    paths = {a: [list(GENRES[k % len(GENRES)])] for k, a in enumerate(asins)}
    paths[asins[7]] = [["Books", "Literature & Fiction", "Classics"], ["Kindle Store", "Fiction"]]
    paths[asins[8]] = [[]]  # an empty path -> ""
    del paths[asins[9]]  # no metadata -> ""
    return reviews, paths, asins


def review_record(u, a, t, k):
    return {"reviewerID": u, "asin": a, "reviewerName": f"Reader {k}", "helpful": [k % 3, 3],
            "reviewText": f"A \"great\" book, isn't it? 'categories': [['Fake']] {k}", "overall": float(1 + k % 5),
            "summary": "Nice, really", "unixReviewTime": t,
            "reviewTime": pd.Timestamp(t, unit="s").strftime("%m %d, %Y")}


def meta_record(a, path):
    # text inside string values that looks like keys must not be mistaken for them
    return {"asin": a, "title": f"Title of {a}, it's long", "price": 9.99, "imUrl": "http://example.com/x.jpg",
            "description": "He said 'hello', 'categories': [['Fake']], 'asin': 'FAKE'",
            "related": {"also_bought": ["0000000001", "0000000002"]}, "salesRank": {"Books": 1234},
            "categories": path}


def write_amazon(folder: Path, layout: str = "2014", reviews_as_literal: bool = False, seed: int = 0):
    reviews, paths, asins = amazon_fixture(seed)
    folder.mkdir(parents=True, exist_ok=True)
    recs = [review_record(u, a, t, k) for k, (u, a, t) in enumerate(reviews)]
    if layout == "2014":
        lines = [repr(r) if reviews_as_literal else json.dumps(r) for r in recs]
        with gzip.open(folder / "reviews_Books_5.json.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        meta = [repr(meta_record(a, p)) for a, p in paths.items()]  # 2014 metadata: Python literals
        meta.append(repr({"asin": "9999999999", "categories": [["Books", "Unreviewed"]]}))
        with gzip.open(folder / "meta_Books.json.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(meta) + "\n")
    else:  # 2018: JSON, flat "category", other keys
        with open(folder / "Books_5.json", "w", encoding="utf-8") as f:
            for r in recs:
                r2 = {"overall": r["overall"], "verified": True, "reviewTime": r["reviewTime"],
                      "reviewerID": r["reviewerID"], "asin": r["asin"], "style": {"Format:": " Paperback"},
                      "reviewerName": r["reviewerName"], "reviewText": r["reviewText"], "summary": r["summary"],
                      "unixReviewTime": r["unixReviewTime"]}
                f.write(json.dumps(r2) + "\n")
        with gzip.open(folder / "meta_Books.json.gz", "wt", encoding="utf-8") as f:
            for a, p in paths.items():
                f.write(json.dumps({"category": p[0], "description": ["x"], "title": "t", "also_buy": [],
                                    "brand": "", "rank": "1,234 in Books (", "main_cat": "Books", "date": "",
                                    "price": "", "asin": a, "imageURL": []}) + "\n")
            f.write(json.dumps({"category": p[0], "asin": asins[0]}) + "\n")  # a duplicate asin: first kept
    return reviews, paths


def amazon_category(paths, level=-1):
    def cat_of(item, _t=None):
        if item not in paths or not paths[item][0]:
            return ""
        p = paths[item][0]
        try:
            return p[level]
        except IndexError:
            return p[-1]
    return cat_of


def decoded(raw):
    """The amazon-books data set with asins and category names instead of the integer ids."""
    from dataclasses import replace

    from ctrgraph.data.recipes.amazon_books import decode_asin

    names = np.array([""] + raw.meta["category_names"])
    cols = dict(raw.columns)
    for f in ("item_id", "hist_item_id"):
        cols[f] = decode_asin(cols[f])
    for f in ("category", "hist_category"):
        cols[f] = names[cols[f] + 1]
    return replace(raw, columns=cols)


def dedup(events):
    seen, out = set(), []
    for e in events:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


@pytest.fixture(scope="module")
def amazon_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("amazon")
    reviews, paths = write_amazon(d)
    return d, reviews, paths


def test_amazon_books_matches_the_reference(amazon_dir):
    d, reviews, paths = amazon_dir
    coded = build_raw("amazon-books", {"max_len": 8}, data_dir=d)
    raw = decoded(coded)
    events = dedup(reviews)
    rows, t_test, t_val, kept = reference(events, max_len=8)
    clicked = defaultdict(set)
    for u, i, _ in events:
        clicked[u].add(i)
    check_against_reference(raw, rows, t_test, amazon_category(paths), clicked, 8)
    assert set(raw.columns["user_id"].tolist()) == kept and len(kept) == 10  # 3 users with < 5 reviews removed
    assert raw.meta["users_removed"] == 3 and raw.meta["negatives_dropped"] == 0
    assert raw.meta["valid_point"] == pytest.approx(t_val)
    assert raw.counts()["valid"] > 0 and raw.counts()["test"] > 0
    # compact ids: asins as base-36 integers, categories as codes into meta["category_names"] (-1: none)
    assert coded.columns["item_id"].dtype == np.int64 and coded.columns["category"].dtype == np.int32
    assert coded.meta["category_names"] == sorted({amazon_category(paths)(a) for a in set(raw.columns["item_id"])}
                                                  - {""})
    assert "" in set(raw.columns["category"].tolist())  # items without metadata / with an empty path
    f = raw.schema
    assert [x.name for x in f.fields] == ["user_id", "item_id", "category", "hist_item_id", "hist_category",
                                          "hist_ts", "timestamp", "label"]
    assert f["hist_category"].target == "category" and f["hist_category"].group == "hist_item_id"
    assert f["hist_ts"].embed is False and f["timestamp"].embed is False
    check_train_vocab(coded)


def test_amazon_books_layouts_and_options(amazon_dir, tmp_path):
    d, reviews, paths = amazon_dir
    base = build_raw("amazon-books", {"max_len": 8}, data_dir=d)
    # the 2018 layout (JSON metadata with a flat "category") and literal reviews give the same instances
    write_amazon(tmp_path / "v2018", layout="2018")
    write_amazon(tmp_path / "literal", reviews_as_literal=True)
    for folder in ("v2018", "literal"):
        other = build_raw("amazon-books", {"max_len": 8}, data_dir=tmp_path / folder)
        for k in base.columns:
            np.testing.assert_array_equal(other.columns[k], base.columns[k], err_msg=f"{folder}: {k}")
        np.testing.assert_array_equal(other.split, base.split)
    # category level 1 and strict-time histories
    raw = decoded(build_raw("amazon-books", {"max_len": 5, "category_level": 1, "history_ties": "exclude",
                                             "valid_quantile": None}, data_dir=d))
    events = dedup(reviews)
    rows, t_test, _, _ = reference(events, max_len=5, ties="exclude", valid_q=0.0)
    rows = [r[:5] + (2 if r[5] == 2 else 0,) for r in rows]
    clicked = defaultdict(set)
    for u, i, _ in events:
        clicked[u].add(i)
    check_against_reference(raw, rows, t_test, amazon_category(paths, 1), clicked, 5)
    c = raw.columns
    ok = np.arange(5)[None, :] < raw.lengths["hist_ts"][:, None]
    assert (c["hist_ts"] < c["timestamp"][:, None])[ok].all()  # strictly earlier days only
    assert not (raw.split == 1).any()


def test_amazon_books_reads_in_chunks(amazon_dir, tmp_path, monkeypatch):
    from ctrgraph.data.recipes import amazon_books

    d, _, _ = amazon_dir
    write_amazon(tmp_path / "literal", reviews_as_literal=True)
    want = build_raw("amazon-books", {"max_len": 8}, data_dir=d)
    monkeypatch.setattr(amazon_books, "CHUNK_LINES", 7)
    monkeypatch.setattr(amazon_books, "CHUNK_BYTES", 1000)
    for folder in (d, tmp_path / "literal"):
        got = build_raw("amazon-books", {"max_len": 8}, data_dir=folder)
        for k in want.columns:
            np.testing.assert_array_equal(got.columns[k], want.columns[k])
    lines = (tmp_path / "literal" / "reviews_Books_5.json.gz").read_bytes()
    recs = gzip.decompress(lines).decode().splitlines()
    recs[40] = recs[40].replace("'asin'", "'ASIN'")
    (tmp_path / "literal" / "reviews_Books_5.json.gz").write_bytes(gzip.compress("\n".join(recs).encode()))
    with pytest.raises(DataError, match=r"reviews_Books_5\.json\.gz, line 41: no 'asin'"):
        build_raw("amazon-books", data_dir=tmp_path / "literal")


def test_amazon_books_errors(amazon_dir, tmp_path):
    d, _, _ = amazon_dir
    with pytest.raises(DataError, match=r"reviews_Books_5\.json.*ctrgraph download amazon-books"):
        build_raw("amazon-books", data_dir=tmp_path)
    (tmp_path / "reviews_Books_5.json").write_text(json.dumps({"reviewerID": "A", "asin": "1", "unixReviewTime": 5}))
    with pytest.raises(DataError, match=r"no meta file \(meta_Books\.json\.gz"):
        build_raw("amazon-books", data_dir=tmp_path)
    (tmp_path / "meta_Books.json").write_text(json.dumps({"asin": "1", "category": ["Books"]}) + "\n")
    # a key missing from the whole file / from one record
    (tmp_path / "reviews_Books_5.json").write_text(
        json.dumps({"reviewerID": "A", "asin": "1", "reviewTime": "x"}) + "\n")
    with pytest.raises(DataError, match=r"reviews_Books_5\.json lacks key\(s\) \['unixReviewTime'\]"):
        build_raw("amazon-books", data_dir=tmp_path)
    lines = [json.dumps({"reviewerID": "A", "asin": "1", "unixReviewTime": 5}), json.dumps({"reviewerID": "A",
                                                                                           "unixReviewTime": 6})]
    (tmp_path / "reviews_Books_5.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"reviews_Books_5\.json, line 2: no 'asin'"):
        build_raw("amazon-books", data_dir=tmp_path)
    (tmp_path / "reviews_Books_5.json").write_text("{\"reviewerID\": \"A\", \"asin\": \n")
    with pytest.raises(DataError, match=r"cannot parse .*reviews_Books_5\.json"):
        build_raw("amazon-books", data_dir=tmp_path)
    (tmp_path / "reviews_Books_5.json").write_text("user,item\n")
    with pytest.raises(DataError, match=r"reviews_Books_5\.json, line 1: not a JSON object"):
        build_raw("amazon-books", data_dir=tmp_path)
    # metadata without categories
    with gzip.open(d / "reviews_Books_5.json.gz", "rt") as f:
        (tmp_path / "reviews_Books_5.json").write_text(f.read())
    (tmp_path / "meta_Books.json").write_text(repr({"asin": "0000000001", "title": "x"}) + "\n")
    with pytest.raises(DataError, match=r"meta_Books\.json lacks key 'categories'"):
        build_raw("amazon-books", data_dir=tmp_path)
    with pytest.raises(DataError, match="meta file not found"):
        build_raw("amazon-books", {"meta": str(tmp_path / "nope.json.gz")}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="valid_quantile"):
        build_raw("amazon-books", {"valid_quantile": 0.9}, data_dir=d)


def test_amazon_books_download_from_urls(amazon_dir, tmp_path, monkeypatch):
    """The downloader with file:// URLs standing in for the official ones (no network in tests)."""
    from ctrgraph.data.recipes import amazon_books

    d, _, _ = amazon_dir
    monkeypatch.setattr(amazon_books, "URLS", {n: (d / n).as_uri() for n in amazon_books.URLS})
    folder = get_recipe("amazon-books").download(tmp_path)
    assert folder == tmp_path / "amazon-books"
    assert sorted(f.name for f in folder.iterdir()) == ["meta_Books.json.gz", "reviews_Books_5.json.gz"]
    assert len(build_raw("amazon-books", data_dir=folder)) == len(build_raw("amazon-books", data_dir=d))
    monkeypatch.setattr(amazon_books, "URLS", {"x.json.gz": (tmp_path / "missing.gz").as_uri()})
    with pytest.raises(DataError, match="download of .*missing.gz failed"):
        amazon_books.download(tmp_path)
    assert not list(folder.glob("*.part"))


def test_amazon_books_cached_load_and_sources(amazon_dir):
    d, _, _ = amazon_dir
    r = get_recipe("amazon-books")
    p = r.params()
    assert [f.name for f in r.sources(p, d)] == ["reviews_Books_5.json.gz", "meta_Books.json.gz"]
    assert r.download is not None and p.protocol == "deminet" and p.category_level == -1
    ds = load_dataset("amazon-books", {"max_len": 8}, data_dir=d)
    again = load_dataset("amazon-books", {"max_len": 8}, data_dir=d)
    assert len(ds) == len(again) > 0


# ------------------------------------------------------------------------------------- retailrocket

T0 = 1_433_221_332_117  # ms, as in events.csv


def retailrocket_fixture(seed: int = 1):
    """~300 events of 12 visitors (3 with fewer than 5 clicks) on 30 items, with category snapshots."""
    rng = np.random.default_rng(seed)
    items = [int(x) for x in rng.choice(np.arange(1000, 470000), 30, replace=False)]
    n_ev = [40, 35, 30, 30, 25, 25, 20, 15, 8, 4, 2, 1]
    events = []  # (timestamp, visitorid, event, itemid, transactionid)
    tx = 100
    for v, n in enumerate(n_ev):
        visitor = 257597 + 1000 * v
        for _ in range(n):
            t = T0 + int(rng.integers(0, 60 * 86_400)) * 1000 + int(rng.integers(0, 1000))
            e = ["view", "view", "view", "addtocart", "transaction"][int(rng.integers(0, 5))]
            it = items[int(rng.integers(0, len(items)))]
            events.append((t, visitor, e, it, tx if e == "transaction" else None))
            tx += e == "transaction"
    for k in range(6):  # a visitor and new items seen on the last days only (not in the train vocabularies)
        events.append((T0 + (61 + k) * 86_400_000, 999_999, "view", 900 + k % 2, None))
        events.append((T0 + (61 + k) * 86_400_000 + k, 257597 + 1000 * k, "view", 900 + k % 2, None))
    items += [900, 901]
    # a view and an add-to-cart of the same item in the same millisecond: one click
    t, v, _, it, _ = events[5]
    events[5] = (t, v, "view", it, None)
    events.append((t, v, "addtocart", it, None))
    # an exact tie between two different items of one visitor
    events.append((events[6][0], events[6][1], "view", items[0] if events[6][3] != items[0] else items[1], None))
    # snapshots: (timestamp, itemid, categoryid); items[0..2] change category, items[-2:] have none
    snaps = []
    for k, it in enumerate(items[:-2]):
        snaps.append((T0 + 7 * 86_400_000 * (k % 4), it, 1000 + k % 7))
    for k, it in enumerate(items[:3]):
        snaps.append((T0 + 30 * 86_400_000, it, 2000 + k))
    snaps.append((T0 + 21 * 86_400_000, items[3], 3000))  # same time as its first snapshot: the later row wins
    return events, snaps, items


def write_retailrocket(folder: Path, seed: int = 1, gz: bool = False):
    events, snaps, items = retailrocket_fixture(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ev = pd.DataFrame(events, columns=["timestamp", "visitorid", "event", "itemid", "transactionid"])
    ev = ev.astype({"transactionid": "Int64"})
    ev.to_csv(folder / ("events.csv.gz" if gz else "events.csv"), index=False)
    rows = []
    for t, it, c in snaps:
        rows += [(t, it, "categoryid", str(c)), (t, it, "790", "n5220.000"), (t, it, "888", "1154859 n24.000 102")]
    for it in items[-2:]:
        rows.append((T0, it, "available", "1"))
    props = pd.DataFrame(rows, columns=["timestamp", "itemid", "property", "value"])
    half = len(props) // 2
    props.iloc[:half].to_csv(folder / "item_properties_part1.csv", index=False)
    props.iloc[half:].to_csv(folder / "item_properties_part2.csv", index=False)
    return events, snaps


def rr_clicks(events, click=("view", "addtocart")):
    return dedup([(v, it, t) for t, v, e, it, _ in events if e in click])


def rr_category(snaps, mode):
    by_item = defaultdict(list)
    for k, (t, it, c) in enumerate(snaps):
        by_item[it].append((t, k, c))

    def cat_of(item, t_ms):
        s = sorted(by_item.get(item, []))
        if not s:
            return -1
        if mode == "latest":
            return s[-1][2]
        before = [x for x in s if x[0] <= t_ms]
        return (before[-1] if before else s[0])[2]
    return cat_of


@pytest.fixture(scope="module")
def rr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("retailrocket")
    events, snaps = write_retailrocket(d)
    return d, events, snaps


@pytest.mark.parametrize("mode", ["latest", "event"])
def test_retailrocket_matches_the_reference(rr_dir, mode):
    d, events, snaps = rr_dir
    raw = build_raw("retailrocket", {"max_len": 6, "category_at": mode}, data_dir=d)
    clicks = rr_clicks(events)
    rows, t_test, t_val, kept = reference(clicks, max_len=6)
    clicked = defaultdict(set)
    for u, i, _ in clicks:
        clicked[u].add(i)
    # the reference works in the file's milliseconds, the recipe gives seconds
    check_against_reference(raw, rows, t_test, rr_category(snaps, mode), clicked, 6, time_div=1000)
    assert set(raw.columns["user_id"].tolist()) == kept
    assert raw.meta["users_removed"] == len({u for u, _, _ in clicks} - kept) >= 3
    assert raw.meta["items_without_category"] >= 1 and -1 in set(raw.columns["category"].tolist())
    assert raw.meta["valid_point"] == pytest.approx(t_val / 1000)
    assert raw.columns["timestamp"].dtype == np.float64
    if mode == "event":  # the category changes over time for some items
        latest = rr_category(snaps, "latest")
        assert any(latest(i, 0) != c for i, c in zip(raw.columns["item_id"], raw.columns["category"]))
    check_train_vocab(raw)


def test_retailrocket_options(rr_dir, tmp_path):
    d, events, _ = rr_dir
    # transactions as clicks too, the default protocol's split, gzipped events
    write_retailrocket(tmp_path / "gz", gz=True)
    raw = build_raw("retailrocket", {"max_len": 4, "click_events": ["view", "addtocart", "transaction"],
                                     "min_user_events": 3, "negatives": 2}, data_dir=tmp_path / "gz")
    clicks = rr_clicks(events, ("view", "addtocart", "transaction"))
    rows, _, _, kept = reference(clicks, max_len=4, min_users=3)
    assert set(raw.columns["user_id"].tolist()) == kept
    assert len(raw) == 3 * len(rows) and (raw.columns["label"].reshape(-1, 3) == [1, 0, 0]).all()
    raw = build_raw("retailrocket", {"protocol": "default"}, data_dir=d)
    ts, pos = raw.columns["timestamp"], raw.columns["label"] == 1
    q8 = np.quantile(ts[pos], 0.8)
    assert (ts[raw.split == 2] >= q8).all() and (ts[raw.split != 2] < q8).all()
    assert raw.meta["users_removed"] == 0  # no user filter unless asked
    with pytest.raises(ConfigError, match="click_events"):
        build_raw("retailrocket", {"click_events": ["purchase"]}, data_dir=d)


def test_retailrocket_reads_properties_in_chunks(rr_dir, tmp_path, monkeypatch):
    from ctrgraph.data.recipes import retailrocket

    d, _, _ = rr_dir
    want = [build_raw("retailrocket", {"category_at": m}, data_dir=d) for m in ("latest", "event")]
    monkeypatch.setattr(retailrocket, "CHUNK_ROWS", 4)
    for w, m in zip(want, ("latest", "event")):
        got = build_raw("retailrocket", {"category_at": m}, data_dir=d)
        for k in w.columns:
            np.testing.assert_array_equal(got.columns[k], w.columns[k])
    for name in ("events.csv", "item_properties_part1.csv"):
        (tmp_path / name).write_text((d / name).read_text())
    lines = (d / "item_properties_part2.csv").read_text().splitlines()
    lines[11] = lines[11].split(",")[0] + ",x12,categoryid,5"  # data row 11: a bad itemid
    (tmp_path / "item_properties_part2.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"item_properties_part2\.csv: column 'itemid', row 11"):
        build_raw("retailrocket", data_dir=tmp_path)


def test_retailrocket_errors(rr_dir, tmp_path, capsys):
    d, _, _ = rr_dir
    with pytest.raises(DataError, match=r"(?s)no events\.csv.*kaggle datasets download -d retailrocket/ecommerce-dataset"):
        build_raw("retailrocket", data_dir=tmp_path)
    (tmp_path / "events.csv").write_text((d / "events.csv").read_text())
    (tmp_path / "item_properties_part1.csv").write_text((d / "item_properties_part1.csv").read_text())
    with pytest.raises(DataError, match=r"not \['item_properties_part2\.csv'\]"):
        build_raw("retailrocket", data_dir=tmp_path)
    (tmp_path / "item_properties_part2.csv").write_text("timestamp,itemid,property\n1,2,categoryid\n")
    with pytest.raises(DataError, match=r"item_properties_part2\.csv lacks column\(s\) \['value'\]"):
        build_raw("retailrocket", data_dir=tmp_path)
    (tmp_path / "item_properties_part2.csv").write_text("timestamp,itemid,property,value\n1,2,categoryid,abc\n")
    with pytest.raises(DataError, match=r"item_properties_part2\.csv: column 'value', row 1"):
        build_raw("retailrocket", data_dir=tmp_path)
    (tmp_path / "events.csv").write_text("timestamp,visitorid,itemid,transactionid\n1,2,3,\n")
    with pytest.raises(DataError, match=r"events\.csv lacks column\(s\) \['event'\]"):
        build_raw("retailrocket", data_dir=tmp_path)
    (tmp_path / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n1,2,view,3,\n1,2,buy,3,\n")
    with pytest.raises(DataError, match=r"events\.csv: column 'event', row 2"):
        build_raw("retailrocket", data_dir=tmp_path)
    # the downloader only prints the Kaggle command (no network, nothing downloaded)
    with pytest.raises(DataError, match="nothing downloaded"):
        get_recipe("retailrocket").download(tmp_path / "dl")
    assert "kaggle datasets download -d retailrocket/ecommerce-dataset" in capsys.readouterr().out
    (tmp_path / "dl2" / "retailrocket").mkdir(parents=True)
    for name in ("events.csv", "item_properties_part1.csv", "item_properties_part2.csv"):
        (tmp_path / "dl2" / "retailrocket" / name).write_text((d / name).read_text())
    assert get_recipe("retailrocket").download(tmp_path / "dl2") == tmp_path / "dl2" / "retailrocket"


# ------------------------------------------------------------------------------------- taobao option


def write_taobao(path: Path, seed: int = 2):
    """UserBehavior.csv (no header): 10 users, 25 items, ~300 behaviours, second-resolution times."""
    rng = np.random.default_rng(seed)
    rows = []
    n_ev = [50, 45, 40, 35, 30, 30, 25, 6, 4, 3]
    for u, n in enumerate(n_ev):
        for _ in range(n):
            it = int(rng.integers(0, 25))
            b = ["pv", "pv", "pv", "pv", "cart", "fav", "buy"][int(rng.integers(0, 7))]
            rows.append((100 + u, 5000 + it, 70 + it % 6, b, 1511544070 + int(rng.integers(0, 2000)) * 30))
    for k in range(6):  # a user and new items seen at the end only
        rows.append((999, 5090 + k % 2, 79, "pv", 1511544070 + 2100 * 30 + k))
        rows.append((100 + k, 5090 + k % 2, 79, "pv", 1511544070 + 2100 * 30 + k))
    rows.append(rows[0])  # exact duplicate row
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return rows


def test_taobao_deminet_protocol_on_a_written_file(tmp_path):
    f = tmp_path / "UserBehavior.csv"
    rows = write_taobao(f)
    default = build_raw("taobao", {"path": str(f), "max_len": 7})
    raw = build_raw("taobao", {"path": str(f), "max_len": 7, "protocol": "deminet"})
    clicks = dedup([(u, i, t) for u, i, c, b, t in rows if b == "pv"])
    ref, t_test, _, kept = reference(clicks, max_len=7)
    cat_votes = defaultdict(lambda: defaultdict(int))
    for u, i, c, b, t in dedup(rows):
        if u in kept:
            cat_votes[i][c] += 1
    cat_of = {i: min(v.items(), key=lambda x: (-x[1], x[0]))[0] for i, v in cat_votes.items()}
    clicked = defaultdict(set)
    for u, i, _ in clicks:
        clicked[u].add(i)
    check_against_reference(raw, ref, t_test, lambda i, t: cat_of[i], clicked, 7, cat_field="category_id")
    n_users = len({r[0] for r in rows})
    assert raw.meta["users_removed"] == n_users - len(kept) >= 2  # users with < 5 clicks (pv) removed
    assert set(default.columns["user_id"].tolist()) > set(raw.columns["user_id"].tolist())
    # min_user_events overrides the 5, also with the default protocol
    raw2 = build_raw("taobao", {"path": str(f), "max_len": 7, "min_user_events": 20})
    assert set(raw2.columns["user_id"].tolist()) == {u for u in kept if sum(1 for c in clicks if c[0] == u) >= 20}
    assert "split_point" not in raw2.meta and "test_from_ts" in raw2.meta
    check_train_vocab(raw, cat_field="category_id")


def test_taobao_deminet_protocol_on_the_shared_sample():
    f = shared_data("taobao-userbehavior-sample") / "UserBehavior_head_814users.csv.gz"
    ev = pd.read_csv(f, header=None, names=["user", "item", "cat", "btag", "ts"]).drop_duplicates()
    raw = build_raw("taobao", {"path": str(f), "max_len": 20, "protocol": "deminet"})
    pv = ev[ev["btag"] == "pv"]
    n = pv.groupby("user").size()
    kept = n[n >= 5]
    assert set(np.unique(raw.columns["user_id"]).tolist()) == set(kept.index.tolist())
    assert raw.meta["users_removed"] == int((n < 5).sum()) + int(ev["user"].nunique() - n.size)
    assert raw.meta["positives"] == int((kept - 1).sum())
    clicks_ts = np.sort(pv[pv["user"].isin(kept.index)]["ts"].to_numpy())
    t_test, t_val = np.quantile(clicks_ts, 0.8), np.quantile(clicks_ts, 0.7)
    ts, s = raw.columns["timestamp"], raw.split
    assert raw.meta["split_point"] == t_test
    assert (ts[s == 0] <= t_val).all() and ((ts[s == 1] > t_val) & (ts[s == 1] <= t_test)).all()
    assert (ts[s == 2] > t_test).all() and s.min() == 0 and s.max() == 2
    np.testing.assert_array_equal(s[1::2], s[0::2])
    # the default protocol is unchanged by the option (same rows as before: spot-check the counts)
    default = build_raw("taobao", {"path": str(f), "max_len": 20})
    assert default.meta["positives"] == 74_881 and len(default) == 149_762
    raw.validate()
