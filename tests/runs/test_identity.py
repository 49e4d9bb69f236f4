"""Run identity: what determines a run's numbers, normalised; the run key names its directory."""
import pytest

from ctrgraph.config import config_from_layers
from ctrgraph.errors import ConfigError
from ctrgraph.runs.identity import run_dir_name, run_identity, run_key


def cfg(**sets):
    return config_from_layers([{"data.name": "ml100k", **{k.replace("__", "."): v for k, v in sets.items()}}])


def test_environment_entries_do_not_change_the_key():
    k = run_key(cfg(model__name="din"))
    assert k.startswith("din-") and len(k) == len("din-") + 8
    assert k == run_key(cfg(model__name="din", train__seed=7, train__num_threads=1, train__progress=False,
                            train__device="cpu", data__data_dir="/somewhere", data__cache=False))
    assert run_dir_name(cfg(model__name="din", train__seed=3)) == f"{k}-seed3"


def test_equal_runs_spelled_differently_share_a_key():
    # the provider prefix or embedding.provider
    assert run_key(cfg(model__name="dg-pnn")) == run_key(cfg(model__name="pnn", embedding__provider="dg"))
    # a preset and the values it sets; parameters equal to their defaults
    assert run_key(cfg(**{"model.name": "pnn", "model.preset": "paper"})) == \
        run_key(cfg(**{"model.name": "pnn", "model.hidden": [400, 400, 400]}))
    assert run_key(cfg(model__name="pnn")) == run_key(cfg(**{"model.name": "pnn", "model.hidden": [256, 128]}))
    assert run_key(cfg(model__name="dg-pnn")) == run_key(cfg(**{"model.name": "dg-pnn",
                                                                "embedding.params.graphs": "all"}))
    assert run_key(cfg(model__name="din")) == run_key(cfg(**{"model.name": "din", "data.params.max_len": 50}))
    # a provider preset and the values it sets (dg's ``paper`` = the divide-and-conquer attribute stage)
    paper = run_key(cfg(**{"model.name": "dg-pnn", "embedding.params.preset": "paper"}))
    assert paper == run_key(cfg(**{"model.name": "dg-pnn", "embedding.params.attr_mode": "field"}))
    assert paper != run_key(cfg(model__name="dg-pnn"))
    assert run_key(cfg(model__name="dg-pnn")) == run_key(cfg(**{"model.name": "dg-pnn", "embedding.params.preset": "paper",
                                                                "embedding.params.attr_mode": "linear"}))
    # train.prior_bias auto = the model's or provider's default (off for pnn, on for dg- and for lr)
    assert run_key(cfg(model__name="pnn")) == run_key(cfg(model__name="pnn", train__prior_bias=False))
    assert run_key(cfg(model__name="dg-pnn")) == run_key(cfg(model__name="dg-pnn", train__prior_bias=True))
    assert run_key(cfg(model__name="lr")) == run_key(cfg(model__name="lr", train__prior_bias=True))


def test_real_changes_change_the_key():
    base = run_key(cfg(model__name="dg-pnn"))
    for sets in ({"embedding.params.graphs": "uv"}, {"embedding.dim": 8}, {"train.lr": 0.01},
                 {"data.name": "ml100k-dgenn"}, {"data.train_fraction": 0.5}, {"train.prior_bias": False},
                 {"model.hidden": [64]}):
        assert run_key(cfg(**{"model.name": "dg-pnn", **sets})) != base, sets
    assert run_key(cfg(model__name="dg-pnn")).startswith("dg-pnn-")
    ident = run_identity(cfg(**{"model.name": "res-din", "embedding.params.g": "att", "train.seed": 3}))
    assert ident["provider_params"] == {"g": "att"} and ident["model"] == "din" and "train.seed" not in ident


def test_unknown_names_and_parameters_are_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        run_key(cfg(model__name="nope"))
    with pytest.raises(ConfigError, match="unknown parameter"):
        run_key(cfg(**{"model.name": "dg-pnn", "embedding.params.grafs": "uv"}))
    with pytest.raises(ConfigError, match="hiden"):
        run_key(cfg(**{"model.name": "pnn", "model.hiden": [8]}))


def test_large_vocabulary_options_keep_default_keys_and_change_their_own():
    """data.hash_buckets and embedding.sparse (docs/large-vocabularies.md): at their defaults, the keys
    of before they existed (pinned); set, another run."""
    assert run_key(cfg()) == "deepfm-3337c871"  # computed at the commit before these options
    assert run_key(cfg(model__name="din", data__name="synthetic")) == "din-3e8a6731"
    assert run_key(cfg(model__name="dg-pnn")) == "dg-pnn-8703919a"
    assert run_key(cfg(**{"data.hash_buckets": {}, "embedding.sparse": False})) == "deepfm-3337c871"
    keys = {run_key(cfg(**sets)) for sets in ({}, {"data.hash_buckets": {"item_id": 1000}},
                                              {"data.hash_buckets": {"item_id": 2000}}, {"embedding.sparse": True})}
    assert len(keys) == 4


def test_graphfm_keys_are_pinned_across_the_change_of_default():
    """GraphFM's default became the paper (issue 17); ``identity_base`` keeps every earlier key: the
    ``official`` preset is the earlier default run, the default the earlier ``preset=paper`` run."""
    gfm = {"model.name": "graphfm"}
    assert run_key(cfg(**gfm, **{"model.preset": "official"})) == "graphfm-19c93e8c"
    assert run_key(cfg(**gfm)) == run_key(cfg(**gfm, **{"model.preset": "paper"})) == "graphfm-101c83eb"
    assert run_key(cfg(**gfm, **{"model.preset": "reference"})) == "graphfm-4a1beffd"
    assert run_key(cfg(**gfm, **{"model.select": "threshold"})) != run_key(cfg(**gfm))
