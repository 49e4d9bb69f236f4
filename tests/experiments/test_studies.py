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
    rows = ["LR", "FM", "AutoInt+", "DeepFM", "PNN", "DIN", "DIEN", "GIN", "FiGNN", "DG-ENN"]
    assert [k[0] for k in t2 if k[2] == 1 and k[1] == "ml100k"] == rows + [r + " · default" for r in rows]
    assert {k[2] for k in t2} == {1, 2, 3, 4, 5}  # the paper's 5 runs
    assert {k[1] for k in t2} == {"ml100k", "alimama"}
    t3 = _dirs("dg-enn", "table3", tmp_path)
    t4 = _dirs("dg-enn", "table4", tmp_path)
    t5 = _dirs("dg-enn", "table5", tmp_path)
    t6 = _dirs("dg-enn", "table6", tmp_path)
    assert t2[("PNN", "ml100k", 1)] == t3[("PNN · prior bias", "ml100k", 1)] == t4[("PNN", "ml100k", 1)] \
        == t5[("PNN", "ml100k", 1)] == t6[("PNN", "ml100k", 1)]
    assert t2[("DG-ENN", "ml100k", 1)] == t3[("DG-PNN · prior bias", "ml100k", 1)] \
        == t5[("DG (all graphs)", "ml100k", 1)] == t6[("DG-PNN", "ml100k", 1)]
    assert t2[("DG-ENN · default", "ml100k", 1)] == t5[("DG-PNN · default", "ml100k", 1)]
    assert t3[("PNN · prior bias", "ml100k", 1)] != t3[("PNN · prior bias", "ml100k-dgenn", 1)]
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
    assert len(plan_lines) == 7 and all("(to train)" in line for line in plan_lines)  # 5 paper rows + 2 default
    assert not (tmp_path / "runs").exists()


def _cfgs(item, tmp_path):
    ctx = Context(tmp_path, log=lambda *a: None, seeds=[1])
    return {(r.label, r.dataset): r.cfg for r in STUDIES["dg-enn"].item(item).runs(ctx)}


def test_dg_enn_rows_share_one_rule_and_one_mode(tmp_path):
    """Every comparison row states the prior output bias (one value per rule tag, the same for base
    and dg rows); paper-mode rows have §5.1.5's settings and dg rows the paper preset; the default
    rows are the historic runs (the keys of the configurations the study declared before)."""
    from ctrgraph.config import config_from_layers
    from ctrgraph.runs.identity import run_key

    for item in ("table2", "table3", "table4", "table5", "fig3", "fig4", "fig5", "layers"):
        cfgs = _cfgs(item, tmp_path)
        for (label, _), cfg in cfgs.items():
            assert cfg.train.prior_bias is (not label.endswith("zero bias")), (item, label)
            default = " · default" in label
            assert (cfg.embedding.dim, cfg.train.batch_size) == ((16, 1024) if default else (10, 2000)), (item, label)
            if cfg.model.name.startswith("dg-"):
                assert cfg.embedding.params.get("preset") == (None if default else "paper"), (item, label)
            if not default and cfg.model.name in ("pnn", "dg-pnn", "din", "dg-din", "deepfm"):
                assert cfg.model.params["hidden"] == [400, 400, 400], (item, label)
    t3 = _cfgs("table3", tmp_path)
    for model, label in (("pnn", "PNN"), ("dg-pnn", "DG-PNN"), ("din", "DIN"), ("dg-din", "DG-DIN")):
        plain = config_from_layers([{"data.name": "ml100k", "model.name": model}])
        own = run_key(plain)  # the historic rows: base models without, dg models with the prior bias
        pb = "prior bias" if model.startswith("dg-") else "zero bias"
        assert run_key(t3[(f"{label} · default · {pb}", "ml100k")]) == own
        other = "zero bias" if pb == "prior bias" else "prior bias"
        assert run_key(t3[(f"{label} · default · {other}", "ml100k")]) != own


def test_paper_config_file_is_the_studys_paper_mode(tmp_path):
    from pathlib import Path

    from ctrgraph.config import load_config
    from ctrgraph.runs.identity import run_key

    yaml = Path(__file__).resolve().parents[2] / "configs" / "dg-enn-paper.yaml"
    cfg = load_config(yaml, ["data.name=ml100k"])
    assert run_key(cfg) == run_key(_cfgs("table3", tmp_path)[("DG-PNN · prior bias", "ml100k")])
