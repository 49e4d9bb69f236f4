"""DG-ENN Table 6 / Fig. 6 analyses: bucketing and grouped metrics against brute-force loops,
planted gains land in the right buckets, the commands on tiny finished runs, bad input."""
import json
import shutil

import numpy as np
import pytest
import torch

from ctrgraph.errors import ConfigError
from ctrgraph.experiments import dg_sparsity as S
from ctrgraph.train.metrics import auc, logloss


def test_bucket_index_equals_a_loop():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 130, 500)
    edges = [1, 5, 10, 20, 50, 100]
    want = np.array([sum(x >= e for e in edges) for x in v])  # brute force: edges passed
    np.testing.assert_array_equal(S.bucket_index(v, edges), want)
    assert S.bucket_names(edges) == ["0", "1-4", "5-9", "10-19", "20-49", "50-99", ">=100"]
    for bad in ([], [5, 5], [10, 3]):
        with pytest.raises(ConfigError, match="strictly increasing"):
            S.bucket_index(v, bad)


def test_grouped_metrics_equal_per_group_loops():
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.4).astype(np.int8)
    p = np.clip(rng.random(n) * 0.6 + 0.3 * y, 0, 1)
    p[:50] = np.round(p[:50], 1)  # ties
    rows = np.concatenate([np.arange(n), rng.integers(0, n, 300)])  # rows in several groups
    groups = np.concatenate([rng.choice([0, 1, 2, 4], n), np.full(300, 5)])  # group 3 is empty
    one_class = np.flatnonzero(y == 1)[:7]
    rows, groups = np.concatenate([rows, one_class]), np.concatenate([groups, np.full(7, 6)])
    m = S.grouped_metrics(y, p, rows, groups, 8)  # groups 3 and 7 are empty
    for g in (0, 1, 2, 4, 5):
        r = rows[groups == g]
        assert m["n"][g] == r.size
        assert m["pos_rate"][g] == pytest.approx(y[r].mean())
        assert m["logloss"][g] == pytest.approx(logloss(y[r], p[r]), rel=1e-10)
        assert m["auc"][g] == pytest.approx(auc(y[r], p[r]), rel=1e-10)
    assert np.isnan(m["auc"][6]) and m["logloss"][6] == pytest.approx(logloss(y[one_class], p[one_class]))
    for g in (3, 7):
        assert m["n"][g] == 0 and np.isnan(m["auc"][g]) and np.isnan(m["logloss"][g])


def test_frequencies_and_history_lengths_equal_loops(planted):
    tr, te = planted.split("train"), planted.split("test")
    freq = S.feature_frequencies(planted, ["user_id", "item_id", "cat"])
    for j, f in enumerate(["user_id", "item_id", "cat"]):
        want = [int(np.sum(tr[f] == v)) for v in te[f]]
        np.testing.assert_array_equal(freq[:, j], want)
    np.testing.assert_array_equal(S.history_lengths(planted, "hist"),
                                  [int(np.count_nonzero(h)) for h in te["hist_item_id"]])
    np.testing.assert_array_equal(S.history_lengths(planted, "user_rows"),
                                  [int(np.sum(tr["user_id"] == u)) for u in te["user_id"]])
    with pytest.raises(ConfigError, match="--by"):
        S.history_lengths(planted, "bogus")
    with pytest.raises(ConfigError, match="categorical fields only"):
        S._categorical(planted.schema, ["tags"])
    with pytest.raises(ConfigError, match="unknown field"):
        S._categorical(planted.schema, ["nope"])


def _fake(planted, probs, seed, model):
    y = planted.split("test")[planted.schema.label]
    return S.Scored(run=None, model=model, seed=seed, probs=probs, auc_check=(auc(y, probs), float("nan")))


