"""The command line as a user meets it: train, predict, evaluate, compare, and bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from ctrgraph.cli import main


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lr"
    assert main(["train", "--model", "lr", "--set", "train.epochs=1", "--set", "train.progress=false",
                 "--out", str(out)]) == 0
    return out


def test_train_writes_the_run_contract(lr_run):
    m = json.loads((lr_run / "metrics.json").read_text())
    for k in ("auc", "logloss", "gauc"):
        assert 0 < m["test"][k] < 1 or k == "logloss"
    for k in ("best_epoch", "seconds_per_epoch", "train_samples_per_s"):
        assert k in m
    assert {"auc", "logloss"} <= set(m["valid"])
    assert (lr_run / "config.yaml").exists() and (lr_run / "data" / "schema.json").exists()


def _raw_rows(n=50):
    from ctrgraph.registry import build_raw

    raw = build_raw("movielens")
    rows = {}
    for f in raw.schema.fields:
        col = raw.columns[f.name][:n]
        if f.is_sequence_like:
            ln = raw.lengths[f.name][:n]
            rows[f.name] = ["|".join(str(x) for x in col[i, : ln[i]]) for i in range(n)]  # test fixture
        else:
            rows[f.name] = col
    return pd.DataFrame(rows)


def test_predict_scores_raw_rows_and_maps_unseen_to_oov(lr_run, tmp_path, capsys):
    df = _raw_rows()
    df.loc[0, "item_id"] = 99999999  # never seen
    df.loc[1, "genres"] = "NoSuchGenre|Comedy"
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    df.to_csv(inp, index=False)
    assert main(["predict", "--run", str(lr_run), "--input", str(inp), "--output", str(out)]) == 0
    p = pd.read_csv(out)
    assert len(p) == len(df) and p["pctr"].between(0, 1).all()
    assert "auc" in json.loads(capsys.readouterr().out)


def test_evaluate_reproduces_the_test_metric(lr_run, capsys):
    assert main(["evaluate", "--run", str(lr_run)]) == 0
    got = json.loads(capsys.readouterr().out)["test"]["auc"]
    assert abs(got - json.loads((lr_run / "metrics.json").read_text())["test"]["auc"]) < 1e-9


@pytest.mark.parametrize("argv, needle", [
    (["train", "--model", "dfm"], "unknown model 'dfm'"),
    (["train", "--dataset", "nope", "--model", "fm"], "unknown dataset 'nope'"),
    (["train", "--model", "fm", "--set", "train.lrr=1"], "train.lrr"),
    (["train", "--model", "fm", "--set", "model.hiden=[8]"], "hiden"),
    (["train", "--model", "fm", "--set", "train.lr=abc"], "train.lr"),
    (["train", "--model", "fm", "--set", "bogus.x=1"], "bogus.x"),
    (["train", "--model", "fm", "--config", "/nonexistent.yaml"], "config file not found"),
    (["train", "--dataset", "ml100k", "--model", "fm", "--data-dir", "/nonexistent"], "not found"),
    (["compare", "--models", "fm,xx", "--seeds", "1"], "unknown model 'xx'"),
    (["compare", "--models", "fm", "--seeds", "a"], "--seeds"),
])
def test_bad_input_is_a_clear_error_and_leaves_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not (out / "metrics.json").exists() and not out.exists()


def test_predict_bad_input(lr_run, tmp_path, capsys):
    df = _raw_rows(5).drop(columns=["item_id"])
    p = tmp_path / "x.csv"
    df.to_csv(p, index=False)
    assert main(["predict", "--run", str(lr_run), "--input", str(p), "--output", str(tmp_path / "o.csv")]) == 2
    assert "item_id" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("")
    assert main(["predict", "--run", str(lr_run), "--input", str(tmp_path / "empty.csv"), "--output",
                 str(tmp_path / "o.csv")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_bad_table_data_names_row_and_field(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("u,i,y\n1,2,0\n3,4,7\n5,6,1\n")
    (tmp_path / "s.yaml").write_text("label: y\nfields:\n - {name: u, kind: categorical, role: user}\n"
                                     " - {name: i, kind: categorical, role: item}\n")
    rc = main(["train", "--dataset", "table", "--model", "fm", "--set", f"data.params.path={tmp_path / 'd.csv'}",
               "--set", f"data.params.schema={tmp_path / 's.yaml'}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "y" in err and ("row 2" in err or "row 1" in err), err
    assert not (tmp_path / "run").exists()


def test_compare_writes_results_and_summary(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", "lr,fm", "--seeds", "1,2", "--set", "train.epochs=1",
                 "--set", "train.progress=false", "--out", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 4
    for c in ("model", "seed", "test_auc", "test_logloss", "valid_auc", "best_epoch", "seconds_per_epoch"):
        assert c in res.columns
    md = (out / "summary.md").read_text()
    assert "RelaImpr" in md and "±" in md
    np.testing.assert_allclose(res.groupby("model").test_auc.mean()["fm"],
                               pd.read_csv(out / "summary.csv").set_index("variant").loc["fm", "test_auc_mean"])
    # a second compare over the same runs reuses them (one run directory per configuration and seed)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4 and all(r.startswith(("lr-", "fm-")) for r in runs)
    assert main(["compare", "--models", "fm", "--seeds", "1", "--set", "train.epochs=1",
                 "--set", "train.progress=false", "--out", str(out)]) == 0
    assert "reused" in capsys.readouterr().out and sorted(p.name for p in (out / "runs").iterdir()) == runs


def test_compare_applies_model_parameters(tmp_path):
    from ctrgraph.config import load_config
    from ctrgraph.errors import ConfigError
    from ctrgraph.experiments.compare import run_compare

    cfg = load_config(None, ["train.epochs=1", "train.progress=false", "model.hidden=[8]"])
    run_compare(cfg, ["dnn"], [1], tmp_path / "a", log=lambda *_: None)
    import yaml
    (run,) = (tmp_path / "a" / "runs").iterdir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["hidden"] == [8]
    with pytest.raises(ConfigError, match="several models"):
        run_compare(cfg, ["dnn", "pnn"], [1], tmp_path / "b", log=lambda *_: None)


def test_reproduce_help_names_every_study():
    import argparse

    from ctrgraph.cli import build_parser
    from ctrgraph.experiments.studies import STUDIES

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["reproduce"].format_help()
    assert [p for p in STUDIES if p not in text] == []


def test_predict_refuses_bad_rows_before_writing(lr_run, tmp_path, capsys):
    from ctrgraph.runs.assemble import load_run

    schema = load_run(lr_run)[2]
    df = _raw_rows()
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    bad = df.copy()
    bad[schema.label] = bad[schema.label].astype(object)
    bad.loc[4, schema.label] = 3  # not 0 / 1: refused, and nothing is written
    bad.to_csv(inp, index=False)
    assert main(["predict", "--run", str(lr_run), "--input", str(inp), "--output", str(out)]) == 2
    assert "row 5: 3.0 is not 0 or 1" in capsys.readouterr().err and not out.exists()
    # parallel sequences (history items and their genres) with different lengths in one row
    pair = next(f for f in schema.fields if f.group and f.name in df.columns and f.group in df.columns)
    bad = df.copy()
    r = int(np.flatnonzero(bad[pair.group].astype(str).str.len() > 0)[0])
    bad.loc[r, pair.name] = str(bad.loc[r, pair.name]) + "|1"
    bad.to_csv(inp, index=False)
    assert main(["predict", "--run", str(lr_run), "--input", str(inp), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"row {r + 1}: column {pair.name!r} has" in err and "parallel sequences" in err and not out.exists()


def test_predict_streams_in_chunks(lr_run, tmp_path, capsys):
    """Chunked scoring equals one-chunk scoring, for CSV and parquet; a bad row in a later chunk is
    named by its row in the file and leaves no output."""
    from ctrgraph.runs.assemble import load_run
    from ctrgraph.runs.predict import predict_file

    schema = load_run(lr_run)[2]
    df = _raw_rows(50)
    df.to_csv(tmp_path / "in.csv", index=False)
    df.astype(str).to_parquet(tmp_path / "in.parquet")
    one = predict_file(lr_run, tmp_path / "in.csv", tmp_path / "a.csv", chunk_rows=1000)
    for src in ("in.csv", "in.parquet"):
        many = predict_file(lr_run, tmp_path / src, tmp_path / "b.csv", chunk_rows=7)
        assert many["rows"] == one["rows"] == 50 and many["logloss"] == pytest.approx(one["logloss"])
        a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
        np.testing.assert_array_equal(a["row"], np.arange(50))
        np.testing.assert_allclose(a["pctr"], b["pctr"], rtol=1e-6)
    bad = df.copy()
    bad[schema.label] = bad[schema.label].astype(object)
    bad.loc[22, schema.label] = "yes"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    from ctrgraph.errors import DataError

    with pytest.raises(DataError, match="row 23"):
        predict_file(lr_run, tmp_path / "bad.csv", tmp_path / "c.csv", chunk_rows=7)
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "c.csv.tmp").exists()
