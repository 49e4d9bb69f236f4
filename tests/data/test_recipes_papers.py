"""The recipes of the papers' own data sets: criteo, avazu (GraphFM), alimama, tmall (DG-ENN),
amazon-electronics, amazon-books ``protocol="din"`` and ml20m (Res-embedding).

Each is checked against a brute-force reference (plain Python loops) on the team's shared samples
(skipped when ../shared/data is absent) or on small files written here in the official layouts.
"""
from __future__ import annotations

import gzip
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_data

from ctrgraph.errors import ConfigError, DataError
from ctrgraph.registry import RECIPES, build_raw, get_recipe, load_dataset

PAPER_RECIPES = ["criteo", "avazu", "alimama", "tmall", "amazon-electronics", "ml20m"]


def test_registered_with_downloader_or_manual_step(tmp_path):
    for name in PAPER_RECIPES:
        r = RECIPES[name]
        assert r.download is not None, name
        doc = " ".join(sys.modules[r.build.__module__].__doc__.split())
        assert "Departures" in doc and "http" in doc and ("never bundled" in doc), name
    for name, url in (("avazu", "kaggle.com/c/avazu-ctr-prediction"), ("tmall", "tianchi.aliyun.com/dataset/42"),
                      ("alimama", "tianchi.aliyun.com/dataset/56")):
        with pytest.raises(ConfigError, match=f"no downloader.*{url}"):
            get_recipe(name).download(tmp_path)


# ------------------------------------------------------------------------------------------ criteo

def criteo_reference(lines: list[list[str]], min_count: int):
    """Per categorical field: the set of kept values (count over all rows >= min_count)."""
    kept = []
    for j in range(14, 40):
        c = Counter(r[j] for r in lines)
        kept.append({v for v, k in c.items() if k >= min_count})
    return kept


def _ref_scale(s: str) -> float:
    if s == "":
        return 0.0
    x = float(s)
    return float(int(math.log(x) ** 2)) if x > 2 else x


def test_criteo_sample_graphfm_protocol():
    d = shared_data("criteo-sample")
    raw = build_raw("criteo", {"path": "criteo_train_head10000.txt.gz"}, d)
    with gzip.open(d / "criteo_train_head10000.txt.gz", "rt") as f:
        lines = [ln.rstrip("\n").split("\t") for ln in f]
    assert len(raw) == len(lines) == 10_000
    assert [f.name for f in raw.schema.features] == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    np.testing.assert_array_equal(raw.columns["label"], [int(r[0]) for r in lines])
    kept = criteo_reference(lines, 11)
    for j in range(26):
        col = raw.columns[f"C{j + 1}"]
        vals = [r[14 + j] for r in lines]
        rare = np.array([v not in kept[j] for v in vals])
        assert ((col == -1) == rare).all()
        assert raw.meta["values_kept"][f"C{j + 1}"] == len(kept[j])
        # kept values: one code per distinct string and back
        pairs = {(v, int(c)) for v, c, r in zip(vals, col, rare) if not r}
        assert len(pairs) == len({v for v, _ in pairs}) == len({c for _, c in pairs})
    assert raw.meta["rare_rows"]["C3"] > 0
    for j in (0, 1, 4, 12):
        np.testing.assert_array_equal(raw.columns[f"I{j + 1}"], [_ref_scale(r[1 + j]) for r in lines])
    assert raw.columns["I2"].min() < 0  # counts <= 2 (here negative ones) stay as they are
    # random 8:1:1, stratified by the label
    assert raw.counts() == {"train": 8000, "valid": 1000, "test": 1000}
    lab = raw.columns["label"]
    for c in (0, 1):
        assert abs((raw.split[lab == c] == 2).mean() - 0.1) < 0.002
    raw.validate()
    ds = load_dataset("criteo", {"path": "criteo_train_head10000.txt.gz", "max_rows": 2000}, d)
    assert len(ds) == 2000


def test_criteo_deepctr_csv_layout():
    d = shared_data("criteo-sample")
    raw = build_raw("criteo", {"path": "criteo_sample_deepctr.csv"}, d)
    df = pd.read_csv(d / "criteo_sample_deepctr.csv", dtype=str, keep_default_na=False)
    assert len(raw) == 200
    np.testing.assert_array_equal(raw.columns["I3"], [_ref_scale(v) for v in df["I3"]])
    assert raw.columns["I3"][0] == int(math.log(260.0) ** 2)


