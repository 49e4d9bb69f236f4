"""The tuning harness (experiments/tuning.py): resumable Optuna studies keyed by the resolved base
configuration and the space, selection on validation only, the chosen configuration over the
paper's seeds, the paper grids declared beside their studies, and clear errors."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
import time

import pytest

from ctrgraph.cli import main
from ctrgraph.errors import ConfigError
from ctrgraph.experiments import core
from ctrgraph.experiments.core import Context, D, Study, V, Variant
from ctrgraph.experiments.studies import STUDIES
from ctrgraph.experiments.tuning import Range, Space, study_key, tune

#: tests that run a search; the declared spaces, the listing and the missing-Optuna error need no Optuna
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason="optuna not installed (pip install 'ctrgraph[tune]')")

TINY = {"train.epochs": 1, "train.progress": False, "train.num_threads": 1, "embedding.dim": 4}
SYN = D("synthetic", "syn", {"n_instances": 1200, "n_users": 50, "n_items": 80, "n_categories": 4,
                             "n_cities": 8, "n_brands": 8, "emit_true_prob": False})


def _space(params=None, **kw) -> Space:
    return Space("toy", "Toy grid", V("LR", "lr"), [SYN], params or {"train.lr": [1e-3, 1e-2, 1e-1]}, **kw)


def _study(space: Space) -> Study:
    return Study("toy", "Toy study", "docs/toy.md", [], defaults=TINY, spaces=[space])


def _ctx(tmp_path, lines=None, **kw) -> Context:
    return Context(tmp_path, log=(lines.append if lines is not None else lambda *a: None), **kw)


def _csv(p):
    with open(p) as f:
        return list(csv.DictReader(f))


@needs_optuna
def test_a_second_call_resumes_the_study_and_trains_nothing_new(tmp_path, monkeypatch):
    trained = []
    real = core.run_experiment
    monkeypatch.setattr(core, "run_experiment",
                        lambda cfg, out, **kw: (trained.append((cfg.train.lr, cfg.train.seed)),
                                                real(cfg, out, **kw))[1])
    study = _study(_space(seeds=(1, 2)))
    r1 = tune(study, "toy", _ctx(tmp_path), trials=2)[0]
    assert r1.new_trials == 2 and len(r1.trials) == 2
    chosen_lr = r1.chosen["overrides"]["train.lr"]
    # 2 trials at seed 1, then the chosen configuration at seed 2 (its seed-1 run is the trial's: reused)
    assert len(trained) == 3 and trained[-1] == (chosen_lr, 2)
    assert [r.status for r in r1.final] == ["reused", "trained"]
    journal = r1.folder / "journal.log"
    assert journal.exists() and (r1.folder / "space.json").exists()

    # the same call again: the study is loaded, no trial and no run is trained
    monkeypatch.setattr(core, "run_experiment", lambda *a, **k: pytest.fail("a finished run was retrained"))
    r2 = tune(study, "toy", _ctx(tmp_path), trials=2)[0]
    assert r2.key == r1.key and r2.folder == r1.folder and r2.new_trials == 0
    assert r2.trials == r1.trials and r2.chosen == r1.chosen
    assert {r.status for r in r2.final} == {"reused"}

    # a larger budget continues the same study: one more trial (the last grid point), nothing else retrained
    trained.clear()
    monkeypatch.setattr(core, "run_experiment",
                        lambda cfg, out, **kw: (trained.append((cfg.train.lr, cfg.train.seed)),
                                                real(cfg, out, **kw))[1])
    r3 = tune(study, "toy", _ctx(tmp_path), trials=5)[0]  # more than the grid: the grid's 3 points
    assert r3.key == r1.key and r3.new_trials == 1 and len(r3.trials) == 3
    assert sorted(t["train.lr"] for t in r3.trials) == [1e-3, 1e-2, 1e-1]
    assert trained[0][1] == 1 and trained[0][0] not in {t["train.lr"] for t in r1.trials}
    # the reports: every trial with its validation value, the chosen configuration's seeds
    rows = _csv(tmp_path / "toy" / "tune-toy.csv")
    assert len(rows) == 3 and sum(r["chosen"] == "yes" for r in rows) == 1
    chosen = _csv(tmp_path / "toy" / "tune-toy-chosen.csv")[0]
    assert chosen["seeds"] == "[1, 2]" and float(chosen["test_auc_mean"]) > 0
    man = json.loads((tmp_path / "reproduce.json").read_text())
    assert [e["name"] for e in man["items"]] == ["tune-toy"]


@needs_optuna
def test_an_interrupted_trial_is_tried_again_first(tmp_path, monkeypatch):
    space = _space({"train.lr": [1e-3, 1e-2]}, seeds=(1,))
    study = _study(space)
    trained = []
    real = core.run_experiment

    def killed(cfg, out, **kw):
        trained.append(cfg.train.lr)
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "run_experiment", killed)
    with pytest.raises(KeyboardInterrupt):
        tune(study, "toy", _ctx(tmp_path), trials=1)
    first = trained[0]
    monkeypatch.setattr(core, "run_experiment",
                        lambda cfg, out, **kw: (trained.append(cfg.train.lr), real(cfg, out, **kw))[1])
    r = tune(study, "toy", _ctx(tmp_path), trials=1)[0]
    assert trained[1] == first and r.new_trials == 1 and r.trials[0]["train.lr"] == first


class _Sealed(dict):
    """A test split's metrics that must not be read while the search is choosing."""

    armed = True

    def __getitem__(self, k):
        if _Sealed.armed:
            pytest.fail(f"test metric {k!r} read before the choice was made")
        return super().__getitem__(k)

    def get(self, k, default=None):
        if _Sealed.armed:
            pytest.fail(f"test metric {k!r} read before the choice was made")
        return super().get(k, default)


