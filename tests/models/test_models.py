"""Every model learns a planted signal; padding never changes a prediction; configs are validated."""
import numpy as np
import pytest
import torch
from conftest import assert_padding_invariant

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.registry import MODELS, build_model
from ctrgraph.train.trainer import Trainer, predict_logits

BASELINES = ["lr", "fm", "dnn", "deepfm", "pnn", "din"]


@pytest.mark.parametrize("name", BASELINES)
def test_model_learns_planted_signal(planted, name):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    model = build_model(name, spec, {}, dim=8, init_std=0.01)
    cfg = TrainConfig(epochs=20, batch_size=256, lr=1e-2, patience=3, progress=False)
    res = Trainer(cfg).fit(model, planted)
    # the planted rule (user group == item group) gives a Bayes AUC around 0.8; chance is 0.5
    print(name, res["test"])
    assert res["test"]["auc"] > (0.6 if name == "lr" else 0.7), res["test"]


@pytest.mark.parametrize("name", BASELINES)
def test_padding_never_changes_a_prediction(planted, name):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    model = build_model(name, spec, {}, dim=8)
    model.train()
    with torch.no_grad():  # move BatchNorm statistics away from their initial values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert_padding_invariant(model, planted)


def test_registry_and_config_errors(planted):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    assert set(BASELINES) <= set(MODELS)
    with pytest.raises(ConfigError, match="unknown model 'dfm'"):
        build_model("dfm", spec)
    with pytest.raises(ConfigError, match="hiden"):
        build_model("deepfm", spec, {"hiden": [10]})
    with pytest.raises(ConfigError, match="no preset"):
        build_model("deepfm", spec, {"preset": "nope"})
    with pytest.raises(ConfigError, match="provider 'zz'"):
        build_model("zz-din", spec)
    m = build_model("pnn", spec, {"preset": "paper"})
    assert m.cfg.hidden == [400, 400, 400]


def test_din_softmax_flag_changes_the_computation(planted):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    tr = {k: np.asarray(v[:200]) for k, v in planted.split("train").items()}
    outs = []
    for sm in (False, True):
        torch.manual_seed(0)
        m = build_model("din", spec, {"use_softmax": sm}, dim=8, init_std=0.1)
        outs.append(predict_logits(m, tr, planted.schema))
    assert not np.allclose(outs[0], outs[1])


@pytest.fixture(scope="module")
def synthetic():
    from ctrgraph.registry import load_dataset

    return load_dataset("synthetic", {"n_instances": 30000, "n_users": 1500, "n_items": 2000,
                                      "n_categories": 20, "seed": 0}, cache=False)


@pytest.mark.parametrize("name, share", [("lr", 0.4), ("fm", 0.7), ("deepfm", 0.7), ("din", 0.4)])
def test_models_recover_the_synthetic_generators_signal(synthetic, name, share):
    """On the synthetic generator the Bayes AUC (from the true click probabilities) is known; a
    model must close at least ``share`` of the gap between chance and it."""
    from ctrgraph.train.metrics import auc

    te = synthetic.split("test")
    bayes = auc(te["label"], te["true_prob"])
    assert bayes > 0.8
    torch.manual_seed(0)
    m = build_model(name, FeatureSpec(synthetic.schema, synthetic.vocab_sizes), {}, dim=8, init_std=0.01)
    r = Trainer(TrainConfig(epochs=8, batch_size=256, lr=3e-3, progress=False)).fit(m, synthetic)
    assert r["test"]["auc"] > 0.5 + share * (bayes - 0.5), (r["test"]["auc"], bayes)