def write_criteo(path: Path, rows: list[list[str]]) -> None:
    path.write_text("".join("\t".join(r) + "\n" for r in rows))


def _criteo_row(label: int, c1: str, i1: str = "1") -> list[str]:
    return [str(label), i1] + [""] * 12 + [c1] + ["abc"] * 25


def test_criteo_threshold_replaces_rare_values(tmp_path):
    rows = [_criteo_row(i % 2, "often") for i in range(11)] + [_criteo_row(i % 2, "ten") for i in range(10)]
    rows += [_criteo_row(1, "once", i1="1000")]
    write_criteo(tmp_path / "train.txt", rows)
    raw = build_raw("criteo", {}, tmp_path)
    c1 = raw.columns["C1"]
    assert (c1[:11] >= 0).all() and len(set(c1[:11])) == 1  # seen 11 times: its own value
    assert (c1[11:] == -1).all()  # seen 10 times or once: the rare value
    assert raw.columns["I1"][-1] == int(math.log(1000) ** 2) == 47
    assert raw.meta["numeric_missing"]["I2"] == len(rows) and (raw.columns["I2"] == 0).all()
    loose = build_raw("criteo", {"rare_min_count": 10}, tmp_path)
    assert (loose.columns["C1"][11:21] >= 0).all() and loose.columns["C1"][-1] == -1
    # counting on the train split only can only make more values rare
    tr = build_raw("criteo", {"rare_min_count": 10, "count_on": "train"}, tmp_path)
    assert ((tr.columns["C1"] == -1) >= (loose.columns["C1"] == -1)).all()
    b = build_raw("criteo", {"numeric": "bucket"}, tmp_path)
    assert b.schema["I1"].kind.value == "categorical" and b.columns["I1"][-1] == 47
    assert len(set(b.columns["I2"])) == 1  # missing: one value of its own


def test_criteo_split_seeded_disjoint_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_criteo_row(int(rng.random() < 0.3), f"v{rng.integers(5)}") for _ in range(1000)]
    write_criteo(tmp_path / "train.txt", rows)
    a = build_raw("criteo", {}, tmp_path)
    b = build_raw("criteo", {}, tmp_path)
    c = build_raw("criteo", {"seed": 7}, tmp_path)
    np.testing.assert_array_equal(a.split, b.split)
    assert (a.split != c.split).any()
    assert a.counts() == {"train": 800, "valid": 100, "test": 100}
    lab = a.columns["label"]
    for cls in (0, 1):
        n = (lab == cls).sum()
        assert (a.split[lab == cls] == 2).sum() == round(0.1 * n)
    assert not np.isin(a.split, (0, 1, 2), invert=True).any()  # every row in exactly one split


