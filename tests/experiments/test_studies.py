"""The declared studies of the three landed papers: every item resolves to valid run configurations
(model names, provider and model parameters, recipes) without data, the paper's rows are there, and
tables that share a configuration share its run directory."""
from __future__ import annotations

import pytest

from ctrgraph.cli import main
from ctrgraph.experiments.core import Context, plan
from ctrgraph.experiments.studies import STUDIES


@pytest.mark.parametrize("paper", sorted(STUDIES))
def test_every_item_resolves(paper, tmp_path):
    study = STUDIES[paper]
    ctx = Context(tmp_path, log=lambda *a: None, defaults=study.defaults)
    per, todo = plan(study.items, ctx)
    assert todo and len({r.dir for r in todo}) == len(todo)
    for it in study.items:
        assert it.title and (per[it.name] or it.name == "fig1")


def _dirs(paper, item, tmp_path, **kw):
    ctx = Context(tmp_path, log=lambda *a: None, **kw)
    return {(r.label, r.dataset, r.seed): r.dir for r in STUDIES[paper].item(item).runs(ctx)}


def test_paper_rows_and_shared_runs(tmp_path):
    t2 = _dirs("dg-enn", "table2", tmp_path)
    assert [k[0] for k in t2 if k[2] == 1] == ["LR", "FM", "AutoInt+", "DeepFM", "PNN", "DIN", "DIEN", "GIN", "FiGNN",
                                                "DG-ENN"]
    assert {k[2] for k in t2} == {1, 2, 3, 4, 5}  # the paper's 5 runs
    t3 = _dirs("dg-enn", "table3", tmp_path)
    t4 = _dirs("dg-enn", "table4", tmp_path)
    t5 = _dirs("dg-enn", "table5", tmp_path)
    t6 = _dirs("dg-enn", "table6", tmp_path)
    assert t2[("PNN", "ml100k", 1)] == t3[("PNN", "ml100k", 1)] == t4[("PNN", "ml100k", 1)] == t5[("PNN", "ml100k", 1)]
    assert t2[("DG-ENN", "ml100k", 1)] == t3[("DG-PNN", "ml100k", 1)] == t5[("DG (all graphs)", "ml100k", 1)] \
        == t6[("DG-PNN", "ml100k", 1)]
    assert t3[("PNN", "ml100k", 1)] != t3[("PNN", "ml100k-dgenn", 1)]
    r3 = _dirs("res-embedding", "table3", tmp_path)
    tsne = _dirs("res-embedding", "tsne", tmp_path)
    assert r3[("DIN", "ml100k", 1)] == tsne[("DIN (plain)", "ml100k", 1)]
    assert r3[("DIN+GCN", "ml100k", 1)] == tsne[("DIN+GCN (res)", "ml100k", 1)]
    frac = _dirs("res-embedding", "fraction", tmp_path)
    assert len({d for d in frac.values()}) == 18
    gt2 = _dirs("graphfm", "table2", tmp_path)
    abl = _dirs("graphfm", "ablation", tmp_path)
    assert gt2[("GraphFM", "ml100k", 1)] == abl[("GraphFM", "ml100k", 1)]
    assert len(_dirs("graphfm", "sweep", tmp_path, seeds=[1])) == 20


def test_reproduce_command_lists_and_refuses_unknown_names(capsys, tmp_path):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for paper in STUDIES:
        assert f"{paper}:" in out
    assert "table5" in out and "tsne" in out and "sweep" in out
    assert main(["reproduce", "dg-enn", "table9", "--out", str(tmp_path)]) == 2
    assert "has no table or figure 'table9'" in capsys.readouterr().err
    assert main(["reproduce", "nopaper"]) == 2
    assert "unknown paper 'nopaper'" in capsys.readouterr().err
    assert main(["reproduce", "dg-enn", "table5", "--dry-run", "--seeds", "1", "--datasets", "ml100k",
                 "--out", str(tmp_path)]) == 0
    plan_lines = capsys.readouterr().out.strip().splitlines()
    assert len(plan_lines) == 5 and all("(to train)" in line for line in plan_lines)
    assert not (tmp_path / "runs").exists()