def test_planted_gain_lands_in_the_rare_and_short_buckets(planted):
    """DG scores = base scores except on rare-item rows / short histories, where DG is near-perfect:
    the gain must be there and exactly zero elsewhere."""
    y = planted.split("test")[planted.schema.label].astype(float)
    rng = np.random.default_rng(0)
    base = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.15, y.size), 0.01, 0.99)
    freq = S.feature_frequencies(planted, ["item_id"])[:, 0]
    rare = freq < 15
    assert 0 < rare.sum() < y.size
    dg = np.where(rare, np.where(y > 0, 0.9, 0.1), base)
    b, d = [_fake(planted, base, 1, "pnn")], [_fake(planted, dg, 1, "dg-pnn")]
    rows = S.table6(b, d, planted, ["user_id", "item_id"], edges=[15], rare=15)
    by = {(r["field"], r["bucket"]): r for r in rows}
    assert by[("item_id", "train freq 0-14")]["gain_logloss"] < -0.1
    assert by[("item_id", "train freq 0-14")]["gain_auc"] > 0.1
    assert by[("item_id", "train freq >=15")]["gain_logloss"] == 0.0
    assert by[("item_id", "rare (train freq < 15)")]["n"] == rare.sum()
    assert by[("all", "all test rows")]["n"] == y.size

    hl = S.history_lengths(planted, "hist")
    dg6 = np.where(hl < 4, np.where(y > 0, 0.9, 0.1), base)
    rows6, edges = S.fig6(b, [_fake(planted, dg6, 1, "dg-din")], planted, "hist", [4, 8])
    assert edges == [4, 8] and [r["bucket"] for r in rows6] == ["0-3", "4-7", ">=8", "all"]
    assert rows6[0]["gain_auc"] > 0.1 and rows6[1]["gain_auc"] == 0.0 and rows6[2]["gain_auc"] == 0.0
    assert rows6[0]["users"] == np.unique(planted.split("test")["user_id"][hl < 4]).size


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """pnn and dg-pnn, one epoch each, seed 1, on a tiny synthetic data set (finished run dirs)."""
    from ctrgraph.config import load_config
    from ctrgraph.train.run import run_experiment

    root = tmp_path_factory.mktemp("dgsparsity")
    for model in ("pnn", "dg-pnn"):
        cfg = load_config(None, ["data.name=synthetic", f"model.name={model}", "train.epochs=1",
                                 "train.progress=false", "train.num_threads=1", "embedding.dim=8", "train.seed=1",
                                 ("data.params={n_instances: 3000, n_users: 200, n_items: 300, n_categories: 5, "
                                  "n_cities: 20, n_brands: 30, emit_true_prob: false}")])
        run_experiment(cfg, root / f"{model}-seed1")
    return root


def test_commands_write_their_files_on_tiny_runs(tiny_runs, tmp_path):
    from ctrgraph.cli import main

    runs = ["--base-runs", str(tiny_runs / "pnn-seed*"), "--dg-runs", str(tiny_runs / "dg-pnn-seed1")]
    assert main(["dg-analysis", "table6", *runs, "--fields", "user_id,item_id,brand", "--out", str(tmp_path / "t6"),
                 "--note", "tiny"]) == 0
    assert main(["dg-analysis", "fig6", *runs, "--out", str(tmp_path / "f6")]) == 0
    for f in ("t6/table6.csv", "t6/table6.md", "f6/fig6.csv", "f6/fig6.md", "f6/fig6.png"):
        assert (tmp_path / f).stat().st_size > 0
    md = (tmp_path / "t6/table6.md").read_text()
    assert "| brand |" in md and "tiny." in md
    ref = json.loads((tiny_runs / "dg-pnn-seed1/metrics.json").read_text())["test"]["auc"]
    import csv

    with open(tmp_path / "f6/fig6.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[-1]["bucket"] == "all" and float(rows[-1]["dg_auc"]) == pytest.approx(ref, abs=1e-6)


def test_old_dg_checkpoint_without_served_tables_scores_the_same(tiny_runs, tmp_path):
    """A dg-* run saved before the served tables existed: the provider is prepared from the train
    split and yields the same test scores as the checkpoint's own tables."""
    old = tmp_path / "old"
    shutil.copytree(tiny_runs / "dg-pnn-seed1", old)
    ck = torch.load(old / "best.pt", weights_only=False)
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("embedding.served_")}
    torch.save(ck, old / "best.pt")
    _, b, d = S.score_runs([tiny_runs / "pnn-seed1"], [tiny_runs / "dg-pnn-seed1"])
    _, _, d_old = S.score_runs([tiny_runs / "pnn-seed1"], [old])
    np.testing.assert_allclose(d_old[0].probs, d[0].probs, rtol=1e-5, atol=1e-6)
    assert b[0].auc_check[0] == pytest.approx(b[0].auc_check[1], abs=1e-6)


def test_bad_run_lists_are_refused(tiny_runs, tmp_path):
    with pytest.raises(ConfigError, match="no run directory matches"):
        S.parse_runs(str(tmp_path / "nothing-*"))
    with pytest.raises(ConfigError, match="not a run directory"):
        S.score_runs([tmp_path], [tiny_runs / "dg-pnn-seed1"])
    other = tmp_path / "pnn-seed2"
    shutil.copytree(tiny_runs / "pnn-seed1", other)
    cfg = (other / "config.yaml").read_text().replace("seed: 1\n", "seed: 2\n")
    (other / "config.yaml").write_text(cfg)
    with pytest.raises(ConfigError, match="pair one-to-one by seed"):
        S.score_runs([other], [tiny_runs / "dg-pnn-seed1"])