def test_criteo_malformed_files(tmp_path):
    write_criteo(tmp_path / "train.txt", [_criteo_row(0, "a"), _criteo_row(1, "b")[:-1]])
    with pytest.raises(DataError, match="row 2: 39 tab-separated fields, expected 40"):
        build_raw("criteo", {}, tmp_path)
    write_criteo(tmp_path / "train.txt", [_criteo_row(0, "a"), _criteo_row(1, "b", i1="x7")])
    with pytest.raises(DataError, match=r"column 'I1', row 2: 'x7' is not a number"):
        build_raw("criteo", {}, tmp_path)
    write_criteo(tmp_path / "train.txt", [_criteo_row(0, "a"), _criteo_row(2, "b")])
    with pytest.raises(DataError, match=r"column 'label', row 2: label '2'"):
        build_raw("criteo", {}, tmp_path)
    write_criteo(tmp_path / "train.txt", [_criteo_row(0, "a") + ["extra"]])
    with pytest.raises(DataError, match="row 1: 41 tab-separated fields"):
        build_raw("criteo", {}, tmp_path)
    with pytest.raises(DataError, match=r"no train\.txt.*ailab\.criteo\.com"):
        build_raw("criteo", {}, tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- avazu

def test_avazu_sample_graphfm_protocol():
    d = shared_data("avazu-sample")
    raw = build_raw("avazu", {}, d)
    df = pd.read_csv(d / "avazu_train_head100_deepctr.csv", dtype=str)
    assert len(raw) == 100 and len(raw.schema.features) == 23
    assert raw.schema.features[0].name == "id" and raw.schema.features[1].name == "hour"
    for c in df.columns.drop("click"):
        counts = Counter(df[c])
        rare = np.array([counts[v] < 5 for v in df[c]])
        assert ((raw.columns[c] == -1) == rare).all(), c
    assert (raw.columns["id"] == -1).all()  # unique per row: always rare
    assert raw.counts() == {"train": 80, "valid": 10, "test": 10}
    assert next(f.name for f in build_raw("avazu", {"keep_id": False}, d).schema.features) == "hour"
    raw.validate()


def test_avazu_threshold_and_errors(tmp_path):
    head = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category," \
           "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21\n"
    body = "".join(f"{i},{i % 2},14102100,1005,0,{'five' if i < 5 else 'four'},d,c,a,ad,ac,di,ip,m,1,2,"
                   f"1,2,3,4,5,6,7,8\n" for i in range(9))
    (tmp_path / "train.csv").write_text(head + body)
    raw = build_raw("avazu", {}, tmp_path)
    s = raw.columns["site_id"]
    assert (s[:5] >= 0).all() and (s[5:] == -1).all()  # 5 occurrences kept, 4 rare
    assert (raw.columns["C21"] >= 0).all()
    (tmp_path / "train.csv").write_text(head.replace("click,", "") + body)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['click'\]"):
        build_raw("avazu", {}, tmp_path)
    (tmp_path / "train.csv").write_text(head + body.replace("0,14102100", "yes,14102100", 1))
    with pytest.raises(DataError, match="column 'click', row 1"):
        build_raw("avazu", {}, tmp_path)


# ----------------------------------------------------------------------------------------- alimama

def test_alimama_dmr_sample_fields_and_histories():
    d = shared_data("alimama-dmr-sample")
    raw = build_raw("alimama", {}, d)
    x = pd.read_csv(d / "alimama_sampled_train.txt.gz", header=None).to_numpy()
    assert len(raw) == 500 and raw.meta["layout"] == "dmr"
    names = [f.name for f in raw.schema.features if f.kind.value != "sequence"]
    assert len(names) == 12 and names[0] == "user_id" and names[9] == "adgroup_id"
    np.testing.assert_array_equal(raw.columns["label"], x[:, 266])
    np.testing.assert_array_equal(raw.columns["cms_segid"], x[:, 251])
    np.testing.assert_array_equal(raw.columns["brand"], x[:, 263])
    for i in range(0, 500, 37):
        n = int(x[i, 150:200].sum())
        assert raw.lengths["hist_cate_id"][i] == n
        assert list(raw.columns["hist_cate_id"][i, :n]) == list(x[i, 100 - n:100])  # left padding moved right
        assert list(raw.columns["hist_brand"][i, :n]) == list(x[i, 150 - n:150])
        assert (raw.columns["hist_cate_id"][i, n:] == 0).all()
    assert raw.counts() == {"train": 400, "valid": 50, "test": 50}
    assert len(build_raw("alimama", {"extra_fields": True}, d).schema.features) == 15 + 3
    raw.validate()


def _tianchi_files(d: Path, clicks: list[tuple[int, int, int]], ads: dict[int, tuple], profiles: dict[int, tuple],
                   nonclk: list[tuple[int, int, int]] = ()) -> None:
    rs = ["user,time_stamp,adgroup_id,pid,nonclk,clk"]
    rs += [f"{u},{t},{a},430548_1007,0,1" for u, t, a in clicks]
    rs += [f"{u},{t},{a},430539_1007,1,0" for u, t, a in nonclk]
    (d / "raw_sample.csv").write_text("\n".join(rs) + "\n")
    (d / "ad_feature.csv").write_text("adgroup_id,cate_id,campaign_id,customer,brand,price\n" + "".join(
        f"{a},{c},{a * 10},{a * 100},{b},1.5\n" for a, (c, b) in ads.items()))
    (d / "user_profile.csv").write_text(
        "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
        "new_user_class_level \n" + "".join(f"{u},{s},1,2,3,{pv},3,0,{nc}\n" for u, (s, pv, nc) in profiles.items()))


def dgenn_reference(events: list[tuple], max_len: int):
    """events: (user, time, file position, item). Per user with >= 3: [(split, target, history)]."""
    by = defaultdict(list)
    for u, t, pos, i in events:
        by[u].append((t, pos, i))
    out = {}
    for u, ev in by.items():
        ev.sort()
        if len(ev) < 3:
            continue
        items = [i for _, _, i in ev]
        T = len(items)
        out[u] = [(s, items[T - 3 + s], items[:T - 3 + s][-max_len:]) for s in range(3)]
    return out


def check_dgenn(raw, ref, user_field, item_field, hist_field, clicked, negatives=10):
    """Every target row matches the reference, its negatives share its history and were never
    clicked by the user, and each split has 1 + negatives rows per user."""
    c = raw.columns
    lab, split = c["label"], raw.split
    got = {}
    for r in np.flatnonzero(lab == 1):
        u = int(c[user_field][r])
        hist = list(c[hist_field][r, :raw.lengths[hist_field][r]])
        got.setdefault(u, []).append((int(split[r]), int(c[item_field][r]), hist))
    assert {u: sorted(v) for u, v in got.items()} == {u: sorted(v) for u, v in ref.items()}
    for r in np.flatnonzero(lab == 0):
        u = int(c[user_field][r])
        assert int(c[item_field][r]) not in clicked[u]
    for u in ref:
        for s in range(3):
            assert ((c[user_field] == u) & (split == s)).sum() == 1 + negatives
    # negatives follow their positive (interleaved) with the same history
    for r in np.flatnonzero(lab == 1)[:20]:
        for k in range(1, negatives + 1):
            assert lab[r + k] == 0 and c[user_field][r + k] == c[user_field][r]
            np.testing.assert_array_equal(c[hist_field][r + k], c[hist_field][r])


def test_alimama_tianchi_layout_dgenn_protocol(tmp_path):
    rng = np.random.default_rng(1)
    ads = {a: (a % 7, "NULL" if a % 5 == 0 else a % 11) for a in range(100, 160)}
    clicks = [(int(u), int(rng.integers(1000, 1100)), int(rng.integers(100, 160))) for u in rng.integers(1, 9, 80)]
    clicks = list(dict.fromkeys(clicks))
    _tianchi_files(tmp_path, clicks, ads, {u: (u * 3, "" if u == 2 else 2, 1) for u in range(1, 8)},
                   nonclk=[(1, 1000, 150)])
    raw = build_raw("alimama", {}, tmp_path)
    assert raw.meta["layout"] == "tianchi"
    ref = dgenn_reference([(u, t, k, a) for k, (u, t, a) in enumerate(clicks)], 50)
    clicked = defaultdict(set)
    for u, _, a in clicks:
        clicked[u].add(a)
    check_dgenn(raw, ref, "user_id", "adgroup_id", "hist_adgroup_id", clicked)
    c = raw.columns
    for r in range(0, len(raw), 13):  # item attributes follow the candidate, NULL brand -> -1
        cat, brand = ads[int(c["adgroup_id"][r])]
        assert c["cate_id"][r] == cat and c["brand"][r] == (-1 if brand == "NULL" else brand)
    assert (c["cms_segid"][c["user_id"] == 8] == -1).all()  # no profile row
    assert (c["pvalue_level"][c["user_id"] == 2] == -1).all()  # empty level
    assert "new_user_class_level" in raw.schema.names  # header name with a trailing space
    raw.validate()
    assert len(load_dataset("alimama", {}, tmp_path)) == len(raw)
    sub = build_raw("alimama", {"max_users": 3}, tmp_path)
    assert np.unique(sub.columns["user_id"]).size <= 3


def test_alimama_errors(tmp_path):
    with pytest.raises(DataError, match=r"no raw_sample\.csv.*tianchi\.aliyun\.com/dataset/56"):
        build_raw("alimama", {}, tmp_path)
    (tmp_path / "alimama_x_train.txt").write_text(",".join(["1"] * 266) + "\n")
    with pytest.raises(DataError, match="266 columns, the DMR layout has 267"):
        build_raw("alimama", {}, tmp_path)


# ------------------------------------------------------------------------------------------- tmall

def _tmall_files(d: Path, log: list[tuple], info: dict[int, tuple[str, str]]) -> None:
    (d / "user_log_format1.csv").write_text("user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
                                            + "".join(f"{u},{i},{i % 6},{i % 4},{b},{t:04d},{a}\n"
                                                      for u, i, b, t, a in log))
    (d / "user_info_format1.csv").write_text("user_id,age_range,gender\n" + "".join(
        f"{u},{a},{g}\n" for u, (a, g) in info.items()))
    (d / "train_format1.csv").write_text("user_id,merchant_id,label\n1,3,0\n2,1,1\n")


def test_tmall_official_layout_dgenn_protocol(tmp_path):
    rng = np.random.default_rng(2)
    log = []
    for _ in range(150):
        i = int(rng.integers(1, 60))
        log.append((int(rng.integers(1, 12)), i, "" if i % 9 == 0 else i % 5, int(rng.choice([511, 601, 1111])),
                    int(rng.integers(0, 4))))
    _tmall_files(tmp_path, log, {u: ("" if u == 3 else str(u % 8), str(u % 3)) for u in range(1, 11)})
    raw = build_raw("tmall", {}, tmp_path)
    assert [f.name for f in raw.schema.features][:8] == ["user_id", "age_range", "gender", "item_id", "cat_id",
                                                         "brand_id", "time_stamp", "action_type"]
    ref = dgenn_reference([(u, t, k, i) for k, (u, i, _, t, _) in enumerate(log)], 50)  # ties: file order
    clicked = defaultdict(set)
    for u, i, *_ in log:
        clicked[u].add(i)
    check_dgenn(raw, ref, "user_id", "item_id", "hist_item_id", clicked)
    c = raw.columns
    first_brand = {}
    for _, i, b, _, _ in log:
        first_brand.setdefault(i, -1 if b == "" else b)
    for r in range(len(raw)):
        assert c["cat_id"][r] == c["item_id"][r] % 6 and c["brand_id"][r] == first_brand[int(c["item_id"][r])]
    assert (c["age_range"][c["user_id"] == 3] == -1).all() and (c["gender"][c["user_id"] == 11] == -1).all()
    pos = np.flatnonzero(c["label"] == 1)[0]  # the context of a target is copied to its negatives
    assert (c["time_stamp"][pos:pos + 11] == c["time_stamp"][pos]).all()
    raw.validate()
    assert len(load_dataset("tmall", {}, tmp_path)) == len(raw)
    clicks_only = build_raw("tmall", {"click_actions": [0]}, tmp_path)
    assert set(clicks_only.columns["action_type"].tolist()) == {0}
    assert len(build_raw("tmall", {"seller": True}, tmp_path).schema.features) == len(raw.schema.features) + 1


def test_tmall_errors(tmp_path):
    with pytest.raises(DataError, match=r"no user_log_format1\.csv.*tianchi\.aliyun\.com/dataset/42"):
        build_raw("tmall", {}, tmp_path)
    _tmall_files(tmp_path, [(1, 2, 3, 511, 0)], {1: ("2", "0")})
    with pytest.raises(DataError, match="no user has 3 behaviours"):
        build_raw("tmall", {}, tmp_path)
    with open(tmp_path / "user_log_format1.csv", "a") as f:
        f.write("1,x9,3,1,2,0512,0\n")
    with pytest.raises(DataError, match="column 'item_id', row 2"):
        build_raw("tmall", {}, tmp_path)
    (tmp_path / "user_info_format1.csv").unlink()
    with pytest.raises(DataError, match=r"not user_info_format1\.csv"):
        build_raw("tmall", {}, tmp_path)


# ------------------------------------------------------------------------------ amazon (DIN protocol)

def din_reference(reviews: list[tuple], max_len: int, din_valid: bool = True):
    """reviews: (user, item, time). Positives (user, item, history, split) in DIN's protocol."""
    by = defaultdict(list)
    for u, i, t in reviews:
        by[u].append((t, i))
    out = []
    for u, ev in by.items():
        items = [i for _, i in sorted(ev)]
        n = len(items)
        for k in range(1, n):
            s = 2 if k == n - 1 else (1 if din_valid and k == n - 2 and n >= 3 else 0)
            out.append((u, items[k], tuple(items[:k][-max_len:]), s))
    return sorted(out)


def check_din(raw, reviews, max_len=50, din_valid=True):
    c = raw.columns
    lab = c["label"]
    got = sorted((c["user_id"][r].item(), c["item_id"][r].item(),
                  tuple(x.item() for x in c["hist_item_id"][r, :raw.lengths["hist_item_id"][r]]), int(raw.split[r]))
                 for r in np.flatnonzero(lab == 1))
    assert got == din_reference(reviews, max_len, din_valid)
    seen = defaultdict(set)
    for u, i, _ in reviews:
        seen[u].add(i)
    for r in np.flatnonzero(lab == 0):
        assert c["item_id"][r].item() not in seen[c["user_id"][r].item()]
        assert lab[r - 1] == 1 and raw.split[r] == raw.split[r - 1]
        np.testing.assert_array_equal(c["hist_item_id"][r], c["hist_item_id"][r - 1])
    assert (lab == 0).sum() == (lab == 1).sum()  # one negative per positive


def test_amazon_electronics_din_sample():
    d = shared_data("amazon-electronics-din-tiny")
    raw = build_raw("amazon-electronics", {}, d)
    df = pd.read_csv(d / "amazon_electronics_sample.csv")
    check_din(raw, list(df[["user_id", "item_id", "time"]].itertuples(index=False, name=None)))
    cat = dict(zip(df["item_id"], df["cate_id"]))
    c = raw.columns
    assert all(c["category"][r] == cat[c["item_id"][r]] for r in range(len(raw)))
    assert all(c["hist_category"][r, k] == cat[c["hist_item_id"][r, k]]
               for r in range(len(raw)) for k in range(raw.lengths["hist_item_id"][r]))
    raw.validate()
    res = build_raw("amazon-electronics", {"protocol": "res"}, d)
    users = res.columns["user_id"]
    assert (res.columns["label"] == 1).sum() == (df["user_id"].value_counts() >= 2).sum()  # one pair per user
    for s in (0, 1, 2):  # users split: no user in two splits
        others = set(users[res.split != s].tolist())
        assert not set(users[res.split == s].tolist()) & others
    ds = load_dataset("amazon-electronics", {}, d)
    assert len(ds) == len(raw)


def _amazon_json(d: Path, reviews: list[tuple], cats: dict[str, list[str]], name: str) -> None:
    with gzip.open(d / f"reviews_{name}_5.json.gz", "wt") as f:
        for u, i, t in reviews:
            f.write(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0}) + "\n")
    with gzip.open(d / f"meta_{name}.json.gz", "wt") as f:
        for i, path in cats.items():
            f.write(repr({"asin": i, "categories": [path, ["Other"]], "title": "t"}) + "\n")


