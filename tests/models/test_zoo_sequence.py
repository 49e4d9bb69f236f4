"""DIEN and BST (user-interest sequence models): learning, padding, variant switches, aux loss."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import assert_padding_invariant, planted_raw

from ctrgraph.config import TrainConfig
from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import Field, Kind, Role, Schema
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.layers.recurrent import AttentionalGRU, InterestEvolution
from ctrgraph.registry import build_model
from ctrgraph.models.bst import time_buckets
from ctrgraph.train.trainer import Trainer

FAST = TrainConfig(epochs=10, batch_size=256, lr=1e-2, patience=3, progress=False)


@pytest.fixture(scope="module")
def timed():
    """The planted data plus raw behaviour / instance timestamps (BST's time positions)."""
    from ctrgraph.data.encode import encode

    raw, _ = planted_raw()
    rng = np.random.default_rng(1)
    n, L = raw.columns["hist_item_id"].shape
    now = rng.integers(10**8, 2 * 10**8, n)
    gaps = rng.integers(1, 10**6, (n, L))
    hist_ts = now[:, None] - np.cumsum(gaps[:, ::-1], axis=1)[:, ::-1]  # increasing, most recent last
    fields = list(raw.schema.fields[:-1]) + [
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=L, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False), raw.schema.fields[-1]]
    cols = dict(raw.columns, hist_ts=hist_ts, timestamp=now)
    lengths = dict(raw.lengths, hist_ts=raw.lengths["hist_item_id"])
    return encode(replace(raw, schema=Schema(tuple(fields)), columns=cols, lengths=lengths))


def _spec(data):
    return FeatureSpec(data.schema, data.vocab_sizes)


def _rows(data, n=200):
    return {k: np.asarray(v[:n]) for k, v in data.split("train").items()}


def _batch(data, n=256):
    return next(iter(BatchLoader(_rows(data, n), data.schema, n)))


@pytest.mark.parametrize("name, params", [("dien", {}), ("bst", {"pooling": "target"})])
def test_model_learns_planted_signal(timed, name, params):
    torch.manual_seed(0)
    model = build_model(name, _spec(timed), params, dim=8, init_std=0.01)
    res = Trainer(FAST).fit(model, timed)
    assert res["test"]["auc"] > 0.7, res["test"]


@pytest.mark.parametrize("name, params", [
    ("dien", {"gru_type": "augru"}), ("dien", {"gru_type": "agru"}), ("dien", {"gru_type": "aigru"}),
    ("dien", {"gru_type": "gru", "attention": "din", "activation": "dice"}),
    ("bst", {"position": "time"}), ("bst", {"position": "index", "pooling": "mean"})])
def test_padding_never_changes_a_prediction(timed, name, params):
    torch.manual_seed(0)
    model = build_model(name, _spec(timed), params, dim=8)
    model.prepare(timed)
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model(_batch(timed))  # move BatchNorm (Dice) statistics
    assert_padding_invariant(model, timed, ("hist_item_id", "hist_cat", "hist_ts", "tags"), extra=5)


def test_dien_aux_loss_is_nonzero_and_trains_the_extractor(timed):
    from ctrgraph.data.lookups import attribute_table

    torch.manual_seed(0)
    model = build_model("dien", _spec(timed), {}, dim=8, init_std=0.1)
    model.prepare(timed)
    assert torch.equal(model.attr_0_hist_cat, torch.from_numpy(attribute_table(timed, "item_id", "cat")))
    model.train()
    out = model(_batch(timed))
    aux = out.aux["dien_aux"]
    assert aux.item() > 0.1
    aux.backward()
    unit = model.units[0]
    for p in unit.extractor.parameters():  # the GRU learns from the auxiliary loss alone
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in unit.evolution.parameters())
    assert model.embedding.tables["item_id"].weight.grad.abs().sum() > 0
    model.eval()
    assert model(_batch(timed)).aux == {}  # no sampling at evaluation
    off = build_model("dien", _spec(timed), {"aux_loss": False}, dim=8).train()
    assert "dien_aux" not in off(_batch(timed)).aux


def test_every_dien_switch_changes_the_computation(timed):
    spec, batch = _spec(timed), _batch(timed)
    outs = {}
    for gt, share in (("augru", None), ("agru", "augru"), ("gru", None), ("aigru", "gru")):
        torch.manual_seed(0)
        m = build_model("dien", spec, {"gru_type": gt}, dim=8, init_std=0.3).eval()
        if share:  # identical weights: only the cell's equations differ
            m.load_state_dict(outs[share][1].state_dict())
        with torch.no_grad():
            outs[gt] = (m(batch).logits, m)
    keys = list(outs)
    for i, k in enumerate(keys):
        for k2 in keys[i + 1:]:
            assert not torch.allclose(outs[k][0], outs[k2][0], atol=1e-6), (k, k2)
    for params in ({"attention": "din"}, {"target_product": True}, {"pooled_history": False}):
        torch.manual_seed(0)
        other = build_model("dien", spec, params, dim=8, init_std=0.3).eval()
        with torch.no_grad():
            assert not torch.allclose(other(batch).logits, outs["augru"][0], atol=1e-6), params


