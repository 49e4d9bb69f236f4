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
    res = STUDIES["res-embedding"]
    r3 = _dirs("res-embedding", "table3", tmp_path, defaults=res.defaults)
    tsne = _dirs("res-embedding", "tsne", tmp_path, defaults=res.defaults)
    for form, method in (("ORI", "DIN"), ("AVG", "DIN+AVG"), ("GCN", "DIN+GCN"), ("ATT", "DIN+ATT")):
        assert r3[(method, "ml20m", 1)] == tsne[(f"{form}: {method}", "ml20m", 1)]  # Fig. 7: all four panels
    env = _dirs("res-embedding", "envelope", tmp_path, defaults=res.defaults)
    assert env[("DIN+Proto", "ml20m", 2)] == r3[("DIN+Proto", "ml20m", 2)]
    frac = _dirs("res-embedding", "fraction", tmp_path, defaults=res.defaults)
    assert len({d for d in frac.values()}) == 9 * 4 * 3  # Fig. 6: ORI/AVG/GCN/ATT x 9 fractions x 3 data sets
    assert {k[0].rsplit(" ", 1)[0] for k in frac} == {"DIN ORI", "DIN AVG", "DIN GCN", "DIN ATT"}
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


def test_res_embedding_modes(tmp_path):
    """Paper mode = Sec. 5.1's settings and Algorithm 1 over every sample; the [default] rows keep the
    run keys of the library's default configurations; every row the same training rules."""
    from ctrgraph.experiments.core import V
    from ctrgraph.experiments.studies.res_embedding import ML100K

    study = STUDIES["res-embedding"]
    ctx = Context(tmp_path, log=lambda *a: None, defaults=study.defaults)
    runs = {(r.label, r.dataset, r.seed): r for r in study.item("table3").runs(ctx)}
    assert {k[2] for k in runs} == {1, 2, 3, 4, 5}  # the paper's five repeats
    labels = {k[0] for k in runs}
    for net in ("MLP", "PNN", "DIN"):
        for v in ("", "+R", "+R(res)", "+Proto", "+AVG", "+GCN", "+ATT", "+Skip-gram", "+node2vec", "+sms"):
            assert net + v in labels and f"{net}{v} [default]" in labels
    paper, default = runs[("DIN+GCN", "ml100k", 1)].cfg, runs[("DIN+GCN [default]", "ml100k", 1)].cfg
    assert (paper.embedding.dim, paper.train.lr, paper.train.lr_decay, paper.train.batch_size) == (18, 0.1, 0.9, 128)
    assert paper.embedding.params["count_over"] == "samples" and "count_over" not in default.embedding.params
    assert (default.embedding.dim, default.train.lr, default.train.batch_size) == (16, 1e-3, 1024)
    for (label, ds, seed), r in runs.items():  # the symmetric rule: no row starts at the prior bias
        assert r.cfg.train.prior_bias is False and r.cfg.train.patience == 2 and r.cfg.embedding.init_std == 1e-4
    plain = Context(tmp_path, log=lambda *a: None)  # a default configuration, as before the modes
    for label, model, sets in (("DIN [default]", "din", {}),
                               ("DIN+GCN [default]", "res-din", {"embedding.params.g": "gcn"}),
                               ("MLP+R(res) [default]", "res-dnn", {"model.preset": "res_mlp",
                                                                    "embedding.params.graph": False})):
        assert runs[(label, "ml100k", 1)].dir == plain.resolve(V("x", model, sets), ML100K, 1).dir


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


def test_graphfm_modes_rows_and_rule(tmp_path):
    """Table 2 on Criteo, Avazu, ML-1M and ml100k: the paper's 14 baselines and GraphFM in paper mode and
    default mode ('· default'), seeds 1-3; paper-mode GraphFM is the paper's model with §5.1.2's m, the
    default row is the official code's aggregation and keeps the earlier default run's key; one rule
    (output bias 0) for every row; the ablations and figures run in paper mode."""
    from ctrgraph.experiments.studies.graphfm import PAPER_M

    rows = ["LR", "FM", "AFM", "AFN", "FmFM", "NFM", "HOFM", "DeepCrossing", "CrossNet", "xDeepFM", "DCNV2",
            "AutoInt", "Fi-GNN", "InterHAt", "GraphFM"]
    study = STUDIES["graphfm"]
    for item, data in (("table2", ["ml100k"]), ("table2-criteo", ["criteo-sample"]), ("table2-avazu", ["avazu"]),
                       ("table2-ml1m", ["ml1m", "ml1m-100k"])):
        ctx = Context(tmp_path, log=lambda *a: None)
        runs = {(r.label, r.dataset, r.seed): r for r in study.item(item).runs(ctx)}
        assert {k[2] for k in runs} == {1, 2, 3} and sorted({k[1] for k in runs}) == sorted(data)
        assert [k[0] for k in runs if k[1:] == (data[0], 1)] == rows + [r + " · default" for r in rows]
        for (label, ds, _), r in runs.items():
            assert r.cfg.train.prior_bias is False, (item, label)  # the one rule
            assert r.cfg.embedding.dim == 16
        paper, default = runs[("GraphFM", data[0], 1)].cfg.model.params, runs[("GraphFM · default", data[0], 1)].cfg.model.params
        assert "preset" not in paper and paper.get("m") == PAPER_M.get(data[0])
        assert default == {"preset": "official"}
        assert runs[("AutoInt", data[0], 1)].dir == runs[("AutoInt · default", data[0], 1)].dir  # same settings
        assert runs[("GraphFM", data[0], 1)].dir != runs[("GraphFM · default", data[0], 1)].dir
    t2 = _dirs("graphfm", "table2", tmp_path)
    assert t2[("GraphFM · default", "ml100k", 1)].name == "graphfm-19c93e8c-seed1"  # the earlier default run
    assert t2[("GraphFM", "ml100k", 1)].name == "graphfm-101c83eb-seed1"  # the earlier preset=paper run
    abl, sel = _dirs("graphfm", "ablation", tmp_path), _dirs("graphfm", "selection", tmp_path)
    assert abl[("GraphFM", "ml100k", 1)] == t2[("GraphFM", "ml100k", 1)] == sel[("top-m (Eq. 8)", "ml100k", 1)]
    assert abl[("GraphFM · default", "ml100k", 1)] == t2[("GraphFM · default", "ml100k", 1)]
    assert len({d for d in sel.values()}) == 4 * 3
