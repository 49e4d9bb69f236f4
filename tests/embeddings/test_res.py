"""Res-embedding provider: batched central part == dense W C_b, gradients, fallbacks, training."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.registry import build_provider
from ctrgraph.embeddings.res import g_avg, g_gcn, neighbour_table
from ctrgraph.errors import ConfigError
from ctrgraph.registry import build_model
from ctrgraph.train.trainer import Trainer



def _provider(planted, g, **kw):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    torch.manual_seed(0)
    return build_provider("res", spec, 4, init_std=0.5, g=g, top_k=3, **kw)


def _random_z(h, k, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 4, size=(h, h)).astype(np.float32) * (rng.random((h, h)) < 0.3)
    np.fill_diagonal(z, 0)
    z[0] = 0
    z[:, 0] = 0
    z[5] = 0  # an isolated item
    keep = np.zeros_like(z)
    for i in range(h):  # brute-force top-k per row (reference)
        nz = np.flatnonzero(z[i])
        top = nz[np.argsort(-z[i, nz], kind="stable")][:k]
        keep[i, top] = z[i, top]
    return keep


@pytest.mark.parametrize("g", ["avg", "gcn", "att"])
def test_batched_central_part_equals_dense_w_cb(planted, g):
    p = _provider(planted, g)
    h = p.nbr_idx.shape[0]
    z = _random_z(h, 3)
    if g == "avg":
        w = np.where(z > 0, 1.0 / np.maximum((z > 0).sum(1, keepdims=True), 1), 0.0)
    elif g == "gcn":
        d = z.sum(1)
        inv = np.where(d > 0, np.maximum(d, 1e-12) ** -0.5, 0)
        w = inv[:, None] * z * inv[None, :]
    zc = sp.csr_matrix(z)
    wt = g_avg(zc) if g == "avg" else g_gcn(zc) if g == "gcn" else (zc > 0).astype(np.float32)
    idx, ww = neighbour_table(wt, 3)
    p.set_graph(torch.from_numpy(idx), torch.from_numpy(ww))
    cb = p.tables[p.item_table].weight.detach().double().numpy()
    if g == "att":  # Eq. 8, dense
        s = cb @ cb.T
        e = np.where(z > 0, np.exp(s - s.max(1, keepdims=True)), 0.0)
        w = e / np.maximum(e.sum(1, keepdims=True), 1e-300)
    dense = w @ cb
    ids = torch.tensor([1, 2, 3, 5, 7, 2], dtype=torch.long)
    uniq = torch.unique(ids)
    got = p.central(uniq).detach().double().numpy()
    np.testing.assert_allclose(got, dense[uniq.numpy()], rtol=1e-5, atol=1e-6)
    assert np.allclose(got[list(uniq.numpy()).index(5)], 0)  # isolated: no central part


def test_both_parts_get_gradients_and_isolated_self_fallback(planted):
    for g in ("gcn", "att"):
        p = _provider(planted, g)
        p.prepare(planted)
        ids = torch.arange(2, 40).view(2, -1)
        step = p.begin({})
        out = p.lookup(p.item_table, ids, step)
        (out.pow(2).sum() + sum(p.aux_losses(step).values())).backward()
        assert p.tables[p.item_table].weight.grad.abs().sum() > 0
        assert p.residual.weight.grad.abs().sum() > 0
    p = _provider(planted, "gcn", isolated="self")
    p.set_graph(torch.zeros_like(p.nbr_idx), torch.zeros_like(p.nbr_w))
    ids = torch.tensor([3])
    np.testing.assert_allclose(p.central(ids).detach(), p.tables[p.item_table](ids).detach())


def test_lambda_and_scope_change_the_aux_loss(planted):
    def aux(p, ids):
        step = p.begin({})
        p.lookup(p.item_table, ids, step)
        return p.aux_losses(step)

    a = aux(_provider(planted, "gcn"), torch.tensor([[2, 3]]))["res_l2"]
    assert aux(_provider(planted, "gcn", l2="table"), torch.tensor([[2, 3]]))["res_l2"] > a > 0
    assert aux(_provider(planted, "gcn", lam=0.0), torch.tensor([[2, 3]])) == {}


def test_unknown_provider_parameter_is_a_clear_error(planted):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    with pytest.raises(ConfigError, match="gg"):
        build_provider("res", spec, 4, gg="x")
    with pytest.raises(ConfigError, match="att"):
        build_provider("res", spec, 4, g="attention")


@pytest.mark.parametrize("base", ["din", "dnn", "deepfm"])
def test_res_variants_train_and_learn(planted, base):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    m = build_model(f"res-{base}", spec, {}, dim=8, init_std=0.01, provider_params={"g": "att"})
    r = Trainer(TrainConfig(epochs=15, batch_size=256, lr=1e-2, patience=3, progress=False)).fit(m, planted)
    assert r["test"]["auc"] > 0.7
    h = r["history"][0]
    assert h["aux_res_l2"] > 0 and h["res_ratio"] > 0


def test_res_embedding_pulls_same_category_items_together():
    """Res-embedding's Proposition 1, measured on the synthetic generator's planted categories."""
    from ctrgraph.data.lookups import attribute_table
    from ctrgraph.registry import load_dataset
    from ctrgraph.experiments.analysis import (
        category_cosines,
        item_embedding_matrix,
    )

    ds = load_dataset("synthetic", {"n_instances": 20000, "n_users": 1000, "n_items": 1000, "n_categories": 10,
                                    "seed": 0}, cache=False)
    cats = attribute_table(ds, "item_id", "category_id")
    ids = np.flatnonzero(cats >= 2)
    margins = {}
    for name in ("dnn", "res-dnn"):
        torch.manual_seed(0)
        m = build_model(name, FeatureSpec(ds.schema, ds.vocab_sizes), {"preset": "res_mlp"}, dim=16, init_std=1e-2)
        Trainer(TrainConfig(epochs=4, batch_size=256, lr=1e-3, patience=0, progress=False)).fit(m, ds)
        margins[name] = category_cosines(item_embedding_matrix(m), cats, ids=ids)["margin"]
    assert margins["res-dnn"] > 2 * margins["dnn"] + 0.02, margins