def test_dien_without_pooled_history(timed):
    spec = _spec(timed)
    with_pool = build_model("dien", spec, {}, dim=8)
    without = build_model("dien", spec, {"pooled_history": False}, dim=8)
    first = lambda m: [x for x in m.mlp.modules() if isinstance(x, torch.nn.Linear)][0].in_features
    members = next(g for g in spec.behavior_groups())
    assert first(with_pool) - first(without) == len(members) * 8  # the pooled history is gone
    with pytest.raises(ConfigError, match="pooled_history"):
        build_model("dien", spec, {"pooled_history": False, "target_product": True}, dim=8)


def test_dien_fuxictr_preset(timed):
    """FuxiCTR's layout: no pooled history, BatchNorm in the tower, no aux loss, DNN 200-80."""
    spec = _spec(timed)
    m = build_model("dien", spec, {"preset": "fuxictr"}, dim=8)
    ref = build_model("dien", spec, {"pooled_history": False, "hidden": [200, 80]}, dim=8)
    def first(x):
        return next(y for y in x.mlp.modules() if isinstance(y, torch.nn.Linear))

    assert first(m).in_features == first(ref).in_features and first(m).out_features == 200
    assert sum(isinstance(y, torch.nn.BatchNorm1d) for y in m.mlp.modules()) == 2
    m.prepare(timed)
    assert "dien_aux" not in m.train()(_batch(timed)).aux


def test_augru_equations():
    """a_t = 1: AUGRU is a plain GRU (checked against nn.GRU with mapped weights); a_t = 0: h stays 0."""
    torch.manual_seed(0)
    B, L, I, H = 5, 6, 4, 3
    cell = AttentionalGRU(I, H, "augru")
    ref = torch.nn.GRU(I, H, batch_first=True)
    u, r, h = cell.x2h.weight.split(H), cell.x2h.bias.split(H), cell.h2h.weight.split(H)
    with torch.no_grad():  # torch orders (reset, update z, new) and uses z = 1 - u
        ref.weight_ih_l0.copy_(torch.cat([u[1], -u[0], u[2]]))
        ref.bias_ih_l0.copy_(torch.cat([r[1], -r[0], r[2]]))
        ref.weight_hh_l0.copy_(torch.cat([h[1], -h[0], h[2]]))
        ref.bias_hh_l0.zero_()
    x = torch.randn(B, L, I)
    mask = torch.ones(B, L, dtype=torch.bool)
    assert torch.allclose(cell(x, torch.ones(B, L), mask), ref(x)[0], atol=1e-5)
    assert torch.all(cell(x, torch.zeros(B, L), mask) == 0)
    agru = InterestEvolution(I, H, "agru")
    half = agru(x, torch.full((B, L), 0.5), mask)
    assert not torch.allclose(half, agru(x, torch.full((B, L), 0.9), mask))


def test_bst_time_positions_differ_from_index_positions(timed):
    assert time_buckets(torch.tensor([0, 1, 2, 3, 4, 7, 8, 10**12]), 32).tolist() == [0, 1, 2, 2, 3, 3, 4, 31]
    spec, batch = _spec(timed), _batch(timed)
    torch.manual_seed(0)
    mt = build_model("bst", spec, {"position": "time"}, dim=8, init_std=0.3).eval()
    torch.manual_seed(0)
    mi = build_model("bst", spec, {"position": "index"}, dim=8, init_std=0.3).eval()
    mask = batch["hist_item_id"] != 0
    pt, pi = mt.positions(batch, mask), mi.positions(batch, mask)
    assert torch.all(pt[:, -1] == 0) and torch.all(pi[:, -1] == 0)  # the candidate
    assert torch.all(pi[:, :-1][mask] >= 1) and not torch.equal(pt, pi)
    lens = mask.sum(1)
    row = int(torch.argmax(lens))
    assert pi[row, lens[row] - 1] == 1  # most recent behaviour: one step back
    with torch.no_grad():
        assert not torch.allclose(mt(batch).logits, mi(batch).logits, atol=1e-6)
    with pytest.raises(Exception, match="position=index"):
        build_model("bst", FeatureSpec(planted_raw(n=50)[0].schema, spec.vocab_sizes), {"position": "time"})


def test_bst_pooling_switch_changes_the_computation(timed):
    spec, batch = _spec(timed), _batch(timed)
    outs = []
    for pool in ("concat", "target", "mean", "sum"):
        torch.manual_seed(0)
        m = build_model("bst", spec, {"pooling": pool}, dim=8, init_std=0.3).eval()
        with torch.no_grad():
            outs.append(m(batch).logits)
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j], atol=1e-6)
