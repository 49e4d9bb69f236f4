"""The experiments core on tiny synthetic data (one epoch): tables from run directories, one run
directory per configuration shared by every table that asks for it, reuse of finished runs,
resume after an interruption, the report files, and clear errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ctrgraph.errors import ConfigError
from ctrgraph.experiments import core
from ctrgraph.experiments.core import Context, D, Study, V, run_study
from ctrgraph.experiments.items import (
    TSNE,
    Buckets,
    CategorySimilarity,
    DataStats,
    Explain,
    InterestCase,
    Plot,
    Table,
    at_best_epoch,
)

TINY = {"train.epochs": 1, "train.progress": False, "train.num_threads": 1, "embedding.dim": 4}
SYN = D("synthetic", "syn", {"n_instances": 1500, "n_users": 60, "n_items": 100, "n_categories": 4,
                             "n_cities": 10, "n_brands": 10, "emit_true_prob": False})


def _csv(p):
    with open(p) as f:
        return list(csv.DictReader(f))


def _quiet(tmp_path, **kw):
    return Context(tmp_path, log=lambda *a: None, **kw)


def _study(*items):
    return Study("toy", "Toy study", "docs/toy.md", list(items), defaults=TINY)


def test_two_tables_sharing_a_configuration_share_its_run_directory(tmp_path, monkeypatch):
    a = Table("a", "A", [V("PNN", "pnn", vs="DG-PNN"), V("DG-PNN", "dg-pnn")], [SYN], seeds=(1, 2), base="PNN")
    # the same plain PNN under another label and spelled with its default tower; and the DG row with its
    # default graphs written out: the same resolved configurations as table a's
    b = Table("b", "B", [V("base network", "pnn", {"model.hidden": [256, 128]}),
                         V("DG all", "pnn", {"embedding.provider": "dg", "embedding.params.graphs": "all"})],
              [SYN], seeds=(1, 2))
    trained = []
    real = core.run_experiment
    monkeypatch.setattr(core, "run_experiment", lambda cfg, out, **kw: (trained.append(out), real(cfg, out, **kw))[1])
    ctx = _quiet(tmp_path)
    run_study(_study(a, b), None, ctx)
    assert len(trained) == 4  # 2 configurations x 2 seeds, not 8
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 4 and len({r.rsplit("-seed", 1)[0] for r in runs}) == 2
    ta, tb = _csv(tmp_path / "toy" / "a.csv"), _csv(tmp_path / "toy" / "b.csv")
    assert [r["run_key"] for r in ta] == [r["run_key"] for r in tb]
    assert [r["test_auc_mean"] for r in ta] == [r["test_auc_mean"] for r in tb]
    # what the table reports is computed from the runs: mean, RelaImpr against the base row, the Wilcoxon p
    aucs = {}
    for r in runs:
        m = json.loads((tmp_path / "runs" / r / "metrics.json").read_text())
        aucs.setdefault(r.split("-seed")[0], []).append(m["test"]["auc"])
    pnn, dg = (np.mean(aucs[k]) for k in sorted(aucs, key=lambda k: k.startswith("dg")))
    assert float(ta[0]["test_auc_mean"]) == pytest.approx(pnn) and float(ta[1]["test_auc_mean"]) == pytest.approx(dg)
    assert float(ta[1]["relaimpr_pct"]) == pytest.approx(((dg - 0.5) / (pnn - 0.5) - 1) * 100)
    md = (tmp_path / "toy" / "a.md").read_text()
    assert "DG-PNN: " in md and "Wilcoxon" in md  # 2 seeds: p is 0.25 or 0.75 (or n/a on a tie)
    # reproduced again: every run is reused, nothing trains
    monkeypatch.setattr(core, "run_experiment", lambda *a, **k: pytest.fail("a finished run was retrained"))
    entries = run_study(_study(a, b), ["b"], _quiet(tmp_path))
    assert {r["status"] for r in entries[0]["runs"]} == {"reused"}
    man = json.loads((tmp_path / "reproduce.json").read_text())
    assert [(e["paper"], e["name"]) for e in man["items"]] == [("toy", "a"), ("toy", "b")]
    assert set(man["configs"]) == {r.rsplit("-seed", 1)[0] for r in runs}
    assert (tmp_path / "report.html").stat().st_size > 1000


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    t = Table("t", "T", [V("FM", "fm")], [SYN], seeds=(1,))
    sets = ["train.epochs=3", "train.patience=0"]
    run_study(_study(t), None, _quiet(tmp_path / "full", sets=sets))
    from ctrgraph.train.run_files import RunFiles

    real_save, calls = RunFiles.write_torch, []

    def save_then_die(self, rel, obj):  # killed right after the first epoch's last.pt
        real_save(self, rel, obj)
        if rel == "last.pt":
            calls.append(rel)
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFiles, "write_torch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_study(_study(t), None, _quiet(tmp_path / "cut", sets=sets))
    monkeypatch.setattr(RunFiles, "write_torch", real_save)
    (run,) = (tmp_path / "cut" / "runs").iterdir()
    assert (run / "last.pt").exists() and not (run / "metrics.json").exists()
    entries = run_study(_study(t), None, _quiet(tmp_path / "cut", sets=sets))
    assert entries[0]["runs"][0]["status"] == "resumed" and len(calls) == 1
    full = _csv(tmp_path / "full" / "toy" / "t.csv")[0]
    cut = _csv(tmp_path / "cut" / "toy" / "t.csv")[0]
    assert cut["test_auc_mean"] == full["test_auc_mean"] and cut["run_key"] == full["run_key"]


def test_every_item_kind_writes_its_outputs(tmp_path):
    syn_truth = D("synthetic", "syn", dict(SYN.set["data.params"]))
    items = [
        Table("grid", "grid", [V(f"res l={lam}", "res-din", {"embedding.params.lam": lam}, keys={"lam": lam, "k": k})
                               for lam in (0.0, 0.1) for k in (1,)], [SYN], seeds=(1,),
              extra=(at_best_epoch("res_ratio"),),
              plots=(Plot("line", x="lam"), Plot("heatmap", rows="lam", cols="k"), Plot("bar"))),
        Buckets("fig6", "fig6", [(V("PNN", "pnn"), V("DG-PNN", "dg-pnn"))], [syn_truth], by="hist", edges=(4,),
                seeds=(1, 2), bootstrap=20, truth=True),
        Buckets("table6", "table6", [(V("PNN", "pnn"), V("DG-PNN", "dg-pnn"))], [SYN], by="feature_frequency",
                fields=("user_id", "brand"), edges=(5, 20), seeds=(1,), plot=False),
        TSNE("tsne", "tsne", [V("DIN", "din"), V("Res-DIN", "res-din")], SYN, n_items=40, iters=50),
        DataStats("fig1", "fig1", SYN, fields=("item_id", "city")),
        Explain("fig4", "fig4", V("GraphFM", "graphfm"), SYN, rows=(0, 3)),
        InterestCase("routes", "routes", V("DemiNet", "deminet", {"model.interests": 3}), SYN, what="tsne", n_items=30),
        InterestCase("conf", "conf", V("DemiNet", "deminet", {"model.interests": 3}), SYN, what="confidence",
                     n_items=30),
        CategorySimilarity("sim", "sim", [V("EGIN", "egin"), V("DNN", "dnn")], SYN, category="category_id",
                           max_items=60, pairs=2, seeds=(1, 2)),
    ]
    run_study(_study(*items), None, _quiet(tmp_path))
    d = tmp_path / "toy"
    grid = _csv(d / "grid.csv")
    assert [float(r["lam"]) for r in grid] == [0.0, 0.1] and all(float(r["res_ratio"]) > 0 for r in grid)
    f6 = _csv(d / "fig6.csv")
    assert [r["bucket"] for r in f6] == ["0-3", ">=4", "all test rows"]
    assert all(0.5 < float(r["bayes_eauc"]) < 1 for r in f6) and "graph_eauc" in f6[0]
    boot = _csv(d / "fig6-bootstrap.csv")
    assert boot[-1]["what"] == "0-3 minus >=4" and int(boot[0]["B"]) == 20
    t6 = _csv(d / "table6.csv")
    assert {r["field"] for r in t6} >= {"user_id", "brand", "all"}
    assert len(_csv(d / "tsne.csv")) == 2 and len(_csv(d / "fig1.csv")) > 4 and len(_csv(d / "fig4.csv")) > 0
    for png in ("grid.png", "fig6.png", "tsne.png", "fig1.png", "fig4-rows/explain_row3.png"):
        assert (d / png).stat().st_size > 2000, png
    assert not (d / "table6.png").exists()
    routes, conf = _csv(d / "routes.csv"), _csv(d / "conf.csv")
    assert [r["route"] for r in routes] == ["1", "2", "3", "all"] and sum(int(r["candidates"]) for r in conf) == 30
    for r in conf:  # the mean confidences of a category's candidates are a distribution over the experts
        assert sum(float(r[f"expert_{e}"]) for e in (1, 2, 3)) == pytest.approx(1.0)
    sim = _csv(d / "sim.csv")
    assert [r["variant"] for r in sim] == ["EGIN", "DNN"] and all(r["seeds"] == "2" and " ± " in r["margin"] for r in sim)
    assert (d / "sim.png").stat().st_size > 2000
    html = (tmp_path / "report.html").read_text()
    assert html.count('class="item"') == 9 and html.count("data:image/png;base64,") >= 9


def test_bad_selections_are_clear_errors(tmp_path):
    t = Table("t", "T", [V("FM", "fm")], [SYN], seeds=(1,))
    with pytest.raises(ConfigError, match="has no table or figure 'nope'; it has: t"):
        run_study(_study(t), ["nope"], _quiet(tmp_path))
    with pytest.raises(ConfigError, match=r"--only \['LR'\] selects nothing in t \(selected: \['FM'\]\)"):
        run_study(_study(t), None, _quiet(tmp_path, only=["FM", "LR"]))
    with pytest.raises(ConfigError, match="--datasets"):
        run_study(_study(t), None, _quiet(tmp_path, datasets=["ml100k"]))
    # a label is matched exactly too (labels may hold shell-pattern characters)
    g = Table("g", "G", [V("m=[3,1]", "fm"), V("m=[3,2]", "lr")], [SYN])
    assert [r.label for r in g.runs(_quiet(tmp_path, only=["m=[3,1]"], seeds=[1]))] == ["m=[3,1]"]
    with pytest.raises(ConfigError, match="unknown model 'fmm'"):
        run_study(_study(Table("u", "U", [V("X", "fmm")], [SYN])), None, _quiet(tmp_path))
    assert not (tmp_path / "runs").exists()  # names are resolved before anything trains
    with pytest.raises(ConfigError, match="duplicate variant labels"):
        run_study(_study(Table("d", "D", [V("X", "fm"), V("X", "lr")], [SYN])), None, _quiet(tmp_path))
    with pytest.raises(ConfigError, match="one bucket per row"):
        Buckets("b", "B", [], [SYN], by="feature_frequency", bootstrap=10)


def test_table6_chosen_values_equal_a_brute_force_selection():
    """``by="values"`` (DG-ENN Table 6): per field the ``per_field`` test values with a train frequency
    in ``freq`` and the most test rows (ties: the lower id), one bucket of test rows each."""
    from ctrgraph.registry import load_dataset

    data = load_dataset("synthetic", dict(SYN.set["data.params"]), cache=False)
    b = Buckets("t6", "t6", [], [SYN], by="values", fields=("city", "brand"), freq=(45, 110), per_field=2)
    rows, groups, ng, names = b._groups(data)
    tr, te = data.split("train"), data.split("test")
    want = []
    for f in ("city", "brand"):
        train = [int(x) for x in tr[f]]
        test = [int(x) for x in te[f]]
        cands = sorted({v for v in test if v >= 2 and 45 <= train.count(v) <= 110},
                       key=lambda v: (-test.count(v), v))[:2]
        want += [(f, v, train.count(v), [i for i, x in enumerate(test) if x == v]) for v in cands]
    assert ng == len(names) == len(want) == 4
    for g, (f, v, k, idx) in enumerate(want):
        assert names[g][0] == f and names[g][1].endswith(f"(train freq {k})")
        assert sorted(rows[groups == g].tolist()) == idx
    with pytest.raises(ConfigError, match="no test value"):
        Buckets("t6", "t6", [], [SYN], by="values", fields=("city",), freq=(10**6, 10**7))._groups(data)
