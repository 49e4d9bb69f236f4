"""DG-ENN Fig. 1 (`dg-analysis fig1`): feature-frequency and behaviour-length distributions of the
train split, against brute-force counts."""
from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from ctrgraph.config import load_config
from ctrgraph.errors import ConfigError
from ctrgraph.experiments import dg_data_stats as st
from ctrgraph.experiments.dg_analysis import main as dg_main
from ctrgraph.train.run import dataset_for

PARAMS = ("data.params={n_instances: 1500, n_users: 60, n_items: 100, n_categories: 4, n_cities: 10, "
          "n_brands: 10, emit_true_prob: false}")


@pytest.fixture(scope="module")
def syn():
    return dataset_for(load_config(None, ["data.name=synthetic", "data.cache=false", PARAMS]))


def test_value_frequencies_match_a_brute_force_count(syn):
    edges = [1, 3, 10, 30]
    rows = st.value_frequency_rows(syn, ["item_id", "city"], edges)
    tr = syn.split("train")
    for f in ("item_id", "city"):
        freq = Counter(np.asarray(tr[f]).tolist())  # seen values only
        want = [sum(1 for c in freq.values() if lo <= c < hi) for lo, hi in zip(edges, edges[1:] + [10**9])]
        got = [r for r in rows if r["field"] == f]
        assert [r["bucket"] for r in got] == ["1-2", "3-9", "10-29", ">=30"]
        assert [r["count"] for r in got] == want and sum(want) == len(freq)
        assert sum(r["share"] for r in got) == pytest.approx(1.0)


def test_behaviour_lengths_count_each_users_distinct_timed_behaviours(syn):
    tr = syn.split("train")
    users, hist, ts = (np.asarray(tr[k]) for k in ("user_id", "hist_item_id", "hist_ts"))
    seen: dict[int, set] = {}
    for u, h, t in zip(users, hist, ts):  # reference: per row, its valid (ts, item) behaviours
        seen.setdefault(int(u), set()).update((int(a), int(b)) for a, b in zip(t, h) if b != 0)
    want = np.array([len(seen[u]) for u in sorted(seen)])
    np.testing.assert_array_equal(st.behaviour_lengths(syn), want)
    assert (want <= 5).any() and (want > 20).any()  # the generator's light and heavy users
    rows = st.behaviour_rows(syn, [1, 6])
    assert [r["count"] for r in rows] == [int((want < 1).sum()), int(((want >= 1) & (want < 6)).sum()),
                                          int((want >= 6).sum())]


def test_fig1_command_writes_table_csv_and_png(tmp_path, syn, monkeypatch):
    monkeypatch.setattr("ctrgraph.train.run.dataset_for", lambda cfg: syn)
    assert dg_main(["fig1", "--dataset", "synthetic", "--fields", "user_id,brand", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "fig1.md").read_text()
    assert "| feature frequency | brand | 1-4 |" in md and "| behaviour length | users | 0 |" in md
    with open(tmp_path / "fig1.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["field"] for r in rows} == {"user_id", "brand", "users"}
    assert (tmp_path / "fig1.png").stat().st_size > 5000
    with pytest.raises(ConfigError, match="categorical"):
        st.value_frequency_rows(syn, ["hist_item_id"])
