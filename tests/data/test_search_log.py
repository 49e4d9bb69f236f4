"""The own-data search-log recipe (Best Buy's layout): histories strictly before the query, distinct
query events, negatives never the clicked item, clear errors; EGIN trains on the shared Best Buy head."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrgraph.cli import main
from ctrgraph.errors import DataError
from ctrgraph.registry import build_raw

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _log(tmp_path, rows):
    df = pd.DataFrame(rows, columns=["user", "sku", "category", "query", "click_time", "query_time"])
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    return path


def test_histories_are_strictly_before_the_query(tmp_path):
    rows = [("u1", "a", "c1", "TV  Sets", "2011-09-01 10:00:30", "2011-09-01 10:00:00"),
            ("u1", "b", "c1", "tv sets", "2011-09-01 10:01:30", "2011-09-01 10:00:00"),  # same query event
            ("u1", "c", "c2", "cable", "2011-09-02 10:00:40", "2011-09-02 10:00:00"),
            ("u2", "d", "c2", "cable", "2011-09-03 10:00:10", "2011-09-03 10:00:00"),
            ("u1", "e", "c3", "radio", "2011-09-04 10:00:10", "2011-09-04 10:00:00")]
    raw = build_raw("search_log", {"path": str(_log(tmp_path, rows)), "negatives": 2, "test": 0.2, "valid": 0.0})
    c, ln = raw.columns, raw.lengths
    pos = c["label"] == 1
    assert pos.sum() == 5 and (~pos).sum() == 10
    r = np.flatnonzero(pos & (c["item_id"] == "e"))[0]  # u1's radio query on day 4
    assert list(c["hist_item_id"][r][: ln["hist_item_id"][r]]) == ["a", "b", "c"]
    assert list(c["hist_query_id"][r][: ln["hist_query_id"][r]]) == ["tv sets", "cable"]  # normalised, one event
    assert list(c["hist_query_category"][r][: ln["hist_query_id"][r]]) == ["c1", "c2"]
    first = np.flatnonzero(pos & (c["item_id"] == "a"))[0]
    assert ln["hist_item_id"][first] == 0 and ln["hist_query_id"][first] == 0  # nothing before the first query
    for i in np.flatnonzero(~pos):  # a negative is never its row's clicked item (single-click queries here)
        q = np.flatnonzero(pos & (c["user_id"] == c["user_id"][i]) & (c["timestamp"] == c["timestamp"][i]))
        if q.size == 1:
            assert c["item_id"][i] != c["item_id"][q[0]]


def test_bad_search_logs_are_clear_errors(tmp_path):
    path = _log(tmp_path, [("u1", "a", "c1", "tv", "2011-09-01 10:00:30", "not a time")])
    with pytest.raises(DataError, match="row 2: column 'query_time' value 'not a time' is not a timestamp"):
        build_raw("search_log", {"path": str(path)})
    pd.DataFrame({"user": ["u"], "sku": ["a"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        build_raw("search_log", {"path": str(tmp_path / "short.csv")})
    with pytest.raises(DataError, match="does not exist"):
        build_raw("search_log", {"path": "nope.csv"}, tmp_path)


@pytest.mark.skipif(not (SHARED / "bestbuy-search-sample").exists(), reason="../shared/data not present")
def test_egin_trains_on_the_best_buy_head(tmp_path):
    assert main(["train", "--model", "egin", "--dataset", "search_log", "--data-dir", str(SHARED),
                 "--set", "data.params.path=bestbuy-search-sample/train_head999.csv", "--set", "train.epochs=1",
                 "--set", "train.progress=false", "--out", str(tmp_path / "run")]) == 0
