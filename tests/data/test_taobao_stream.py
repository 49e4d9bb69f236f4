"""The ``taobao`` recipe out of core (``stream: true``, ``TaobaoStream`` in data/recipes/taobao.py): the streamed
encoding equals the in-memory one (rows, order, vocabularies, negatives) on the shared samples and on
a generated file in the official layout, with CSV blocks and parts small enough that users straddle
block boundaries; the keyed sampler's properties; clear errors; a model trains on the streamed data."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from ctrgraph.config import TrainConfig
from ctrgraph.data.negatives import keyed_negatives
from ctrgraph.data.recipes import taobao as tb
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError, DataError
from ctrgraph.registry import build_model, get_recipe, load_dataset
from ctrgraph.train.trainer import Trainer

SAMPLES = SHARED_DATA / "taobao-userbehavior-sample"
HEAD = SAMPLES / "UserBehavior_head_814users.csv.gz"
SLICE = SAMPLES / "UserBehavior_slice_20171126_0100-0310.csv.gz"
needs_samples = pytest.mark.skipif(not HEAD.exists(), reason="shared Taobao samples not present")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(tb, "CSV_BLOCK_BYTES", 50_000)  # ~1,300 rows per parsed block: users straddle blocks


def official_layout(path: Path, n_users: int = 120, seed: int = 0) -> Path:
    """A small headerless UserBehavior file: grouped by user, users in string order of the id, a few
    exact duplicates, items with two categories, all behaviour types, times out of the window."""
    rng = np.random.default_rng(seed)
    users = rng.choice(np.arange(1, 5 * n_users), n_users, replace=False)
    users = users[np.argsort(users.astype(str), kind="stable")]
    counts = rng.integers(1, 60, n_users)
    user = np.repeat(users, counts)
    m = user.size
    item = 1000 + np.minimum((300 * rng.random(m) ** 2).astype(np.int64), 299)
    cat = np.where(rng.random(m) < 0.1, 7, item % 13)
    bt = np.array(tb.BEHAVIORS)[rng.choice(4, m, p=[0.85, 0.05, 0.06, 0.04])]
    ts = 1511539200 + rng.integers(0, 9 * 86400, m)
    ts[rng.random(m) < 0.01] -= 10**6
    ts[rng.random(m) < 0.2] = 1511600000  # same-second events
    lines = [f"{u},{i},{c},{b},{t}" for u, i, c, b, t in zip(user, item, cat, bt, ts)]  # test data only
    dup = rng.choice(m, 20, replace=False)
    for d in sorted(dup, reverse=True):
        lines.insert(d, lines[d])
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_same(a, b):
    assert a.bounds == b.bounds
    assert set(a.vocabs) == set(b.vocabs)
    for t in a.vocabs:
        np.testing.assert_array_equal(a.vocabs[t].values, b.vocabs[t].values, err_msg=t)
    assert set(a.arrays) == set(b.arrays)
    for c in a.arrays:
        assert a.arrays[c].dtype == b.arrays[c].dtype, c
        np.testing.assert_array_equal(a.arrays[c], np.asarray(b.arrays[c]), err_msg=c)


def both(params: dict):
    a = load_dataset("taobao", dict(params, stream=False), cache=False)
    b = load_dataset("taobao", dict(params, stream=True), cache=False)
    assert not a.meta.get("streamed") and b.meta["streamed"] and isinstance(b.arrays["item_id"], np.memmap)
    return a, b


@needs_samples
@pytest.mark.parametrize("extra", [
    {},
    {"history_btag": True, "negatives": 2, "protocol": "deminet", "negative_dist": "popularity", "max_users": 300,
     "history_ties": "exclude", "window": [1511539200, 1512316800], "min_history": 3},
])
def test_streamed_head_sample_equals_in_memory(extra):
    a, b = both({"path": str(HEAD), "max_len": 20, "chunk_rows": 3000, **extra})
    assert_same(a, b)
    assert b.meta["streamed_parts"] > 10  # several parts of whole users
    for k in ("events_used", "positives", "users", "items", "events_read"):
        assert a.meta[k] == b.meta[k], k


@needs_samples
def test_streamed_time_slice_equals_in_memory():
    """The time-ordered sample (users scattered over the file) streams too: parts are user-id ranges."""
    a, b = both({"path": str(SLICE), "max_len": 5, "min_history": 0, "chunk_rows": 20_000})
    assert_same(a, b)


def test_streamed_official_layout_equals_in_memory(tmp_path):
    f = official_layout(tmp_path / "UserBehavior.csv")
    for extra in ({}, {"protocol": "deminet", "valid_quantile": None}, {"negative_dist": "popularity", "negatives": 3},
                  {"history_btag": True, "max_users": 50, "min_user_events": 10}):
        a, b = both({"path": str(f), "max_len": 8, "chunk_rows": 150, **extra})
        assert_same(a, b)
        assert b.meta["streamed_parts"] > 5
    gz = tmp_path / "UserBehavior.csv.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    a, b = both({"path": str(gz), "max_len": 8, "chunk_rows": 400})
    assert_same(a, b)


def test_quantile_from_counts_is_numpys():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1000, 12345):
        t = rng.integers(1511539200, 1511539200 + rng.integers(1, 10**6), n)
        v, c = np.unique(t, return_counts=True)
        for q in (0.1, 0.5, 0.7, 0.8, 0.999, 1e-9):
            assert tb.quantile_from_counts(v, c, q) == float(np.quantile(t, q)), (n, q)


def test_keyed_negatives_avoid_clicks_and_do_not_depend_on_other_users():
    rng = np.random.default_rng(1)
    n_items, users = 50, np.repeat(np.arange(6), 30)
    ordinal = np.tile(np.arange(30), 6)
    keys = users * 1000 + 17  # raw ids
    cu, ci = rng.integers(0, 6, 120), rng.integers(0, n_items, 120)
    neg, ok = keyed_negatives(5, keys, ordinal, users, n_items, 3, cu, ci)
    assert ok.all()
    clicked = set(zip(cu.tolist(), ci.tolist()))
    assert not any((u, i) in clicked for u, row in zip(users.tolist(), neg.tolist()) for i in row)
    sub = users >= 3  # the same users in another call, with other users' codes: the same draws
    m = np.isin(cu, [3, 4, 5])
    neg2, _ = keyed_negatives(5, keys[sub], ordinal[sub], users[sub] - 3, n_items, 3, cu[m] - 3, ci[m])
    np.testing.assert_array_equal(neg2, neg[sub])
    assert not np.array_equal(keyed_negatives(6, keys, ordinal, users, n_items, 3, cu, ci)[0], neg)  # the seed
    probs = np.zeros(n_items)
    probs[[3, 9]] = [0.25, 0.75]
    pn, pok = keyed_negatives(0, keys, ordinal, users, n_items, 1, np.zeros(0), np.zeros(0), probs=probs)
    assert set(pn.ravel().tolist()) == {3, 9} and pok.all() and 0.6 < (pn == 9).mean() < 0.9
    _, fok = keyed_negatives(0, np.array([1]), np.array([0]), np.array([0]), 4, 2, np.zeros(4), np.arange(4))
    assert not fok.any()  # a user who clicked every item: dropped, never a false negative


def test_streamed_errors_name_the_file_and_row(tmp_path):
    f = tmp_path / "UserBehavior.csv"
    good = "\n".join(f"1,{i},3,pv,{100 + i}" for i in range(2000))
    for bad, match in (("1,x,3,pv,5", r"item_id.*row 2001.*not a number"),
                       ("1,2,3,pv,5,6", r"UserBehavior.csv.*(line 2001|6 columns)"),
                       ("1,2,3,click,5", r"behavior_type.*row 2001"),
                       ("1,,3,pv,5", r"item_id.*row 2001: missing")):
        f.write_text(good + "\n" + bad + "\n" + good + "\n")
        with pytest.raises(DataError, match=match):
            load_dataset("taobao", {"path": str(f), "stream": True}, cache=False)
    with pytest.raises(ConfigError, match="negative_sampler=keyed"):
        load_dataset("taobao", {"path": str(f), "stream": True, "negative_sampler": "global"}, cache=False)


def test_stream_is_chosen_above_a_size_and_the_spill_is_removed(tmp_path, monkeypatch):
    f = official_layout(tmp_path / "UserBehavior.csv", n_users=30)
    recipe = get_recipe("taobao")
    p = recipe.params(path=str(f))
    assert recipe.chunks(p, None) is None  # small: in memory
    monkeypatch.setattr(tb, "STREAM_AUTO_BYTES", 1000)
    parts = recipe.chunks(p, None)
    assert isinstance(parts, tb.TaobaoStream)
    assert recipe.chunks(recipe.params(path=str(f), negative_sampler="global"), None) is None
    assert recipe.chunks(recipe.params(path=str(f), stream=False), None) is None
    list(parts)
    spill = parts.dir
    assert spill is not None and spill.exists()
    parts.close()
    assert not spill.exists()


@needs_samples
def test_a_model_trains_one_epoch_on_the_streamed_sample():
    ds = load_dataset("taobao", {"path": str(HEAD), "max_len": 10, "stream": True, "chunk_rows": 5000}, cache=False)
    assert isinstance(ds.arrays["hist_item_id"], np.memmap)
    torch.manual_seed(0)
    model = build_model("din", FeatureSpec(ds.schema, ds.vocab_sizes), {}, dim=8)
    cfg = TrainConfig(epochs=1, batch_size=512, lr=1e-3, patience=0, progress=False, shuffle_buffer_rows=4096)
    res = Trainer(cfg).fit(model, ds)
    assert np.isfinite(res["test"]["logloss"]) and 0.5 < res["test"]["auc"] < 1.0, res["test"]