def _reviews(rng, n_users=12, n_items=30):
    items = [f"B{k:09d}" for k in range(n_items)]
    out = set()
    for u in range(n_users):
        for _ in range(int(rng.integers(2, 9))):
            out.add((f"U{u}", items[int(rng.integers(n_items))], int(rng.integers(10, 20)) * 86400))
    return sorted(out), items


@pytest.mark.parametrize("name,recipe,params", [
    ("Electronics", "amazon-electronics", {}),
    ("Books", "amazon-books", {"protocol": "din"}),
])
def test_amazon_json_layout_din_protocol(tmp_path, name, recipe, params):
    from ctrgraph.data.recipes.amazon_books import decode_asin

    rng = np.random.default_rng(3)
    reviews, items = _reviews(rng)
    _amazon_json(tmp_path, reviews, {i: [name, f"Leaf{k % 4}"] for k, i in enumerate(items)}, name)
    raw = build_raw(recipe, params, tmp_path)
    c = dict(raw.columns)
    c["item_id"] = decode_asin(c["item_id"])
    c["hist_item_id"] = decode_asin(c["hist_item_id"])
    view = type("V", (), {"columns": c, "lengths": raw.lengths, "split": raw.split})
    check_din(view, reviews)
    names = raw.meta["category_names"]
    leaf = {i: f"Leaf{k % 4}" for k, i in enumerate(items)}
    assert all(names[raw.columns["category"][r]] == leaf[c["item_id"][r]] for r in range(len(raw)))
    no_valid = build_raw(recipe, dict(params, din_valid=False), tmp_path)
    assert (no_valid.split != 1).all()


