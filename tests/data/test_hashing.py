"""Hashed categorical tables (data.hash_buckets): a stable hash across processes, one bucket per value
whichever field holds it (target and history), the bucket count honoured, errors that name the key,
and predict on raw files hashing exactly as training did (unseen values included)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrgraph.config import load_config
from ctrgraph.data.encode import encode, encode_columns
from ctrgraph.data.hashing import (
    HashedVocab,
    hash_int64,
    hash_str,
    resolve_hash_buckets,
)
from ctrgraph.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")
INTS = np.array([0, 1, -1, 123456789, 2**62, -(2**63)], dtype=np.int64)
STRS = np.array(["", "a", "123", "Comedy", "ünïcode"], dtype=object)


def test_hash_is_pinned_and_stable_across_processes():
    """The same ids in a fresh interpreter with another PYTHONHASHSEED (salted ``hash()`` would
    differ), and pinned values: a change of the function would re-bucket every trained table."""
    here = {"int": HashedVocab("t", 1000, "int").encode(INTS).tolist(),
            "str": HashedVocab("t", 1000, "str").encode(STRS).tolist()}
    code = ("import json, numpy as np; from ctrgraph.data.hashing import HashedVocab; "
            f"i = np.array({INTS.tolist()}, dtype=np.int64); s = np.array({STRS.tolist()!r}, dtype=object); "
            "print(json.dumps({'int': HashedVocab('t', 1000, 'int').encode(i).tolist(), "
            "'str': HashedVocab('t', 1000, 'str').encode(s).tolist()}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=SRC, PYTHONHASHSEED=seed),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in ("1", "2")]  # two fresh interpreters, started together
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out) == here
    m = (1 << 64) - 1

    def splitmix(x: int) -> int:  # the reference, in Python integers
        x &= m
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & m
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    assert hash_int64(INTS).tolist() == [splitmix(int(x)) for x in INTS]
    assert hash_int64(np.array([1, 123456789])).tolist() == [6238072747940578789, 17445968401720671584]
    assert hash_str(np.array(["1", "a"])).tolist() == [15289156711003816966, 13950350942979735504]  # SipHash-2-4


def test_int_and_text_spellings_hash_alike_and_bad_text_is_oov():
    """An integer table read back from a CSV (text) hashes as at training; unparsable text -> OOV (1)."""
    v = HashedVocab("item", 97, "int")
    ints = np.array([5, 17, 123456789012, -3])
    np.testing.assert_array_equal(v.encode(ints), v.encode(ints.astype(str)))
    np.testing.assert_array_equal(v.encode(ints), v.encode(ints.astype(float)))
    np.testing.assert_array_equal(v.encode(ints), v.encode(np.array(["5", "17.0", "123456789012", "-3"], dtype=object)))
    assert v.encode(np.array(["5", "abc", "", "1.5"], dtype=object)).tolist()[1:] == [1, 1, 1]
    s = HashedVocab("year", 97, "str")
    np.testing.assert_array_equal(s.encode(np.array([1995, 2001])), s.encode(np.array(["1995", "2001"])))


def test_bucket_count_honoured_and_target_history_collide_identically():
    from conftest import planted_raw

    raw, _ = planted_raw()
    item_raw, hist_raw, lens = raw.columns["item_id"].copy(), raw.columns["hist_item_id"].copy(), raw.lengths["hist_item_id"]
    ds = encode(raw, hash_buckets={"hist_item_id": 16, "*": 7})  # a field name means its table
    assert ds.vocab_sizes == {"user_id": 9, "item_id": 18, "cat": 9, "tags": 9}
    assert ds.schema.meta["hashed"]["item_id"] == {"buckets": 16, "kind": "int", "hash": "ctrgraph-hash-v1"}
    v = ds.vocabs["item_id"]
    assert isinstance(v, HashedVocab) and len(v) == 18
    # the data set's rows are ordered train | valid | test: line the raw rows up the same way
    order = np.argsort(raw.split, kind="stable")
    item_raw, hist_raw, lens = item_raw[order], hist_raw[order], lens[order]
    item_ids, hist_ids = ds.arrays["item_id"], ds.arrays["hist_item_id"]
    assert item_ids.min() >= 2 and item_ids.max() < 18 and np.unique(item_ids).size == 16  # all 16 buckets used
    valid = np.arange(hist_raw.shape[1])[None, :] < lens[:, None]
    np.testing.assert_array_equal(hist_ids != 0, valid)  # post-padded, lengths kept
    # one id per raw value across the target and the history fields, as the data set holds them
    vals = np.concatenate([item_raw, hist_raw[valid]])
    ids = np.concatenate([item_ids, hist_ids[valid]])
    pairs = np.unique(np.stack([vals, ids]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1] == np.unique(vals).size
    np.testing.assert_array_equal(ids, v.encode(vals))  # and it is the table's hash
    shared = np.isin(hist_raw, item_raw) & valid
    assert shared.sum() > 1000  # many history items are also targets somewhere
    assert np.unique(item_raw).size > 16  # so collisions happened and were consistent


def test_bad_hash_buckets_are_errors_naming_the_key():
    from conftest import planted_raw

    schema = planted_raw(n=1000)[0].schema
    with pytest.raises(ConfigError, match="'nope' is neither a table nor a field"):
        resolve_hash_buckets(schema, {"nope": 10})
    with pytest.raises(ConfigError, match="'price' is not a categorical field"):
        resolve_hash_buckets(schema, {"price": 10})
    with pytest.raises(ConfigError, match=r"hash_buckets.item_id: .* >= 2, got 1"):
        resolve_hash_buckets(schema, {"item_id": 1})
    with pytest.raises(ConfigError, match="given 10 and 12 buckets"):
        resolve_hash_buckets(schema, {"item_id": 10, "hist_item_id": 12})
    with pytest.raises(ConfigError, match="data.hash_buckets.item_id"):
        load_config(None, ["data.hash_buckets={item_id: 1}"])


def test_default_encoding_and_cache_key_unchanged(monkeypatch):
    """No hash_buckets: plain vocabularies, no schema record, the cache key's inputs of before."""
    from ctrgraph.data.recipes import base, load_encoded
    from ctrgraph.registry import get_recipe

    seen = []
    real = base.cache_key
    monkeypatch.setattr(base, "cache_key", lambda r, params, fp: seen.append(params) or real(r, params, fp))
    recipe = get_recipe("synthetic")
    small = {"n_instances": 2000, "n_users": 100, "n_items": 300, "n_categories": 5, "n_cities": 20, "n_brands": 30}
    ds = load_encoded(recipe, small, cache=False)
    assert "hashed" not in ds.schema.meta and not any(isinstance(v, HashedVocab) for v in ds.vocabs.values())
    assert seen[0] == dict(recipe.params(**small).model_dump(), min_count=1)
    load_encoded(recipe, small, cache=False, hash_buckets={"item_id": 100})
    assert seen[1] == dict(seen[0], hash_buckets={"item_id": 100})