@needs_optuna
def test_selection_reads_validation_only_and_reports_test_after_the_choice(tmp_path, monkeypatch):
    # planted: the best test AUC (lr 1e-1) is not the best validation AUC (lr 1e-2)
    valid = {1e-3: 0.70, 1e-2: 0.80, 1e-1: 0.60}
    test = {1e-3: 0.90, 1e-2: 0.65, 1e-1: 0.95}

    def fake(cfg, out, **kw):
        lr, seed = cfg.train.lr, cfg.train.seed
        return {"valid": {"auc": valid[lr], "logloss": 0.5}, "best_epoch": 1, "seconds_per_epoch": 0.1,
                "test": _Sealed(auc=test[lr] + 0.01 * seed, logloss=0.4)}

    def log(line):
        if "chosen on valid" in line:
            _Sealed.armed = False  # the choice is made: the test metrics may now be reported

    monkeypatch.setattr(core, "run_experiment", fake)
    _Sealed.armed = True
    try:
        r = tune(_study(_space(seeds=(1, 2, 3))), "toy", Context(tmp_path, log=log), trials=3)[0]
    finally:
        _Sealed.armed = False
    assert r.chosen["overrides"] == {"train.lr": 1e-2} and r.chosen["valid_auc"] == 0.80
    best_test_trial = max(r.trials, key=lambda t: test[t["train.lr"]])
    assert best_test_trial["trial"] != r.chosen["trial"]
    s = r.summary()
    assert s["test_auc_mean"] == pytest.approx(0.65 + 0.02) and s["test_auc_std"] > 0  # seeds 1-3 of lr 1e-2
    assert [x.seed for x in r.final] == [1, 2, 3]


