"""Recipes ml1m, taobao and the custom-data recipes table and log."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrgraph.registry import build_raw, load_dataset
from ctrgraph.data.schema import Kind, Role
from ctrgraph.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"  # tests/data/ -> the folder holding shared/


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"shared data {p} not available")
    return p


# ----------------------------------------------------------------------------------------- ml1m


@pytest.fixture(scope="module")
def ml1m():
    return build_raw("ml1m", data_dir=shared("ml-1m"))


def test_ml1m_graphfm_protocol(ml1m):
    raw = ml1m
    assert len(raw) == 739_012
    assert int(raw.columns["label"].sum()) == 348_971 + 226_310
    feats = raw.schema.features
    assert [f.name for f in feats] == ["gender", "age", "occupation", "zipcode", "release_year", "genres", "timestamp"]
    assert not raw.schema.by_role(Role.USER, Role.ITEM)
    assert not {"user_id", "movie_id", "item_id"} & set(raw.schema.names)
    assert raw.schema["genres"].kind == Kind.MULTI_VALUED and raw.schema["genres"].max_len == 6
    assert raw.schema["timestamp"].kind == Kind.NUMERIC and raw.schema["timestamp"].role == Role.CONTEXT
    assert raw.counts() == {"train": 591_210, "valid": 73_901, "test": 73_901}
    ts = raw.columns["timestamp"]
    assert not np.isnan(ts).any() and ts.min() == 0.0 and ts.max() == 1.0
    years = set(raw.columns["release_year"].tolist())
    assert {"1919-1929", "1930-1939", "1960-1969", "1970", "2000"} <= years and len(years) <= 36
    raw.validate()


def test_ml1m_subsample(tmp_path):
    """max_rows: a uniform random subsample of the protocol's instances (rating 3 dropped first), seeded,
    then the same 8:1:1 split; its rows are rows of the full set."""
    d = shared("ml-1m")
    (tmp_path / "ml-1m").mkdir()
    pd.read_csv(d / "ratings.csv.gz", nrows=4000).to_csv(tmp_path / "ml-1m" / "ratings.csv", index=False)
    for f in ("users.dat", "movies.dat"):
        shutil.copy(d / f, tmp_path / "ml-1m" / f)
    full = build_raw("ml1m", data_dir=tmp_path)
    a = build_raw("ml1m", {"max_rows": 1000}, data_dir=tmp_path)
    b = build_raw("ml1m", {"max_rows": 1000}, data_dir=tmp_path)
    c = build_raw("ml1m", {"max_rows": 1000, "sample_seed": 1}, data_dir=tmp_path)
    assert len(a) == 1000 and a.meta["subsample"] == 1000 and full.meta["subsample"] is None
    assert a.counts() == {"train": 800, "valid": 100, "test": 100}
    np.testing.assert_array_equal(a.columns["zipcode"], b.columns["zipcode"])  # seeded
    assert not np.array_equal(a.columns["zipcode"], c.columns["zipcode"])
    rows = set(zip(full.columns["zipcode"].tolist(), full.columns["release_year"].tolist(), full.columns["label"].tolist()))
    assert set(zip(a.columns["zipcode"].tolist(), a.columns["release_year"].tolist(), a.columns["label"].tolist())) <= rows
    assert len(build_raw("ml1m", {"max_rows": 10 ** 6}, data_dir=tmp_path)) == len(full)  # more than there are: all


def test_ml1m_official_layout(tmp_path):
    d = shared("ml-1m")
    r = pd.read_csv(d / "ratings.csv.gz", nrows=3000).dropna()
    lines = (r["user_id"].astype(str) + "::" + r["movie_id"].astype(str) + "::" + r["rating"].astype(str) + "::"
             + r["timestamp"].astype("int64").astype(str))
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("\n".join(lines) + "\n")
    for f in ("users.dat", "movies.dat"):
        shutil.copy(d / f, tmp_path / "ml-1m" / f)
    raw = build_raw("ml1m", {"stratify": True, "seed": 1}, data_dir=tmp_path)
    kept = r[r["rating"] != 3]
    assert len(raw) == len(kept)
    np.testing.assert_array_equal(raw.columns["label"], (kept["rating"] > 3).to_numpy().astype(np.int8))
    t = kept["timestamp"].to_numpy()
    np.testing.assert_allclose(raw.columns["timestamp"], (t - t.min()) / (t.max() - t.min()))
    assert raw.meta["timestamp_missing"] == 0 and raw.meta["layout"] == "official"
    lab, s = raw.columns["label"], raw.split
    for c in (0, 1):  # stratified: each class split ~8:1:1
        assert abs((s[lab == c] == 2).mean() - 0.1) < 0.01


# ----------------------------------------------------------------------------------------- taobao

TAOBAO = "taobao-userbehavior-sample/UserBehavior_head_814users.csv.gz"


@pytest.fixture(scope="module")
def taobao():
    f = shared(TAOBAO)
    ev = pd.read_csv(f, header=None, names=["user", "item", "cat", "btag", "ts"])
    return ev, build_raw("taobao", {"path": str(f), "max_len": 20})


def test_taobao_histories_precede_and_match_reference(taobao):
    ev, raw = taobao
    c = raw.columns
    lab = c["label"] == 1
    L = raw.lengths["hist_item_id"]
    valid = np.arange(20)[None, :] < L[:, None]
    before = (c["hist_ts"] < c["timestamp"][:, None]) | (
        (c["hist_ts"] == c["timestamp"][:, None]) & (c["hist_item_id"] < c["item_id"][:, None]))
    assert before[lab][valid[lab]].all()
    assert (L[lab] >= 1).all()  # min_history = 1
    # brute-force reference for a few users: previous clicks in (ts, item) order, last 20
    pv = ev[ev["btag"] == "pv"].sort_values(["user", "ts", "item"], kind="stable")
    for u in pv["user"].unique()[:15]:
        clicks = pv[pv["user"] == u][["item", "ts"]].to_numpy()
        rows = np.flatnonzero(lab & (c["user_id"] == u))
        assert rows.size == len(clicks) - 1
        for j, r in enumerate(rows, start=1):
            want = clicks[max(0, j - 20):j, 0]
            assert c["item_id"][r] == clicks[j, 0] and c["timestamp"][r] == clicks[j, 1]
            np.testing.assert_array_equal(c["hist_item_id"][r, :L[r]], want)


def test_taobao_negatives(taobao):
    ev, raw = taobao
    c = raw.columns
    lab = c["label"]
    assert (lab[0::2] == 1).all() and (lab[1::2] == 0).all()  # interleaved positive, negative
    for k in ("user_id", "timestamp", "hist_item_id", "hist_category", "hist_ts"):
        np.testing.assert_array_equal(c[k][1::2], c[k][0::2])
    np.testing.assert_array_equal(raw.lengths["hist_item_id"][1::2], raw.lengths["hist_item_id"][0::2])
    neg = pd.DataFrame({"user": c["user_id"][1::2], "item": c["item_id"][1::2]})
    clicked = ev[ev["btag"] == "pv"][["user", "item"]].drop_duplicates()
    assert len(neg.merge(clicked, on=["user", "item"])) == 0
    # item -> category table: most frequent category of the item
    table = (ev.groupby(["item", "cat"]).size().rename("n").reset_index()
             .sort_values(["item", "n", "cat"], ascending=[True, False, True]).drop_duplicates("item"))
    cat_of = pd.Series(table["cat"].to_numpy(), index=table["item"].to_numpy())
    np.testing.assert_array_equal(c["category_id"], cat_of.loc[c["item_id"]].to_numpy())
    h = c["hist_item_id"][raw.lengths["hist_item_id"] > 0, 0]
    np.testing.assert_array_equal(c["hist_category"][raw.lengths["hist_item_id"] > 0, 0], cat_of.loc[h].to_numpy())


def test_taobao_time_split(taobao):
    ev, raw = taobao
    ts = raw.columns["timestamp"]
    pos = raw.columns["label"] == 1
    q8, q7 = np.quantile(ts[pos], 0.8), np.quantile(ts[pos], 0.7)
    s = raw.split
    assert (ts[s == 2] >= q8).all() and (ts[s != 2] < q8).all()
    assert (ts[s == 1] >= q7).all() and (ts[s == 0] < q7).all()
    np.testing.assert_array_equal(s[1::2], s[0::2])
    raw.validate()


def test_taobao_btag_and_errors(tmp_path):
    f = shared(TAOBAO)
    raw = build_raw("taobao", {"path": str(f), "history_btag": True, "negatives": 2, "max_len": 10})
    assert "hist_btag" in raw.columns and raw.schema["hist_btag"].group == "hist_item_id"
    assert set(np.unique(raw.columns["hist_btag"][raw.lengths["hist_btag"] > 0, 0])) <= {0, 1, 2, 3}
    assert raw.meta["btag_codes"] == ["pv", "fav", "cart", "buy"]
    assert (raw.columns["label"].reshape(-1, 3) == [1, 0, 0]).all()
    with pytest.raises(DataError, match="Tianchi"):
        build_raw("taobao", data_dir=tmp_path)
    bad = tmp_path / "UserBehavior.csv"
    bad.write_text("1,2,3,pv,100\n1,3,3,click,101\n")
    with pytest.raises(DataError, match=r"behavior_type.*row 2"):
        build_raw("taobao", data_dir=tmp_path)
    bad.write_text("1,2,3,pv,100\n1,x,3,pv,101\n")
    with pytest.raises(DataError, match=r"item_id.*row 2"):
        build_raw("taobao", {"path": str(bad)})


# ----------------------------------------------------------------------------------------- table

SCHEMA_YAML = """
label: clicked
description: toy
fields:
  - {name: user, kind: categorical, role: user}
  - {name: item, kind: categorical, role: item}
  - {name: cat, kind: categorical, role: item_attr}
  - {name: price, kind: numeric, role: item_attr}
  - {name: genres, kind: multi_valued, role: item_attr, sep: "|"}
  - {name: hist, kind: sequence, role: behavior, vocab: item, max_len: 4, sep: "|", target: item}
  - {name: hist_cat, column: hcat, kind: sequence, role: behavior, vocab: cat, sep: "|", target: cat, group: hist}
  - {name: ts, kind: numeric, role: context, embed: false}