@pytest.fixture(scope="module")
def hashed_run(tmp_path_factory):
    from ctrgraph.runs.assemble import run_experiment

    out = tmp_path_factory.mktemp("hashed") / "run"
    cfg = load_config(None, ["model.name=din", "train.epochs=1", "train.progress=false", "embedding.dim=8",
                             "data.cache=false", "data.train_fraction=0.3",
                             "data.hash_buckets={item_id: 500, user_id: 200, '*': 50}"])
    run_experiment(cfg, out)
    return out


def test_run_records_hashing_and_predict_hashes_as_training(hashed_run, tmp_path):
    """The run's schema.json records each hashed table; a raw file (text) encodes to the ids training
    gave the same rows; unseen values (a new item id, a new genre) score; bad text is OOV."""
    from ctrgraph.registry import build_raw
    from ctrgraph.runs.assemble import load_data_artifacts
    from ctrgraph.runs.predict import encode_frame, predict_file

    schema, vocabs = load_data_artifacts(hashed_run)
    assert {t: v.buckets for t, v in vocabs.items()} == {"user_id": 200, "item_id": 500, "release_year": 50,
                                                         "genres": 50, "hour": 50, "weekday": 50}
    assert vocabs["item_id"].kind == "int" and vocabs["genres"].kind == "str"
    assert not list((hashed_run / "data").glob("vocab_*.npy"))
    assert json.loads((hashed_run / "data" / "schema.json").read_text())["meta"]["hashed"]["item_id"]["buckets"] == 500

    raw = build_raw("movielens")
    n = 300
    cols = {k: v[:n] for k, v in raw.columns.items()}
    lens = {k: v[:n] for k, v in raw.lengths.items()}
    trained = encode_columns(cols, lens, schema, vocabs)  # what training computed for these rows
    rows = {}
    for f in schema.fields:
        col = cols[f.name]
        rows[f.name] = (["|".join(map(str, col[i, : lens[f.name][i]])) for i in range(n)]  # test fixture
                        if f.is_sequence_like else col)
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "in.csv", index=False)
    text = pd.read_csv(tmp_path / "in.csv", dtype=str, keep_default_na=False)
    again = encode_frame(text, schema, vocabs)
    for f in schema.features:
        np.testing.assert_array_equal(again[f.name], trained[f.name], err_msg=f.name)

    df = df.astype({"item_id": object})
    df.loc[0, "item_id"] = 10**12  # never seen
    r = int(np.flatnonzero(lens["hist_item_id"] > 0)[0])
    df.loc[r, "hist_item_id"] = "|".join(["987654321"] + str(df.loc[r, "hist_item_id"]).split("|")[1:])
    df.loc[2, "genres"] = "NoSuchGenre|Comedy"
    df.loc[3, "item_id"] = "abc"
    df.to_csv(tmp_path / "new.csv", index=False)
    new = encode_frame(pd.read_csv(tmp_path / "new.csv", dtype=str, keep_default_na=False), schema, vocabs)
    assert new["item_id"][0] == vocabs["item_id"].encode(np.array([10**12]))[0] >= 2
    assert new["item_id"][3] == 1  # OOV: not an integer
    assert new["hist_item_id"][r, 0] == vocabs["item_id"].encode(np.array([987654321]))[0]
    assert new["genres"][2, 0] == vocabs["genres"].encode(np.array(["NoSuchGenre"]))[0] >= 2
    res = predict_file(hashed_run, tmp_path / "new.csv", tmp_path / "out.csv", progress=False)
    p = pd.read_csv(tmp_path / "out.csv")
    assert res["rows"] == n and len(p) == n and p["pctr"].between(0, 1).all() and "auc" in res