def test_the_study_key_follows_the_resolved_config_and_the_space(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.defaults = TINY

    def key(space, base_sets=None, sets=(), monitor="auc"):
        c = Context(tmp_path, sets=list(sets), log=lambda *a: None, defaults=TINY)
        base = c.resolve(Variant("LR", {"model.name": "lr", **(base_sets or {})}), SYN, space.tune_seed)
        return study_key(base, space, monitor)

    k = key(_space())
    assert key(_space(), sets=["train.num_threads=2", "train.progress=true"]) == k  # the machine, not the run
    assert key(_space(), {"train.weight_decay": 0.0}) == k  # a default spelled out: the same run
    assert key(_space(seeds=(1, 2, 3, 4, 5), trials=7)) == k  # budget and final seeds: the same study
    assert key(_space(), {"embedding.dim": 8}) != k  # another base configuration
    assert key(_space(), sets=["train.epochs=2"]) != k
    assert key(_space({"train.lr": [1e-3, 1e-2]})) != k  # another space
    assert key(_space({"train.lr": Range(1e-3, 1e-1, log=True)})) != k
    assert key(_space(tune_seed=2)) != k
    assert key(_space(), monitor="logloss") != k


def test_tuning_without_optuna_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ctrgraph\[tune\]'"):
        tune(_study(_space()), "toy", _ctx(tmp_path), trials=1)
    assert main(["tune", "dg-enn", "dg-enn", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "ctrgraph[tune]" in capsys.readouterr().err


@needs_optuna
def test_bad_spaces_fail_with_the_key_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "run_experiment", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError, match="train.lrr"):
        tune(_study(_space({"train.lrr": [0.1]})), "toy", _ctx(tmp_path), trials=1)
    with pytest.raises(ConfigError, match="train.lr"):
        tune(_study(_space({"train.lr": [0.1, -1.0]})), "toy", _ctx(tmp_path), trials=1)
    with pytest.raises(ConfigError, match="sampler 'grid'"):
        _space({"train.lr": Range(1e-3, 1e-1)}, sampler="grid")
    with pytest.raises(ConfigError, match="non-empty list"):
        _space({"train.lr": 0.1})
    with pytest.raises(ConfigError, match="no tuning space 'nope'"):
        _study(_space()).space("nope")


def test_the_papers_grids_are_declared_and_resolve(tmp_path):
    spaces = {(st.paper, sp.name): sp for st in STUDIES.values() for sp in st.spaces}
    dg = spaces[("dg-enn", "dg-enn")]
    assert dg.grid_size() == 4 * 6 * 10 * 4 and dg.seeds == (1, 2, 3, 4, 5) and dg.resolved_sampler() == "grid"
    assert spaces[("res-embedding", "din-gcn")].resolved_sampler() == "tpe"
    assert spaces[("res-embedding", "din-gcn")].seeds == (1, 2, 3, 4, 5)
    gfm = spaces[("graphfm", "graphfm")]
    assert all(len(c["model.m"]) == c["model.layers"] for c in gfm.params["layers, m"])
    for (paper, _), sp in spaces.items():  # every value of every axis is a valid configuration of the row
        ctx = Context(tmp_path, log=lambda *a: None, defaults=STUDIES[paper].defaults)
        for d in sp.datasets:
            for point in sp.points():
                ctx.resolve(Variant(sp.base.label, {**sp.base.set, **point}), d, sp.tune_seed)  # computes the run key
    # DG-ENN's grid point at the paper-mode values is the paper-mode tables' own run (reused, not retrained)
    from ctrgraph.experiments.studies import dg_enn

    ctx = Context(tmp_path, log=lambda *a: None, defaults=dg_enn.STUDY.defaults)
    point = {"train.lr": 1e-3, "train.weight_decay": 0.0, "model.dropout": 0.0, "embedding.params.layers": 2}
    trial = ctx.resolve(Variant("trial", {**dg.base.set, **point}), dg_enn.PAPER, 1)
    table3 = [r for r in dg_enn.STUDY.item("table3").runs(ctx)
              if r.label == "DG-PNN · prior bias" and r.dataset == "ml100k-dgenn" and r.seed == 1]
    assert [r.dir for r in table3] == [trial.dir]
    # joint axes round-trip through Optuna's storage as JSON text
    enc = gfm.encoded_grid()["layers, m"]
    assert gfm.decode({"layers, m": enc[-1]}) == gfm.params["layers, m"][-1]


def test_cli_lists_the_spaces(capsys):
    assert main(["tune", "--list"]) == 0
    out = capsys.readouterr().out
    assert "dg-enn dg-enn" in out and "960-point grid" in out and "res-embedding din-gcn" in out
    assert main(["tune", "dg-enn", "nope"]) == 2


def _fake_metrics(valid_of):
    """A run_experiment that trains nothing: validation AUC ``valid_of(cfg)``, test AUC 0.5."""

    def fake(cfg, out, **kw):
        return {"valid": {"auc": valid_of(cfg), "logloss": 0.5}, "test": {"auc": 0.5, "logloss": 0.7},
                "best_epoch": 1, "seconds_per_epoch": 0.01}

    return fake


@needs_optuna
def test_ranges_are_searched_by_tpe_within_their_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "run_experiment", _fake_metrics(lambda cfg: 1 - abs(cfg.train.lr - 0.01)))
    space = _space({"train.lr": Range(1e-4, 1e-1, log=True), "train.patience": Range(1, 4, integer=True)})
    assert space.resolved_sampler() == "tpe" and space.budget(None) == 20
    r = tune(_study(space), "toy", _ctx(tmp_path), trials=6, final=False)[0]
    assert len(r.trials) == 6 and not r.final
    assert all(1e-4 <= t["train.lr"] <= 1e-1 and t["train.patience"] in (1, 2, 3, 4) for t in r.trials)
    assert isinstance(r.trials[0]["train.patience"], int)
    best = max(r.trials, key=lambda t: t["valid_auc"])
    assert r.chosen["trial"] == best["trial"]


@needs_optuna
def test_the_timeout_stops_the_search_between_trials(tmp_path, monkeypatch):
    def slow(cfg):
        time.sleep(0.3)
        return 0.7

    monkeypatch.setattr(core, "run_experiment", _fake_metrics(slow))
    r = tune(_study(_space()), "toy", _ctx(tmp_path), trials=3, timeout_min=0.1 / 60, final=False)[0]
    assert r.new_trials == 1 and len(r.trials) == 1  # the first trial ran past the deadline: no second one


@needs_optuna
def test_cli_tunes_a_papers_space(tmp_path, monkeypatch, capsys):
    # GraphFM's grid through the command line, with runs that train nothing (no data set is loaded)
    monkeypatch.setattr(core.RunStore, "data", lambda self, cfg: None)
    monkeypatch.setattr(core, "run_experiment", _fake_metrics(lambda cfg: 0.6 + 0.01 * len(cfg.model.params["m"])))
    args = ["tune", "graphfm", "graphfm", "--trials", "3", "--seeds", "1,2", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trials" in out and "the chosen configuration over the seeds" in out
    rows = _csv(tmp_path / "graphfm" / "tune-graphfm.csv")
    assert len(rows) == 3 and all(len(json.loads(r["model.m"])) == int(r["model.layers"]) for r in rows)
    chosen = _csv(tmp_path / "graphfm" / "tune-graphfm-chosen.csv")[0]
    assert chosen["seeds"] == "[1, 2]"
    assert "tune-graphfm" in (tmp_path / "report.html").read_text()
    assert main(args) == 0 and "nothing to run" in capsys.readouterr().out


@needs_optuna
def test_a_yaml_space_over_ones_own_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(core.RunStore, "data", lambda self, cfg: None)
    seen = []

    def valid(cfg):
        seen.append((cfg.data.name, cfg.model.name, cfg.embedding.dim, cfg.train.lr))
        return 0.9 - abs(cfg.train.lr - 0.01) - cfg.model.params.get("dropout", 0.0) / 10

    monkeypatch.setattr(core, "run_experiment", _fake_metrics(valid))
    (tmp_path / "base.yaml").write_text("data: {name: synthetic}\nmodel: {name: dnn}\nembedding: {dim: 6}\n")
    (tmp_path / "space.yaml").write_text(
        "name: lr-dropout\nseeds: [1, 2]\nparams:\n  train.lr: [1e-3, 0.01]\n  model.dropout: [0.0, 0.5]\n")
    out = tmp_path / "out"
    assert main(["tune", "--config", str(tmp_path / "base.yaml"), "--space-file", str(tmp_path / "space.yaml"),
                 "--set", "train.epochs=1", "--out", str(out)]) == 0
    # the 4 grid points, then seeds 1 and 2 (the fake writes no run directory: seed 1 is not reused here)
    assert {x[:3] for x in seen} == {("synthetic", "dnn", 6)} and len(seen) == 4 + 2
    trials = _csv(out / "config" / "tune-lr-dropout.csv")
    assert {r["train.lr"] for r in trials} == {"0.001", "0.01"}  # YAML's text "1e-3" read as the number
    chosen = _csv(out / "config" / "tune-lr-dropout-chosen.csv")[0]
    assert chosen["overrides"] == "train.lr=0.01, model.dropout=0.0" and chosen["seeds"] == "[1, 2]"
    assert "lr-dropout" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("params:\n  train.lr: {low: 0.1}\n")
    assert main(["tune", "--space-file", str(tmp_path / "bad.yaml"), "--out", str(out)]) == 2
    assert "params.train.lr: a range is" in capsys.readouterr().err
    (tmp_path / "bad2.yaml").write_text("params: {train.lr: [0.1]}\nbudget: 3\n")
    assert main(["tune", "--space-file", str(tmp_path / "bad2.yaml"), "--out", str(out)]) == 2
    assert "unknown key(s) ['budget']" in capsys.readouterr().err
    assert main(["tune", "dg-enn", "dg-enn", "--model", "fm"]) == 2