split: {method: column, column: part}
"""


def toy_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hl = rng.integers(0, 7, n)
    hist = ["|".join(map(str, rng.integers(1, 30, k))) for k in hl]
    return pd.DataFrame({
        "user": rng.integers(1, 8, n), "item": rng.integers(1, 30, n), "cat": rng.choice(["a", "b", "c"], n),
        "price": rng.random(n).round(3), "genres": rng.choice(["x|y", "y", "", "x|y|z"], n),
        "hist": hist, "hcat": ["|".join("a" * len(h.split("|")) if h else "") for h in hist],
        "ts": np.arange(n) * 10, "clicked": rng.integers(0, 2, n),
        "part": np.where(np.arange(n) < 40, "train", np.where(np.arange(n) < 50, "valid", "test")),
    })


def write_table(tmp_path: Path, df: pd.DataFrame, yaml_text: str = SCHEMA_YAML, name: str = "t.csv"):
    f, s = tmp_path / name, tmp_path / "schema.yaml"
    df.to_parquet(f) if name.endswith(".parquet") else df.to_csv(f, index=False)
    s.write_text(yaml_text)
    return {"path": str(f), "schema": str(s)}


def test_table_roundtrip(tmp_path):
    df = toy_table()
    ds = load_dataset("table", write_table(tmp_path, df), cache=False)
    raw = build_raw("table", write_table(tmp_path, df, name="t.parquet"))
    assert len(raw) == 60 and raw.counts() == {"train": 40, "valid": 10, "test": 10}
    sc = raw.schema
    assert sc["hist"].max_len == 4 and sc["hist_cat"].max_len == 4 and sc["genres"].max_len == 3
    assert sc["ts"].embed is False and sc["label"].role == Role.LABEL
    # sequences keep the most recent (last) values, multi-valued the first ones
    full = df["hist"].str.split("|")
    r = int(np.flatnonzero(full.str.len() > 4)[0])
    np.testing.assert_array_equal(raw.columns["hist"][r], [int(x) for x in full[r][-4:]])
    np.testing.assert_array_equal(raw.lengths["hist"], np.minimum(df["hist"].str.len().gt(0) * full.str.len(), 4))
    np.testing.assert_array_equal(raw.columns["label"], df["clicked"].to_numpy())
    # the history shares the item vocabulary: encoded ids agree
    v = ds.vocabs["item"]
    tr = slice(*ds.bounds["train"])
    np.testing.assert_array_equal(ds.arrays["item"][tr], v.encode(df["item"].to_numpy()[:40]))
    assert set(ds.vocabs) >= {"user", "item", "cat", "genres"} and "hist" not in ds.vocabs


def test_table_default_and_other_splits(tmp_path):
    df = toy_table()
    y = SCHEMA_YAML.replace("split: {method: column, column: part}\n", "")
    assert build_raw("table", write_table(tmp_path, df, y)).counts() == {"train": 48, "valid": 6, "test": 6}
    y2 = SCHEMA_YAML.replace("{method: column, column: part}", "{method: per_user_chronological, time: ts}")
    raw = build_raw("table", write_table(tmp_path, df, y2))
    last = df.assign(s=raw.split).sort_values("ts").groupby("user").tail(1)
    assert (last["s"] == 2).all()
    y3 = SCHEMA_YAML.replace("{method: column, column: part}", "{method: time_quantile, time: ts, test_quantile: 0.9}")
    s = build_raw("table", write_table(tmp_path, df, y3)).split
    assert (s[54:] == 2).all() and (s[:54] != 2).all()


def test_table_inline_schema_tsv_and_data_dir(tmp_path):
    import yaml

    df = toy_table()
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    spec = yaml.safe_load(SCHEMA_YAML)
    a = build_raw("table", {"path": "t.tsv", "schema": spec}, data_dir=tmp_path)
    b = build_raw("table", {"path": "t.tsv", "schema": spec, "sep": "tab"}, data_dir=tmp_path)
    assert len(a) == len(b) == 60 and (a.split == b.split).all()
    np.testing.assert_array_equal(a.columns["hist_cat"], b.columns["hist_cat"])


def _bad_cases(df: pd.DataFrame):
    """(name, data frame, yaml, error class, regex the message must match)."""
    d_label = df.copy(); d_label.loc[2, "clicked"] = 2  # noqa: E702
    d_nan = df.copy(); d_nan.loc[4, "price"] = np.nan  # noqa: E702
    d_txt = df.copy().astype({"price": object}); d_txt.loc[5, "price"] = "cheap"  # noqa: E702
    d_grp = df.copy(); d_grp.loc[6, "hcat"] = "a|a|a|a|a|a|a|a"  # noqa: E702
    d_part = df.copy(); d_part.loc[7, "part"] = "holdout"  # noqa: E702
    Y = SCHEMA_YAML
    return [
        ("missing column", df.drop(columns=["cat"]), Y, DataError, r"'cat'"),
        ("label not 0/1", d_label, Y, DataError, r"'clicked', row 3: value .*2.* not 0 or 1"),
        ("NaN numeric", d_nan, Y, DataError, r"'price', row 5: missing value"),
        ("text numeric", d_txt, Y, DataError, r"'price', row 6: value 'cheap' is not a number"),
        ("group length", d_grp, Y, DataError, r"row 7: column 'hcat' has 8 elements but its group 'hist' has"),
        ("split value", d_part, Y, DataError, r"split column 'part', row 8: value 'holdout'"),
        ("unknown kind", df, Y.replace("kind: numeric, role: item_attr", "kind: float, role: item_attr"), ConfigError,
         r"field 'price': key 'kind' must be one of .* got 'float'"),
        ("unknown role", df, Y.replace("role: item_attr}", "role: product}"), ConfigError,
         r"field 'cat': key 'role' .* got 'product'"),
        ("unknown field key", df, Y.replace("role: user}", "role: user, vocabulary: u}"), ConfigError,
         r"'user'.*unknown key\(s\) \['vocabulary'\]"),
        ("unknown top key", df, Y + "labels: x\n", ConfigError, r"unknown key\(s\) \['labels'\]"),
        ("unknown split key", df, Y.replace("column: part}", "column: part, seed: 3}"), ConfigError,
         r"split \(column\): unknown key\(s\) \['seed'\]"),
        ("missing label key", df, Y.replace("label: clicked\n", ""), ConfigError, r"missing key 'label'"),
        ("label as feature", df, Y.replace("{name: ts, kind: numeric", "{name: c2, column: clicked, kind: numeric"),
         ConfigError, r"label column 'clicked'"),
        ("bad target", df, Y.replace("target: item}", "target: product}"), ConfigError, r"target 'product'"),
        ("bad yaml", df, "label: [x\n", ConfigError, r"invalid YAML"),
    ]


def test_table_errors(tmp_path):
    df = toy_table()
    for name, d, y, err, pattern in _bad_cases(df):
        with pytest.raises(err, match=pattern):
            build_raw("table", write_table(tmp_path, d, y))
        (tmp_path / "t.csv").unlink()
    with pytest.raises(DataError, match="file not found"):
        build_raw("table", {"path": str(tmp_path / "nope.csv"), "schema": write_table(tmp_path, df)["schema"]})
    with pytest.raises(DataError, match="schema: file not found"):
        build_raw("table", {"path": write_table(tmp_path, df)["path"], "schema": str(tmp_path / "nope.yaml")})
    (tmp_path / "t.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        build_raw("table", {"path": str(tmp_path / "t.csv"), "schema": str(tmp_path / "schema.yaml")})
    (tmp_path / "t.csv").write_text(",".join(df.columns) + "\n")
    with pytest.raises(DataError, match="no rows"):
        build_raw("table", {"path": str(tmp_path / "t.csv"), "schema": str(tmp_path / "schema.yaml")})
    with pytest.raises(ConfigError, match="schema"):
        build_raw("table", {"path": str(tmp_path / "t.csv")})


# ----------------------------------------------------------------------------------------- log


def toy_log(seed: int = 0, n: int = 160, n_items: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"uid": rng.choice(["u1", "u2", "u3", "u4", "u5"], n), "iid": rng.integers(1, n_items + 1, n),
                       "t": rng.integers(0, 40, n), "stars": rng.integers(1, 6, n)})
    return df.drop_duplicates(["uid", "iid", "t"]).reset_index(drop=True)


def reference_histories(df: pd.DataFrame, flag: np.ndarray, max_len: int) -> list[list]:
    """Per row: items of flagged rows of the same user strictly before in (t, iid) order."""
    out = []
    for i in range(len(df)):
        u, t, it = df.uid[i], df.t[i], df.iid[i]
        prev = [(df.t[j], df.iid[j]) for j in range(len(df))
                if flag[j] and df.uid[j] == u and (df.t[j], df.iid[j]) < (t, it)]
        out.append([x[1] for x in sorted(prev)][-max_len:])
    return out


def test_log_histories_and_rating_labels(tmp_path):
    df = toy_log()
    df.to_csv(tmp_path / "log.csv", index=False)
    raw = build_raw("log", {"path": str(tmp_path / "log.csv"), "user_col": "uid", "item_col": "iid", "time_col": "t",
                            "rating_col": "stars", "positive_min": 4, "negative_max": 2, "max_len": 5})
    kept = df[df.stars != 3].reset_index(drop=True)
    assert len(raw) == len(kept)
    ref = reference_histories(kept, (kept.stars >= 4).to_numpy(), 5)
    got = pd.DataFrame({"uid": raw.columns["user_id"], "iid": raw.columns["item_id"], "t": raw.columns["timestamp"],
                        "label": raw.columns["label"], "row": np.arange(len(raw))})
    m = kept.reset_index().merge(got, on=["uid", "iid", "t"], validate="one_to_one")
    assert len(m) == len(kept)
    np.testing.assert_array_equal(m["label"], (m["stars"] >= 4).astype(int))
    L = raw.lengths["hist_item_id"]
    for _, r in m.iterrows():
        assert raw.columns["hist_item_id"][r["row"], :L[r["row"]]].tolist() == ref[r["index"]]
    # without negative_max every rating < 4 is a negative
    raw2 = build_raw("log", {"path": str(tmp_path / "log.csv"), "user_col": "uid", "item_col": "iid",
                             "time_col": "t", "rating_col": "stars"})
    assert len(raw2) == len(df) and int(raw2.columns["label"].sum()) == int((df.stars >= 4).sum())


def test_log_implicit_negatives_and_attrs(tmp_path):
    df = toy_log(1, n_items=60)[["uid", "iid", "t"]]
    df.to_csv(tmp_path / "log.csv", index=False)
    items = pd.DataFrame({"iid": np.arange(1, 61), "brand": np.arange(1, 61) % 4, "tags": ["a|b", "c", ""] * 20})
    items.to_csv(tmp_path / "items.csv", index=False)
    users = pd.DataFrame({"uid": ["u1", "u2", "u3", "u4", "u5"], "city": ["x", "y", "x", "z", None]})
    users.to_parquet(tmp_path / "users.parquet")
    p = {"path": str(tmp_path / "log.csv"), "user_col": "uid", "item_col": "iid", "time_col": "t",
         "negatives_per_positive": 2, "item_attrs": str(tmp_path / "items.csv"),
         "user_attrs": str(tmp_path / "users.parquet"), "multi_valued": {"tags": "|"}, "split": "leave_last_out"}
    raw = build_raw("log", p)
    c = raw.columns
    assert len(raw) == 3 * len(df)
    assert (c["label"].reshape(-1, 3) == [1, 0, 0]).all()
    pos_set = set(zip(df.uid, df.iid))
    neg = c["label"] == 0
    assert not any((u, i) in pos_set for u, i in zip(c["user_id"][neg], c["item_id"][neg]))
    for k in ("user_id", "timestamp", "hist_item_id", "hist_brand", "hist_ts"):
        a = c[k].reshape(len(df), 3, *c[k].shape[1:])
        assert (a == a[:, :1]).all()
    assert (raw.split.reshape(-1, 3) == raw.split.reshape(-1, 3)[:, :1]).all()
    np.testing.assert_array_equal(c["brand"], c["item_id"] % 4)
    assert raw.schema["tags"].kind == Kind.MULTI_VALUED and raw.schema["hist_tags"].group == "hist_item_id"
    assert raw.schema["city"].role == Role.USER_ATTR and set(c["city"][c["user_id"] == "u5"]) <= {""}
    ref = reference_histories(df, np.ones(len(df), bool), 50)
    got = pd.DataFrame({"uid": c["user_id"], "iid": c["item_id"], "t": c["timestamp"], "row": np.arange(len(raw))})
    m = df.reset_index().merge(got[~neg], on=["uid", "iid", "t"])
    for _, r in m.iterrows():
        assert c["hist_item_id"][r["row"], :raw.lengths["hist_item_id"][r["row"]]].tolist() == ref[r["index"]]
    load_dataset("log", p, cache=False)  # encodes


def test_log_implicit_dense_user_never_gets_a_false_negative(tmp_path):
    # u1 interacted with every item: no valid negative exists for it, so its negatives are dropped
    df = pd.DataFrame({"u": ["u1"] * 6 + ["u2"] * 3, "i": [1, 2, 3, 4, 5, 6, 1, 2, 3], "ts": np.arange(9)})
    df.to_csv(tmp_path / "log.csv", index=False)
    raw = build_raw("log", {"path": str(tmp_path / "log.csv"), "user_col": "u", "item_col": "i", "time_col": "ts",
                            "negatives_per_positive": 3, "split": "random"})
    c = raw.columns
    assert raw.meta["negatives_dropped"] == 18
    neg = c["label"] == 0
    assert (c["user_id"][neg] == "u2").all() and set(c["item_id"][neg]) <= {4, 5, 6}
    assert int((c["label"] == 1).sum()) == 9 and int(neg.sum()) == 9


def test_log_label_column_dates_and_errors(tmp_path):
    df = toy_log(2)
    df["clicked"] = (df.stars > 3).astype(int)
    df["when"] = pd.to_datetime(df.t, unit="D", origin="2020-01-01").dt.strftime("%Y-%m-%d")
    df.to_csv(tmp_path / "log.csv", index=False)
    base = {"path": str(tmp_path / "log.csv"), "user_col": "uid", "item_col": "iid", "time_col": "when",
            "label_col": "clicked", "split": "time_quantile", "time_features": True}
    raw = build_raw("log", base)
    assert len(raw) == len(df) and raw.columns["timestamp"].min() == 1577836800
    with pytest.raises(ConfigError, match="not both"):
        build_raw("log", {**base, "rating_col": "stars"})
    with pytest.raises(DataError, match=r"lacks column\(s\) \['ts'\]"):
        build_raw("log", {**base, "time_col": "ts"})
    bad = df.copy(); bad.loc[3, "clicked"] = 5  # noqa: E702
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"'clicked', row 4: value .*5"):
        build_raw("log", {**base, "path": str(tmp_path / "bad.csv")})
    bad = df.copy().astype({"when": object}); bad.loc[6, "when"] = "yesterday"  # noqa: E702
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"'when', row 7: 'yesterday'"):
        build_raw("log", {**base, "path": str(tmp_path / "bad.csv")})
    pd.DataFrame({"iid": [1, 2, 2], "brand": [0, 1, 1]}).to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(DataError, match=r"'iid': 2 appears more than once"):
        build_raw("log", {**base, "item_attrs": str(tmp_path / "items.csv")})
    pd.DataFrame({"iid": [1, 2], "brand": [0, 1]}).to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(DataError, match=r"item .* has no row in the item table"):
        build_raw("log", {**base, "item_attrs": str(tmp_path / "items.csv")})
    raw = build_raw("log", {**base, "item_attrs": str(tmp_path / "items.csv"), "missing_attrs": "fill"})
    assert (raw.columns["brand"][raw.columns["item_id"] > 2] == -1).all()


def test_log_matches_ml100k_recipe(tmp_path):
    d = shared("ml-100k")
    inter = pd.read_csv(d / "ml-100k.inter.gz", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter.to_parquet(tmp_path / "log.parquet")
    ref = build_raw("ml100k", data_dir=d)
    raw = build_raw("log", {"path": str(tmp_path / "log.parquet"), "rating_col": "rating", "positive_min": 4,
                            "negative_max": 2})
    assert len(raw) == len(ref) == 72_855
    assert raw.counts() == ref.counts()
    for k in ("user_id", "item_id", "label", "timestamp", "hist_item_id"):
        np.testing.assert_array_equal(raw.columns[k], ref.columns[k])
    np.testing.assert_array_equal(raw.split, ref.split)


def test_log_matches_bundled_movielens_recipe():
    from ctrgraph.data.recipes.movielens import BUNDLED

    ref = build_raw("movielens")
    raw = build_raw("log", {"path": str(BUNDLED / "ratings.csv.gz"), "user_col": "userId", "item_col": "movieId",
                            "rating_col": "rating", "positive_min": 4, "negative_max": 2.5,
                            "item_attrs": str(BUNDLED / "movies.csv"), "multi_valued": {"genres": "|"},
                            "ignore_columns": ["title"]})
    assert len(raw) == len(ref) and raw.counts() == ref.counts()
    for k in ("user_id", "item_id", "label", "hist_item_id"):
        np.testing.assert_array_equal(raw.columns[k], ref.columns[k])
    np.testing.assert_array_equal(raw.split, ref.split)
    assert "title" not in raw.schema and raw.schema["hist_genres"].group == "hist_item_id"
    with pytest.raises(ConfigError, match=r"multi_valued: \['genre'\]"):
        build_raw("log", {"path": str(BUNDLED / "ratings.csv.gz"), "user_col": "userId", "item_col": "movieId",
                          "item_attrs": str(BUNDLED / "movies.csv"), "multi_valued": {"genre": "|"}})


def test_cache_key_follows_contents_not_size_and_mtime(tmp_path, monkeypatch):
    """An edit that keeps size and modification time (cp -p, rsync, tar) must not train on stale data."""
    monkeypatch.setenv("CTRGRAPH_CACHE", str(tmp_path / "cache"))
    df = toy_table()
    params = write_table(tmp_path, df)
    a = load_dataset("table", params)  # cached
    f = Path(params["path"])
    st = f.stat()
    df["clicked"] = 1 - df["clicked"]  # same characters count: 0 <-> 1
    df.to_csv(f, index=False)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    b = load_dataset("table", params)
    tr = slice(*a.bounds["train"])
    np.testing.assert_array_equal(b.arrays["label"][tr], 1 - a.arrays["label"][tr])
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


def test_more_bad_inputs_get_clear_errors(tmp_path):
    """Issue 18's list: numeric timestamps with one bad value blame that row (not row 1); duplicate
    column names are refused; a single-class label, or a table too small for valid / test rows, is
    refused before training."""
    from ctrgraph.config import load_config
    from ctrgraph.runs.assemble import run_experiment

    df = toy_log(2)
    df["clicked"] = (df.stars > 3).astype(int)
    df = df.astype({"t": object})
    df.loc[9, "t"] = "12x"
    df.to_csv(tmp_path / "log.csv", index=False)
    base = {"path": str(tmp_path / "log.csv"), "user_col": "uid", "item_col": "iid", "time_col": "t",
            "label_col": "clicked", "split": "time_quantile"}
    with pytest.raises(DataError, match=r"'t', row 10: '12x' is not a number"):
        build_raw("log", base)
    (tmp_path / "dup.csv").write_text("uid,iid,t,iid\nu1,1,0,2\nu2,2,1,3\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['iid'\]"):
        build_raw("log", {**base, "path": str(tmp_path / "dup.csv"), "label_col": None})
    t = toy_table()
    t["clicked"] = 1
    cfg = load_config(None, ["data.name=table", "model.name=lr", "train.progress=false", "data.cache=false",
                             f"data.params={{path: {write_table(tmp_path, t)['path']}, schema: {tmp_path / 'schema.yaml'}}}"])
    with pytest.raises(DataError, match=r"train split's label 'label' has a single class \(1 in all 40 rows\)"):
        run_experiment(cfg, tmp_path / "run1")
    assert not (tmp_path / "run1").exists()
    small = toy_table().iloc[:3].assign(part="train", clicked=[0, 1, 0])
    write_table(tmp_path, small)
    with pytest.raises(DataError, match=r"split\(s\) \['valid', 'test'\] have no rows \(train / valid / test = 3/0/0"):
        run_experiment(cfg, tmp_path / "run2")