def test_exported_model_hashes_as_the_run(hashed_run, tmp_path):
    """A TorchScript export of a hashed run scores raw rows (unseen values included) as the run does."""
    from ctrgraph.registry import build_raw
    from ctrgraph.runs.assemble import load_run
    from ctrgraph.runs.model_export import ExportedScorer, export_model
    from ctrgraph.runs.predict import encode_frame
    from ctrgraph.train.trainer import predict_logits

    info = export_model(hashed_run, tmp_path / "ts", "torchscript")
    assert info["parity"]["max_abs_diff"] <= 1e-5
    raw = build_raw("movielens")
    n = 40
    df = pd.DataFrame({f.name: (["|".join(map(str, raw.columns[f.name][i, : raw.lengths[f.name][i]]))
                                 for i in range(n)] if f.is_sequence_like else raw.columns[f.name][:n])
                       for f in raw.schema.fields}).astype(str)
    df.loc[0, "item_id"] = "555555555555"  # unseen
    _, model, schema, vocabs = load_run(hashed_run)
    eager = predict_logits(model, encode_frame(df, schema, vocabs), schema)
    exp = ExportedScorer(tmp_path / "ts")
    exp.calibrator = None
    np.testing.assert_allclose(exp.logits(df), eager, rtol=1e-5, atol=1e-5)
