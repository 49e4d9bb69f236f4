"""Property-based checks (hypothesis) of the own-data paths and of predict: whatever table, log or
rows a user hands in, ctrgraph either builds / scores it correctly or raises a CtrGraphError with a
message; never another exception, never a silently wrong result."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ctrgraph.errors import CtrGraphError  # noqa: E402
from ctrgraph.registry import build_raw  # noqa: E402

SETTINGS = settings(max_examples=int(__import__("os").environ.get("CTRGRAPH_HYPOTHESIS_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# values a CSV cell may hold: integers, floats, words, empty, separators, quotes, unicode, NaN-ish
CELLS = st.one_of(st.integers(-5, 30), st.floats(allow_nan=True, allow_infinity=True, width=32),
                  st.sampled_from(["", "a", "b|c", "x,y", '"q"', "NaN", "none", "1e3", "  7 ", "über", "||"]))


def _frame(draw, columns: list[str], n: int) -> pd.DataFrame:
    return pd.DataFrame({c: draw(st.lists(CELLS, min_size=n, max_size=n)) for c in columns})


@st.composite
def tables(draw):
    n = draw(st.integers(1, 25))
    df = _frame(draw, ["user", "item", "cat", "price", "hist", "clicked"], n)
    if draw(st.booleans()):  # a well-formed label column half of the time, so that building succeeds too
        df["clicked"] = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        df["price"] = draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))
    return df


SCHEMA = """
label: clicked
fields:
  - {name: user, kind: categorical, role: user}
  - {name: item, kind: categorical, role: item}
  - {name: cat, kind: categorical, role: item_attr}
  - {name: price, kind: numeric, role: item_attr}
  - {name: hist, kind: sequence, role: behavior, vocab: item, max_len: 4, sep: "|", target: item}
"""


@SETTINGS
@given(tables())
def test_any_table_builds_or_gets_a_clear_error(df):
    with tempfile.TemporaryDirectory() as d:
        p, s = Path(d) / "t.csv", Path(d) / "schema.yaml"
        df.to_csv(p, index=False)
        s.write_text(SCHEMA)
        try:
            raw = build_raw("table", {"path": str(p), "schema": str(s)})
        except CtrGraphError as e:
            assert str(e)  # a message, naming what is wrong
            return
        back = pd.read_csv(p)
        assert len(raw) == len(back)
        np.testing.assert_array_equal(raw.columns["label"], back["clicked"].to_numpy(dtype=np.float64))
        assert (raw.lengths["hist"] <= 4).all()


@st.composite
def logs(draw):
    n = draw(st.integers(1, 30))
    df = _frame(draw, ["uid", "iid", "ts", "clicked"], n)
    if draw(st.booleans()):
        df["uid"] = draw(st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=n, max_size=n))
        df["iid"] = draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
        df["ts"] = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n))
        df["clicked"] = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return df


@SETTINGS
@given(logs(), st.sampled_from(["random", "time_quantile", "per_user_chronological"]))
def test_any_log_builds_or_gets_a_clear_error(df, split):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "log.csv"
        df.to_csv(p, index=False)
        try:
            raw = build_raw("log", {"path": str(p), "user_col": "uid", "item_col": "iid", "time_col": "ts",
                                    "label_col": "clicked", "split": split})
        except CtrGraphError as e:
            assert str(e)
            return
        back = pd.read_csv(p)
        assert len(raw) <= len(back) and set(np.unique(raw.columns["label"])) <= {0.0, 1.0}
        assert (raw.lengths["hist_item_id"] <= 50).all()


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    from ctrgraph.cli import main

    out = tmp_path_factory.mktemp("prop") / "lr"
    assert main(["train", "--model", "lr", "--set", "train.epochs=1", "--set", "train.progress=false",
                 "--out", str(out)]) == 0
    raw = build_raw("movielens")
    n = 12
    rows = {f.name: (["|".join(map(str, raw.columns[f.name][i, : raw.lengths[f.name][i]])) for i in range(n)]
                     if f.is_sequence_like else raw.columns[f.name][:n]) for f in raw.schema.fields}
    return out, pd.DataFrame(rows)


@SETTINGS
@given(data=st.data())
def test_predict_scores_any_rows_or_gets_a_clear_error(lr_run, data):
    from ctrgraph.runs.predict import predict_file

    run, base = lr_run
    df = base.copy().astype(object)
    for _ in range(data.draw(st.integers(0, 4))):  # corrupt a few cells, drop or add a column
        col = data.draw(st.sampled_from(list(df.columns)))
        row = data.draw(st.integers(0, len(df) - 1))
        df.loc[row, col] = data.draw(CELLS)
    if data.draw(st.booleans()):
        df = df.drop(columns=[data.draw(st.sampled_from(list(df.columns)))])
    with tempfile.TemporaryDirectory() as d:
        inp, out = Path(d) / "in.csv", Path(d) / "out.csv"
        df.to_csv(inp, index=False)
        try:
            res = predict_file(run, inp, out, chunk_rows=data.draw(st.integers(1, 20)))
        except CtrGraphError as e:
            assert str(e) and not out.exists()
            return
        got = pd.read_csv(out)
        assert res["rows"] == len(df) == len(got)
        assert got["pctr"].between(0, 1).all() and (got["row"].to_numpy() == np.arange(len(df))).all()
