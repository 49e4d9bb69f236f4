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
    assert len(plan_lines) == 5 and all("(to train)" in line for line in plan_lines)
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
