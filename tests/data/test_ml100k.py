"""The ml100k-ctr protocol, checked against the protocol's published counts and a brute-force
per-row reference of the history rule."""
import numpy as np
import pandas as pd
import pytest
from conftest import shared_data

from ctrgraph.data.dataset import is_padded_after
from ctrgraph.data.raw import TEST, TRAIN, VALID
from ctrgraph.registry import build_raw, load_dataset


@pytest.fixture(scope="module")
def raw():
    return build_raw("ml100k", data_dir=shared_data("ml-100k"))


def test_counts_match_protocol(raw):
    assert len(raw) == 72855
    assert int(raw.columns["label"].sum()) == 55375
    assert raw.counts() == {"train": 58251, "valid": 7302, "test": 7302}
    users = raw.columns["user_id"]
    for s in (TRAIN, VALID, TEST):
        assert np.unique(users[raw.split == s]).size == 943


def test_history_equals_brute_force(raw):
    d = shared_data("ml-100k")
    r = pd.read_csv(d / "ml-100k.inter.gz", sep="\t")
    r.columns = [c.split(":")[0] for c in r.columns]
    rng = np.random.default_rng(0)
    users = rng.choice(r.user_id.unique(), 25, replace=False)
    cols, lens = raw.columns, raw.lengths["hist_item_id"]
    for u in users:  # brute-force reference: a loop per instance, written from the protocol text
        ru = r[(r.user_id == u) & (r.rating != 3)].sort_values(["timestamp", "item_id"]).to_numpy()
        rows = np.flatnonzero(cols["user_id"] == u)
        got = {(int(cols["item_id"][i]), int(cols["timestamp"][i])): list(cols["hist_item_id"][i, :lens[i]])
               for i in rows}
        for k in range(len(ru)):
            before = [int(x[1]) for x in ru[:k] if x[2] >= 4][-50:]
            assert got[(int(ru[k][1]), int(ru[k][3]))] == before


def test_split_rule_per_user(raw):
    u, ts, it, sp = raw.columns["user_id"], raw.columns["timestamp"], raw.columns["item_id"], raw.split
    for user in np.unique(u)[:50]:
        rows = np.flatnonzero(u == user)
        order = rows[np.lexsort((it[rows], ts[rows]))]
        n = order.size
        nt, nv = max(1, round(0.1 * n)), max(1, round(0.1 * n))
        expect = np.array([TRAIN] * (n - nt - nv) + [VALID] * nv + [TEST] * nt)
        assert (sp[order] == expect).all()


def test_features_and_encoding(raw):
    g = raw.columns["genres"][raw.columns["item_id"] == 2][0]
    assert list(g[: raw.lengths["genres"][raw.columns["item_id"] == 2][0]]) == ["Action", "Adventure", "Thriller"]
    assert set(np.unique(raw.columns["weekday"])) <= set(range(7))
    assert "unkonwn" in set(raw.columns["release_year"])
    ds = load_dataset("ml100k", data_dir=shared_data("ml-100k"), cache=False)
    assert ds.num_rows("train") == 58251 and is_padded_after(ds.schema, ds.arrays)
    tr = ds.split("train")
    # vocabularies come from train only: every train id is known, some valid/test ids are not
    assert (tr["item_id"] >= 2).all()
    assert (ds.split("test")["item_id"] == 1).any()
