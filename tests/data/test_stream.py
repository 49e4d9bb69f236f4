"""Out-of-core data: a partitioned parquet folder (Spark / Hive layout) is encoded part by part into
memory-mapped columns equal to the in-memory encoding of the same rows; the block-wise loader visits
every row once per epoch with bounded windows; a model trains on it; bad inputs are clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.data.stream import VocabCounter
from ctrgraph.data.vocab import Vocab
from ctrgraph.errors import ConfigError, DataError
from ctrgraph.registry import build_model, load_dataset
from ctrgraph.train.trainer import Trainer

SCHEMA = {
    "label": "click",
    "split": {"method": "column", "column": "part"},
    "fields": [
        {"name": "rid", "kind": "numeric", "role": "context", "embed": False},
        {"name": "user", "kind": "categorical", "role": "user"},
        {"name": "item", "kind": "categorical", "role": "item"},
        {"name": "tags", "kind": "multi_valued", "role": "item_attr", "max_len": 3},
        {"name": "hist", "kind": "sequence", "role": "behavior", "vocab": "item", "target": "item", "max_len": 4},
    ],
}


def _frame(n: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 300, n)
    hist_len = rng.integers(0, 7, n)
    hist = [rng.integers(0, 300, k).tolist() for k in hist_len]  # test data only
    tags = [rng.choice(["a", "b", "c", "d"], rng.integers(0, 4), replace=False).tolist() for _ in range(n)]
    return pd.DataFrame({
        "rid": np.arange(n, dtype=np.int64), "user": rng.integers(0, 400, n).astype(str),
        "item": item, "tags": tags, "hist": hist,
        "click": (item % 3 == 0).astype(int) ^ (rng.random(n) < 0.1),
        "part": rng.choice(["train", "valid", "test"], n, p=[0.8, 0.1, 0.1]),
        "day": rng.integers(0, 4, n),
    })


def _folder(df: pd.DataFrame, path, lists: bool = True) -> str:
    d = df.copy()
    if not lists:
        for c in ("tags", "hist"):
            d[c] = ["|".join(map(str, v)) for v in d[c]]
    pads.write_dataset(pa.Table.from_pandas(d, preserve_index=False), str(path), format="parquet",
                       partitioning=["day"], partitioning_flavor="hive", max_rows_per_file=900,
                       max_rows_per_group=900)
    return str(path)


def _by_rid(ds) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for k in ("train", "valid", "test"):
        sp = ds.split(k)
        order = np.argsort(np.asarray(sp["rid"]))
        out[k] = {c: np.asarray(v)[order] for c, v in sp.items()}
    return out


def test_streamed_folder_equals_the_in_memory_encoding(tmp_path):
    df = _frame()
    single = tmp_path / "one.parquet"
    flat = df.drop(columns=["day"]).copy()
    for c in ("tags", "hist"):
        flat[c] = ["|".join(map(str, v)) for v in flat[c]]
    flat.to_parquet(single, index=False)
    whole = load_dataset("table", {"path": str(single), "schema": SCHEMA}, cache=False)
    for lists in (True, False):  # Spark's list<int> columns, or |-joined strings
        folder = _folder(df, tmp_path / f"parts{lists}", lists=lists)
        streamed = load_dataset("table", {"path": folder, "schema": SCHEMA, "batch_rows": 700}, cache=False)
        assert isinstance(streamed.arrays["item"], np.memmap)  # on disk, not in memory
        assert streamed.meta["streamed"] and streamed.bounds == whole.bounds
        for t in whole.vocabs:
            np.testing.assert_array_equal(streamed.vocabs[t].values, whole.vocabs[t].values)
        a, b = _by_rid(streamed), _by_rid(whole)
        for k in a:
            for c in a[k]:
                np.testing.assert_array_equal(a[k][c], b[k][c], err_msg=f"{lists} {k} {c}")


def test_a_model_trains_on_memory_mapped_data(tmp_path):
    folder = _folder(_frame(8000, seed=1), tmp_path / "p")
    ds = load_dataset("table", {"path": folder, "schema": SCHEMA, "batch_rows": 1000}, cache=False)
    torch.manual_seed(0)
    model = build_model("deepfm", FeatureSpec(ds.schema, ds.vocab_sizes), {}, dim=8, init_std=0.01)
    cfg = TrainConfig(epochs=4, batch_size=256, lr=1e-2, patience=0, progress=False, shuffle_buffer_rows=2048)
    res = Trainer(cfg).fit(model, ds)
    assert res["test"]["auc"] > 0.8, res["test"]  # click = item % 3 == 0, 10 % flipped


def test_block_loader_visits_every_row_once_in_bounded_windows(tmp_path):
    from ctrgraph.data.schema import Field, Kind, Role, Schema

    schema = Schema([Field("x", Kind.CATEGORICAL, Role.CONTEXT), Field("y", Kind.NUMERIC, Role.LABEL)], label="y")
    n = 10_007
    np.save(tmp_path / "x.npy", np.arange(n, dtype=np.int64))
    np.save(tmp_path / "y.npy", np.zeros(n, np.float32))
    arrays = {k: np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in ("x", "y")}
    orders = []
    for world in (1, 2, 3):
        loaders = [BatchLoader(arrays, schema, 256, shuffle=True, seed=1, rank=r, world=world, buffer_rows=1000,
                               block_rows=100) for r in range(world)]
        for ld in loaders:
            ld.set_epoch(2)
        per = [list(ld) for ld in loaders]
        assert len({len(p) for p in per}) == 1 == len({len(ld) for ld in loaders}) and len(per[0]) == len(loaders[0])
        order = torch.cat([torch.cat([p[b]["x"] for p in per]) for b in range(len(per[0]))])
        assert torch.equal(torch.sort(order).values, torch.arange(n))  # each row once
        orders.append(order)
    assert torch.equal(orders[0], orders[1]) and torch.equal(orders[0], orders[2])  # one global order
    assert not torch.equal(orders[0], torch.arange(n))
    # block-wise: a window holds 10 blocks of 100 rows, so the first 1000 rows come from 10 blocks
    assert np.unique(orders[0][:1000].numpy() // 100).size == 10
    seq = torch.cat([b["x"] for b in BatchLoader(arrays, schema, 256, shuffle=False, buffer_rows=1000, block_rows=100)])
    assert torch.equal(seq, torch.arange(n))


def test_vocab_counter_equals_vocab_build():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 50, 200), rng.integers(30, 90, 100), np.array(["x", "7", "y"]), rng.integers(0, 9, 5)]
    c = VocabCounter("t")
    for p in parts:
        c.add(p)
    for m in (1, 3):
        np.testing.assert_array_equal(c.vocab(m).values, Vocab.build("t", parts, min_count=m).values)


def test_streaming_errors_are_clear(tmp_path):
    folder = _folder(_frame(500), tmp_path / "p")
    whole_table = {**SCHEMA, "split": {"method": "per_user_chronological", "time": "rid"}}
    with pytest.raises(ConfigError, match="needs the whole table"):
        load_dataset("table", {"path": folder, "schema": whole_table}, cache=False)
    no_len = {**SCHEMA, "fields": [dict(f, max_len=None) if f["name"] == "hist" else f for f in SCHEMA["fields"]]}
    no_len["fields"] = [{k: v for k, v in f.items() if v is not None} for f in no_len["fields"]]
    with pytest.raises(ConfigError, match=r"\['hist'\] need a max_len"):
        load_dataset("table", {"path": folder, "schema": no_len}, cache=False)
    other = {**SCHEMA, "fields": SCHEMA["fields"] + [{"name": "nope", "kind": "categorical", "role": "context"}]}
    with pytest.raises(DataError, match=r"column\(s\) \['nope'\] not found"):
        load_dataset("table", {"path": folder, "schema": other}, cache=False)


def test_synthetic_in_parts_follows_its_planted_model():
    from ctrgraph.data.recipes import synthetic

    p = synthetic.SyntheticParams(n_instances=12_000, n_users=400, n_items=600, chunk_rows=2500)
    parts = list(synthetic.chunks(p))
    assert len(parts) >= 4 and sum(len(x) for x in parts) == p.n_instances
    users = [set(np.unique(x.columns["user_id"]).tolist()) for x in parts]
    assert all(not (a & b) for i, a in enumerate(users) for b in users[i + 1:])  # blocks of users
    for x in parts:  # every part's labels come from the planted logit of its own rows
        prob = 1 / (1 + np.exp(-synthetic.true_logit(x)))
        np.testing.assert_allclose(prob, x.columns["true_prob"], rtol=1e-5, atol=1e-6)
    ds = load_dataset("synthetic", p.model_dump(), cache=False)
    assert isinstance(ds.arrays["hist_item_id"], np.memmap) and len(ds) == p.n_instances
    assert synthetic.chunks(synthetic.SyntheticParams(n_instances=12_000, n_users=400, n_items=600)) is None
    with pytest.raises(ConfigError, match="needs split=user"):
        list(synthetic.chunks(synthetic.SyntheticParams(n_instances=12_000, n_users=400, n_items=600,
                                                        chunk_rows=2500, split="time")))


def test_read_rows_of_memory_mapped_views(tmp_path):
    from ctrgraph.data.loader import read_rows

    x = np.arange(1000 * 7, dtype=np.int32).reshape(1000, 7)
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    view = m[100:900]  # a split is a row slice of the file's array
    for a, b in [(0, 10), (5, 800), (799, 800)]:
        np.testing.assert_array_equal(read_rows(view, a, b), x[100 + a:100 + b])
    np.testing.assert_array_equal(read_rows(view[50:], 3, 9), x[153:159])
    np.testing.assert_array_equal(read_rows(x, 3, 9), x[3:9])  # in-memory arrays too


def test_streamed_folder_with_hashed_tables_equals_the_in_memory_encoding(tmp_path):
    df = _frame(3000, seed=2)
    single = tmp_path / "one.parquet"
    flat = df.drop(columns=["day"]).copy()
    for c in ("tags", "hist"):
        flat[c] = ["|".join(map(str, v)) for v in flat[c]]
    flat.to_parquet(single, index=False)
    buckets = {"item": 64, "user": 32}
    whole = load_dataset("table", {"path": str(single), "schema": SCHEMA}, cache=False, hash_buckets=buckets)
    streamed = load_dataset("table", {"path": _folder(df, tmp_path / "p"), "schema": SCHEMA, "batch_rows": 500},
                            cache=False, hash_buckets=buckets)
    assert streamed.schema.meta.get("hashed") == whole.schema.meta.get("hashed")
    assert streamed.vocab_sizes == whole.vocab_sizes and streamed.vocab_sizes["item"] == 66
    a, b = _by_rid(streamed), _by_rid(whole)
    for k in a:
        for c in a[k]:
            np.testing.assert_array_equal(a[k][c], b[k][c], err_msg=f"{k} {c}")
