"""``dg-analysis`` model-list tables (DG-ENN Tables 2-4) and the provider-variant ablations, wired end to
end on a tiny synthetic data set (1 epoch, 1 seed)."""
from __future__ import annotations

import csv

import numpy as np

import pytest

from ctrgraph.errors import ConfigError
from ctrgraph.experiments import compare, dg_analysis

TINY = ["train.epochs=1", "train.progress=false", "train.num_threads=1", "embedding.dim=4", "data.cache=false",
        ("data.params={n_instances: 1500, n_users: 60, n_items: 100, n_categories: 4, n_cities: 10, "
         "n_brands: 10, emit_true_prob: false}")]


def _csv(p):
    with open(p) as f:
        return list(csv.DictReader(f))


def test_model_list_table_writes_rows_and_reuses_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(dg_analysis.MODEL_LISTS, "table3", [("LR", "lr"), ("FM", "fm")])
    out = tmp_path / "t3"
    rows = dg_analysis.run_analysis("table3", out, dataset="synthetic", seeds=[1], overrides=TINY, log=lambda *a: None)
    assert [r["model"] for r in rows] == ["lr", "fm"] and [r["paper"] for r in rows] == ["LR", "FM"]
    md = (out / "table3.md").read_text().splitlines()
    assert md[0].startswith("| paper row | model |") and len(md) == 4
    assert md[2].startswith("| LR | `lr` | 1 |") and md[3].startswith("| FM | `fm` | 1 |")
    table = _csv(out / "table3.csv")
    assert [r["model"] for r in table] == ["lr", "fm"]
    assert all(0.0 < float(r["test_auc_mean"]) < 1.0 and r["runs"] == "1" for r in table)
    assert (out / "runs" / "fm-seed1" / "metrics.json").exists()  # compare's layout

    def no_training(*a, **k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(compare, "run_experiment", no_training)
    again = dg_analysis.run_analysis("table3", out, dataset="synthetic", seeds=[1], overrides=TINY,
                                     skip=["lr"], log=lambda *a: None)
    assert [r["model"] for r in again] == ["fm"] and again[0]["test_auc_mean"] == rows[1]["test_auc_mean"]


def test_provider_variant_analysis_still_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(dg_analysis.ANALYSES, "fig3", {"LightGCN": {"aggregator": "lightgcn", "layers": 1}})
    rows = dg_analysis.run_analysis("fig3", tmp_path / "f3", dataset="synthetic", seeds=[1], overrides=TINY,
                                    log=lambda *a: None)
    assert [r["variant"] for r in rows] == ["pnn", "LightGCN"]
    md = (tmp_path / "f3" / "fig3.md").read_text()
    assert "| pnn | (base model) | 1 |" in md and "aggregator=lightgcn, layers=1" in md


def test_paper_lists_name_the_papers_models():
    assert [m for _, m in dg_analysis.MODEL_LISTS["table2"]] == [
        "lr", "fm", "autoint+", "deepfm", "pnn", "din", "dien", "gin", "fignn", "dg-pnn"]
    assert [m for _, m in dg_analysis.MODEL_LISTS["table3"]] == ["pnn", "dg-pnn", "din", "dg-din", "fignn", "dg-fignn"]
    assert [m for _, m in dg_analysis.MODEL_LISTS["table4"]] == ["pnn", "gcn-pnn", "kgat-pnn", "hgat-pnn", "dg-pnn"]
    from ctrgraph.models import parse_model_name

    for _, m in dg_analysis.MODEL_LISTS["table2"] + dg_analysis.MODEL_LISTS["table3"]:
        parse_model_name(m)  # all registered


def test_unknown_names_fail_before_anything_trains(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="unknown analysis 'table9'.*table2"):
        dg_analysis.run_analysis("table9", tmp_path, dataset="synthetic", overrides=TINY)
    with pytest.raises(ConfigError, match=r"--skip \['gin'\]: not in table3"):
        dg_analysis.run_analysis("table3", tmp_path, dataset="synthetic", overrides=TINY, skip=["gin"])
    with pytest.raises(ConfigError, match="--skip applies to the model lists"):
        dg_analysis.run_analysis("fig3", tmp_path, dataset="synthetic", overrides=TINY, skip=["pnn"])
    monkeypatch.setitem(dg_analysis.MODEL_LISTS, "table4", [("PNN", "pnn"), ("NOPE-PNN", "nope-pnn")])
    with pytest.raises(ConfigError, match="unknown embedding provider 'nope'"):
        dg_analysis.run_analysis("table4", tmp_path / "t4", dataset="synthetic", seeds=[1], overrides=TINY)
    assert not (tmp_path / "t4" / "runs").exists()  # pnn was not trained first
    # the command prints the registry's error and exits 2
    code = dg_analysis.main(["table4", "--dataset", "synthetic", "--out", str(tmp_path / "t4b"),
                             *[x for s in TINY for x in ("--set", s)]])
    assert code == 2 and "unknown embedding provider 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dg_analysis.main(["table9", "--out", str(tmp_path)])


def test_significance_is_the_exact_paired_wilcoxon_of_the_graph_model():
    from itertools import product

    listed = ["pnn", "dg-pnn", "din", "dg-din", "fm"]
    aucs = {"pnn": [0.80, 0.81, 0.79, 0.80, 0.82], "dg-pnn": [0.82, 0.815, 0.80, 0.83, 0.821],
            "din": [0.80, 0.79, 0.81, 0.80, 0.80], "dg-din": [0.79, 0.81, 0.825, 0.795, 0.812],
            "fm": [0.70, 0.71, 0.72, 0.73, 0.74]}
    res = [{"model": m, "seed": s + 1, "test_auc": a[s]} for m, a in aucs.items() for s in range(5)]

    def brute(d):  # exact one-sided signed-rank p: every sign pattern of the ranks equally likely
        d = np.asarray(d)
        ranks = np.argsort(np.argsort(np.abs(d))) + 1.0
        w = ranks[d > 0].sum()
        stats = [sum(r for r, s in zip(ranks, signs) if s) for signs in product([0, 1], repeat=d.size)]
        return np.mean(np.array(stats) >= w - 1e-9)

    r = dg_analysis.significance(res, "pnn", listed)
    assert r["vs"] == "dg-pnn" and r["p"] == pytest.approx(1 / 32)  # better in all 5 seeds: the smallest p
    r = dg_analysis.significance(res, "din", listed)  # the paired graph model of din is dg-din
    d = np.subtract(aucs["dg-din"], aucs["din"])
    assert r["vs"] == "dg-din" and r["p"] == pytest.approx(brute(d)) and r["p"] > 0.05
    assert dg_analysis.significance(res, "fm", listed)["vs"] == "dg-pnn"  # no dg-fm listed: the table's dg-pnn
    assert dg_analysis.significance(res, "dg-pnn", listed) == {"vs": None, "p": None}
    assert dg_analysis.significance(res[:1] + res[5:6], "pnn", listed)["p"] is None  # one paired seed: no test