def test_amazon_electronics_errors(tmp_path):
    with pytest.raises(DataError, match=r"no reviews_Electronics_5\.json\.gz.*ctrgraph download amazon-electronics"):
        build_raw("amazon-electronics", {}, tmp_path)
    (tmp_path / "x.csv").write_text("user_id,item_id,time\n1,2,3\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['cate_id'\]"):
        build_raw("amazon-electronics", {}, tmp_path)
    (tmp_path / "x.csv").write_text("user_id,item_id,time,cate_id\n1,2,3,4\n")
    with pytest.raises(DataError, match="no user has 2 reviews"):
        build_raw("amazon-electronics", {}, tmp_path)


# ------------------------------------------------------------------------------------------- ml20m

def _ml20m(d: Path, ratings: list[tuple], genres: dict[int, str]) -> None:
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{r},{t}\n" for u, m, r, t in ratings))
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f'{m},"Movie {m}, The (1999)",{g}\n' for m, g in genres.items()))


def test_ml20m_official_layout_res_protocol(tmp_path):
    rng = np.random.default_rng(4)
    genres = {m: ["Drama|Comedy", "Action", "(no genres listed)"][m % 3] for m in range(1, 40)}
    ratings = {}
    for u in range(1, 30):
        for _ in range(int(rng.integers(1, 25))):
            m = int(rng.integers(1, 40))
            ratings[(u, m)] = (float(rng.choice([0.5, 2.5, 3.0, 3.5, 5.0])), int(rng.integers(100, 110)))
    rows = [(u, m, r, t) for (u, m), (r, t) in ratings.items()]
    _ml20m(tmp_path, rows, genres)
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,2,fun,3\n")
    raw = build_raw("ml20m", {"max_len": 5}, tmp_path)
    assert len(raw) == len(rows)
    c = raw.columns
    for r in range(len(raw)):
        u, m, t = int(c["user_id"][r]), int(c["item_id"][r]), int(c["timestamp"][r])
        rating = ratings[(u, m)][0]
        assert c["label"][r] == (rating > 3)
        earlier = sorted((tt, mm) for (uu, mm), (rr, tt) in ratings.items() if uu == u and tt < t and rr >= 3)
        assert list(c["hist_item_id"][r, :raw.lengths["hist_item_id"][r]]) == [mm for _, mm in earlier][-5:]
        assert list(c["genres"][r, :raw.lengths["genres"][r]]) == genres[m].split("|")
        hg = c["hist_genre"][r, :raw.lengths["hist_genre"][r]]
        assert list(hg) == [genres[mm].split("|")[0] for _, mm in earlier][-5:]
    # split by users, seeded, disjoint
    for s in (0, 1, 2):
        assert not set(c["user_id"][raw.split == s]) & set(c["user_id"][raw.split != s])
    again = build_raw("ml20m", {"max_len": 5}, tmp_path)
    np.testing.assert_array_equal(again.split, raw.split)
    assert (build_raw("ml20m", {"max_len": 5, "seed": 9}, tmp_path).split != raw.split).any()
    order = build_raw("ml20m", {"history_ties": "order"}, tmp_path)
    assert (order.lengths["hist_item_id"].sum() >= raw.lengths["hist_item_id"].sum())
    raw.validate()


def test_ml20m_errors(tmp_path):
    with pytest.raises(DataError, match=r"no ratings\.csv.*ctrgraph download ml20m"):
        build_raw("ml20m", {}, tmp_path)
    _ml20m(tmp_path, [(1, 1, 4.0, 5), (1, 7, 4.0, 6)], {1: "Drama"})
    with pytest.raises(DataError, match="movie .*7.* has no row in the movie table"):
        build_raw("ml20m", {}, tmp_path)
    (tmp_path / "movies.csv").unlink()
    with pytest.raises(DataError, match="no movies.csv"):
        build_raw("ml20m", {}, tmp_path)
