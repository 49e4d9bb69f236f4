"""The peer harness's export (benchmarks/peers/export.py): the .npz the peers train on holds exactly
ctrgraph's encoded arrays and vocabulary sizes. Needs neither the peers' environment nor a network."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

EXPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "export.py"


@pytest.fixture(scope="module")
def export():
    spec = importlib.util.spec_from_file_location("peer_export", EXPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_round_trip(export, data, path: Path) -> dict:
    meta = export.export_npz(data, path)
    arrays, back = export.load_npz(path)
    assert back == meta
    assert back["vocab_sizes"] == {k: int(v) for k, v in data.vocab_sizes.items()}
    for split in ("train", "valid", "test"):
        mine = data.split(split)
        assert set(arrays[split]) == set(mine)
        assert back["rows"][split] == data.num_rows(split)
        for k, v in mine.items():
            got = arrays[split][k]
            assert got.dtype == np.asarray(v).dtype and np.array_equal(got, np.asarray(v)), (split, k)
    for f in back["fields"]:
        field = data.schema[f["name"]]
        assert f["kind"] == field.kind.value and f["max_len"] == field.max_len
        if f["embedded"]:
            assert f["vocab_size"] == data.vocab_sizes[field.vocab or field.name]
    return back


def test_planted_round_trip(export, planted, tmp_path):
    meta = _check_round_trip(export, planted, tmp_path / "planted.npz")
    hist = planted.split("train")["hist_item_id"]
    n = export.lengths(hist)
    assert np.array_equal(n, (hist != 0).sum(axis=1))
    assert {f["name"]: f["table"] for f in meta["fields"]}["hist_cat"] == "cat"


def test_ml100k_round_trip(export, tmp_path):
    from ctrgraph.registry import load_dataset

    ds = load_dataset("ml100k", data_dir=shared_data("ml-100k"))
    meta = _check_round_trip(export, ds, tmp_path / "ml100k.npz")
    assert meta["rows"] == {"train": 58251, "valid": 7302, "test": 7302}
    emb = {f["name"]: f for f in meta["fields"] if f["embedded"]}
    assert len(emb) == 12  # the 12 embedded fields every tool gets (192 = 12 x 16 inputs to a tower)
    assert emb["hist_item_id"]["table"] == "item_id" and emb["hist_genre"]["table"] == "genres"
    assert emb["genres"]["kind"] == "multi_valued" and emb["hist_item_id"]["max_len"] == 50
    hist = ds.split("train")["hist_item_id"]  # padding at the end: the length prefix is exactly the non-zeros
    n = export.lengths(hist)
    assert np.array_equal(np.arange(hist.shape[1])[None, :] < n[:, None], hist != 0)
