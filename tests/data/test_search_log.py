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


def test_query_similarity_is_the_token_jaccard_of_consecutive_queries():
    from ctrgraph.data.recipes.search_log import query_similarity

    q = np.array(["tv sets", "tv", "radio", "a b", "b c", "x\x18y", "y\x18z"], dtype=object)
    u = np.array([0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(query_similarity(q[:5], u[:5]), [0, 0.5, 0, 0, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(query_similarity(q[5:], u[5:], "\x18"), [0, 1 / 3], rtol=1e-6)


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
                 "--set", "model.query_similarity_field=hist_query_sim",
                 "--set", "train.progress=false", "--out", str(tmp_path / "run")]) == 0


def _jd(tmp_path):
    d = tmp_path / "jd"
    d.mkdir()
    (d / "user_behavior_data_x.txt").write_text(
        "query\tcandidate_wid_list\tcandidate_label_list\thistory_qry_list\thistory_wid_list\thistory_type_list\t"
        "history_time_list\n"
        "7\x188\t11_12_13\t1.0_0.0_2.0\t-1_5_5\t11_12_14\tCLICK_CLICK_ORD\t0_10_20_30\n"
        "9\t12_14\t0.0_1.0\t6_6\t13_11\tCLICK_CART\t0_5_5\n")
    (d / "product_meta_data_x.txt").write_text(
        "wid\tcate_id_1\tcate_id_2\tcate_id_3\tcate_id_4\n11\ta\tb\tc1\td\n12\ta\tb\tc1\td\n13\ta\tb\tc2\td\n"
        "14\ta\tb\tc3\td\n")
    return d


def test_jdsearch_layout(tmp_path):
    raw = build_raw("jdsearch", {"path": str(_jd(tmp_path)), "valid": 0.0})
    c, ln = raw.columns, raw.lengths
    test = raw.split == 2
    assert test.sum() == 5 and list(c["label"][test]) == [1, 0, 1, 0, 1]  # candidates, label > 0 = positive
    assert set(c["query_category"][test]) == {"unk"}
    r = np.flatnonzero(test & (c["user_id"] == "0"))[0]  # user 0's test query at 0 + 10 + 20 + 30 = 60
    assert c["timestamp"][r] == 60 and c["query_id"][r] == "7\x188"
    assert list(c["hist_item_id"][r][: ln["hist_item_id"][r]]) == ["11", "12", "14"]
    assert list(c["hist_category"][r][: ln["hist_item_id"][r]]) == ["c1", "c1", "c3"]
    assert list(c["hist_query_id"][r][: ln["hist_query_id"][r]]) == ["5", "5"]  # two events of query 5 (t 10, 30)
    train = np.flatnonzero((raw.split == 0) & (c["label"] == 1))
    assert sorted(c["item_id"][train]) == ["11", "12", "13", "14"]  # the history behaviours with a query
    with pytest.raises(DataError, match="no user_behavior_data"):
        build_raw("jdsearch", {"path": str(tmp_path)})


@pytest.mark.skipif(not (SHARED / "jdsearch-sample").exists(), reason="../shared/data not present")
def test_egin_trains_on_the_jdsearch_sample(tmp_path):
    assert main(["train", "--model", "egin", "--dataset", "jdsearch", "--data-dir", str(SHARED), "--set",
                 "train.epochs=1", "--set", "train.progress=false", "--out", str(tmp_path / "run")]) == 0
