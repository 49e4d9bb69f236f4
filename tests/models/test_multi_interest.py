"""MIND, ComiRec-SA, ComiRec-DR and DMIN (DemiNet's Group-1 multi-interest baselines): learning,
padding, every switch, brute-force references of one core step each, config errors."""
import math

import numpy as np
import pytest
import torch
from conftest import assert_padding_invariant

from ctrgraph.config import TrainConfig
from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import FeatureSpec, Kind, Schema
from ctrgraph.errors import ConfigError
from ctrgraph.layers.multi_interest import CapsuleInterests, interest_readout, squash
from ctrgraph.models.dmin import attention_mask
from ctrgraph.registry import build_model, parse_model_name
from ctrgraph.train.trainer import Trainer

FAST = TrainConfig(epochs=10, batch_size=256, lr=1e-2, patience=3, progress=False)
NAMES = ["mind", "comirec-sa", "comirec-dr", "dmin"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for the whole module (set once, restored after): on the shared 2-core
    machine two threads under load made an epoch ~10x slower, and switching per fit leaves every later
    call of the module on two threads again."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    yield
    if before != 1:
        torch.set_num_threads(before)


def _spec(data):
    return FeatureSpec(data.schema, data.vocab_sizes)


def _batch(data, n=256):
    rows = {k: np.asarray(v[:n]) for k, v in data.split("train").items()}
    return next(iter(BatchLoader(rows, data.schema, n)))


def _model(data, name, params=None, seed=0, init_std=0.3, like=None):
    """A model; ``like``: copy every parameter and buffer of that model whose name and shape match,
    so that two configs differ only by the switch under test."""
    torch.manual_seed(seed)
    m = build_model(name, _spec(data), params or {}, dim=8, init_std=init_std)
    if like is not None:
        own = m.state_dict()
        m.load_state_dict({k: v for k, v in like.state_dict().items() if k in own and own[k].shape == v.shape},
                          strict=False)
    return m


def _perturbed(m):
    """Parameters moved by N(0, 0.1), so that small-initialised ones (positions) matter."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def _logits(m, batch):
    m.eval()
    with torch.no_grad():
        return m(batch).logits


def test_names_resolve_with_providers():
    assert parse_model_name("comirec-sa") == (None, "comirec-sa")
    assert parse_model_name("dg-comirec-sa") == ("dg", "comirec-sa")
    assert parse_model_name("res-comirec-dr") == ("res", "comirec-dr")
    assert parse_model_name("res-dmin") == ("res", "dmin")
    assert parse_model_name("dg-mind") == ("dg", "mind")


# ----- learning ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def din_auc(planted):
    torch.manual_seed(0)
    m = build_model("din", _spec(planted), {}, dim=8, init_std=0.01)
    return Trainer(FAST).fit(m, planted)["test"]["auc"]


@pytest.mark.parametrize("name", NAMES)
def test_model_learns_planted_signal(planted, din_auc, name):
    torch.manual_seed(0)
    model = build_model(name, _spec(planted), {}, dim=8, init_std=0.01)
    res = Trainer(FAST).fit(model, planted)
    # DIN reaches about 0.70-0.73 on this data; the planted rule's Bayes AUC is about 0.8
    assert res["test"]["auc"] > 0.7 and res["test"]["auc"] > din_auc - 0.03, (res["test"], din_auc)


# ----- padding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("mind", {}), ("mind", {"readout": "argmax", "dynamic_k": False, "routing_init": "sampled", "relu_layer": True}),
    ("mind", {"positions": "start", "pow_p": 2.0}),
    ("comirec-sa", {}), ("comirec-sa", {"readout": "attention", "position_in_interests": True, "positions": "start"}),
    ("comirec-dr", {}), ("comirec-dr", {"readout": "attention", "positions": "start", "routing_init": "fixed"}),
    ("dmin", {}), ("dmin", {"causal": True, "block": "attention", "attention_activation": "dice",
                            "pooled_history": True, "aux_loss": 1.0, "activation": "dice"}),
    ("dmin", {"positions": "start", "pos_dim": 0})])
def test_padding_never_changes_a_prediction(planted, name, params):
    model = _model(planted, name, params, init_std=0.1)
    model.prepare(planted)
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model(_batch(planted))  # move BatchNorm (Dice) statistics
    assert_padding_invariant(model, planted, extra=5)


# ----- switches ---------------------------------------------------------------------------------
SWITCHES = {
    "mind": [{"readout": "argmax"}, {"pow_p": 3.0}, {"routing_iterations": 1}, {"routing_init": "zeros"},
             {"dynamic_k": False}, {"relu_layer": True}, {"positions": "start"}, {"interests": 2}],
    "comirec-dr": [{"readout": "attention"}, {"routing_iterations": 1}, {"routing_init": "fixed"},
                   {"positions": "start"}, {"interests": 2}],
    "comirec-sa": [{"readout": "attention"}, {"add_pos": False}, {"position_in_interests": True},
                   {"positions": "start"}, {"attention_mult": 2}],
    "dmin": [{"causal": True}, {"block": "attention"}, {"pos_dim": 0}, {"positions": "start"},
             {"pooled_history": True}, {"refiner_heads": 2}, {"interests": 2}, {"attention_activation": "relu"}],
}


@pytest.mark.parametrize("name", NAMES)
def test_every_switch_changes_the_computation(planted, name):
    batch = _batch(planted)
    base = _perturbed(_model(planted, name))
    ref = _logits(base, batch)
    for params in SWITCHES[name]:
        other = _model(planted, name, params, like=base)
        assert not torch.allclose(_logits(other, batch), ref, atol=1e-6), (name, params)


@pytest.mark.parametrize("name", ["mind", "comirec-dr"])
def test_stop_gradient_and_sampled_routing(planted, name):
    """stop_gradient leaves the forward unchanged and changes the gradient; sampled initial logits
    differ per training forward, the fixed ones at evaluation."""
    batch = _batch(planted, 64)
    grads = []
    for sg in (True, False):
        m = _model(planted, name, {"stop_gradient": sg})
        m.train()
        m(batch).logits.sum().backward()
        unit = m.units[0]
        grads.append((unit.S if name == "mind" else unit.W).grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    a, b = (_model(planted, name, {"stop_gradient": sg}) for sg in (True, False))
    assert torch.allclose(_logits(a, batch), _logits(b, batch), atol=1e-6)
    s = _model(planted, name, {"routing_init": "sampled"}, like=_model(planted, name, {"routing_init": "fixed"}))
    s.train()
    with torch.no_grad():
        assert not torch.allclose(s(batch).logits, s(batch).logits)
    f = _model(planted, name, {"routing_init": "fixed"}, like=s)
    assert torch.equal(_logits(s, batch), _logits(f, batch))


# ----- brute-force references -------------------------------------------------------------------
def _recent_order(mask_row):
    """Columns of a post-padded row, most recent first (position p = index p in the result)."""
    return [i for i in range(len(mask_row)) if mask_row[i]][::-1]


@pytest.mark.parametrize("bilinear, dynamic_k, init", [("shared", True, "fixed"), ("shared", False, "fixed"),
                                                       ("per_position", False, "zeros")])
def test_routing_matches_explicit_loops(bilinear, dynamic_k, init):
    """MIND's B2I routing (shared S, Gaussian logits, K'_u) and ComiRec-DR's (W per position and
    interest, zero logits) on a 2-row batch, written as loops over behaviours and interests."""
    torch.manual_seed(0)
    K, D, L, iters = 4, 5, 9, 3
    unit = CapsuleInterests(D, L, K, bilinear, init, iters, True, "recent", dynamic_k=dynamic_k)
    e = torch.randn(2, L, D)
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, :9] = True
    V, cap = unit(e, mask)
    for r in range(2):
        order = _recent_order(mask[r].tolist())
        n = len(order)
        k_used = max(1, min(K, math.floor(math.log2(n)))) if dynamic_k else K
        if dynamic_k:
            assert cap[r].tolist() == [k < k_used for k in range(K)]

        def u_hat(j, p, r=r, order=order):  # behaviour at position p, mapped for interest j
            x = e[r, order[p]]
            return unit.S @ x if bilinear == "shared" else unit.W[p, j] @ x

        b = [[0.0 if init == "zeros" else float(unit.b_init[j, p]) for p in range(n)] for j in range(K)]
        for it in range(iters):
            w = [[0.0] * n for _ in range(K)]
            for p in range(n):
                den = sum(math.exp(b[j][p]) for j in range(k_used))
                for j in range(k_used):
                    w[j][p] = math.exp(b[j][p]) / den
            v = []
            for j in range(K):
                z = sum((w[j][p] * u_hat(j, p) for p in range(n)), torch.zeros(D))
                nz = float((z @ z).detach())
                v.append(z * (nz / (1 + nz) / math.sqrt(nz + 1e-9)))
            if it < iters - 1:
                for j in range(K):
                    for p in range(n):
                        b[j][p] += float((u_hat(j, p) @ v[j]).detach())
        torch.testing.assert_close(V[r], torch.stack(v), atol=1e-5, rtol=1e-4)


def test_squash_and_readout_match_their_formulas():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(squash(z), torch.tensor([[25 / 26 * 0.6, 25 / 26 * 0.8], [0.0, 0.0]]))
    torch.manual_seed(0)
    V, q = torch.randn(3, 4, 6), torch.randn(3, 6)
    cap = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    for p in (1.0, 2.0, 0.5):
        out = interest_readout(V, q, "attention", p, cap)
        for r in range(3):
            ks = [k for k in range(4) if cap[r, k]]
            s = [float(V[r, k] @ q[r]) for k in ks]
            s = [math.copysign(abs(x) ** p, x) for x in s]
            w = [math.exp(x) / sum(math.exp(y) for y in s) for x in s]
            torch.testing.assert_close(out[r], sum(wk * V[r, k] for wk, k in zip(w, ks)), atol=1e-5, rtol=1e-4)
    hard = interest_readout(V, q, "argmax", capsule_mask=cap)
    for r in range(3):
        ks = [k for k in range(4) if cap[r, k]]
        best = max(ks, key=lambda k: float(V[r, k] @ q[r]))
        assert torch.equal(hard[r], V[r, best])


def test_comirec_sa_attention_matches_explicit_loops(planted):
    """Eq. 6-7: per head k, softmax over the valid positions of w2_k . tanh(W1 (e_i + pos_p(i)) + b1);
    interests = sum_i a_ki e_i (positions in the logits only, as the authors' code)."""
    m = _model(planted, "comirec-sa")
    unit = m.units[0]
    torch.manual_seed(1)
    D, L = 16, 12
    e = torch.randn(2, L, D)
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, :12] = True
    with torch.no_grad():
        V, A = unit(e, mask, return_weights=True)
        for r in range(2):
            order = _recent_order(mask[r].tolist())
            for k in range(4):
                s = [float(unit.w2.weight[k] @ torch.tanh(unit.w1.weight @ (e[r, i] + unit.pos[p]) + unit.w1.bias))
                     for p, i in enumerate(order)]
                a = [math.exp(x) / sum(math.exp(y) for y in s) for x in s]
                torch.testing.assert_close(A[r, k, :len(order)], torch.tensor(a), atol=1e-5, rtol=1e-4)
                assert torch.all(A[r, k, len(order):] == 0)
                torch.testing.assert_close(V[r, k], sum(ak * e[r, i] for ak, i in zip(a, order)), atol=1e-5, rtol=1e-4)


def test_dmin_self_attention_ignores_padding(planted):
    """The refiner's weights equal an explicit softmax over the valid keys (padding masked, not
    causal); whatever sits in padded positions changes neither the valid refined vectors nor the
    interests; with ``causal`` a position never sees a later one."""
    m = _model(planted, "dmin").eval()
    unit = m.units[0]
    torch.manual_seed(2)
    D, L, H, dh = 16, 12, 4, 4
    e = torch.randn(2, L, D)
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :10] = True
    with torch.no_grad():
        W, _ = unit.refiner.attn.weights(e, attention_mask(mask, False))
        q, k, _ = unit.refiner.attn.qkv(e).view(2, L, 3, H, dh).unbind(2)
        for r in range(2):
            valid = [j for j in range(L) if mask[r, j]]
            for h in range(H):
                for i in valid:
                    s = [float(q[r, i, h] @ k[r, j, h]) / math.sqrt(dh) for j in valid]
                    a = [math.exp(x) / sum(math.exp(y) for y in s) for x in s]
                    torch.testing.assert_close(W[r, h, i, valid], torch.tensor(a), atol=1e-5, rtol=1e-4)
                    assert float(W[r, h, i, ~mask[r]].abs().sum()) == 0.0
        noisy = e.clone()
        noisy[~mask] = torch.randn(int((~mask).sum()), D) * 10
        allowed = attention_mask(mask, False)
        z1, z2 = unit.refiner(e, allowed), unit.refiner(noisy, allowed)
        torch.testing.assert_close(z1[mask], z2[mask])
        I1, I2 = unit.interest_sequences(z1, allowed), unit.interest_sequences(z2, allowed)
        torch.testing.assert_close(I1.transpose(1, 2)[mask], I2.transpose(1, 2)[mask])
        Wc, _ = unit.refiner.attn.weights(e, attention_mask(mask, True))
        assert float(Wc.triu(1).abs().sum()) == 0.0 and not torch.allclose(Wc, W)


# ----- DMIN's auxiliary loss --------------------------------------------------------------------
def test_dmin_aux_loss_is_weighted_named_and_trains_the_refiner(planted):
    from ctrgraph.data.lookups import attribute_table

    batch = _batch(planted, 128)
    off = _model(planted, "dmin").train()
    assert off(batch).aux == {} and off.units[0].aux_net is None
    half = _model(planted, "dmin", {"aux_loss": 0.5})
    full = _model(planted, "dmin", {"aux_loss": 1.0}, like=half)
    losses = []
    for m in (half, full):
        m.prepare(planted)
        assert torch.equal(m.attr_0_hist_cat, torch.from_numpy(attribute_table(planted, "item_id", "cat")))
        m.train()
        torch.manual_seed(5)  # the same negatives for both weights
        losses.append(m(batch).aux["dmin_aux"])
    torch.testing.assert_close(losses[0], 0.5 * losses[1])
    assert losses[1].item() > 0.1
    losses[1].backward()
    unit = full.units[0]
    for p in unit.refiner.parameters():  # the refiner learns from the auxiliary loss alone
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in unit.extractor.parameters())
    assert all(p.grad is not None for p in unit.aux_net.parameters())
    full.eval()
    assert full(batch).aux == {}  # no sampling at evaluation


# ----- presets and errors -----------------------------------------------------------------------
@pytest.mark.parametrize("name, preset", [("mind", "comirec_code"), ("dmin", "official"), ("dmin", "fuxictr")])
def test_presets_build_and_run(planted, name, preset):
    m = _model(planted, name, {"preset": preset})
    m.prepare(planted)
    m.train()
    out = m(_batch(planted, 64))
    assert torch.isfinite(out.logits).all()
    if preset == "official":
        assert "dmin_aux" in out.aux and m.cfg.causal


@pytest.mark.parametrize("name, params, match", [
    ("mind", {"readout": "max"}, "readout"), ("mind", {"interests": 0}, "interests"),
    ("mind", {"routing_iterations": 0}, "routing_iterations"), ("mind", {"pow_p": -1}, "pow_p"),
    ("mind", {"routing_init": "ones"}, "routing_init"), ("comirec-dr", {"positions": "end"}, "positions"),
    ("comirec-dr", {"bilinear_std": 0}, "bilinear_std"), ("comirec-sa", {"attention_mult": 0}, "attention_mult"),
    ("comirec-sa", {"readout": "mean"}, "readout"), ("dmin", {"aux_loss": -1}, "aux_loss"),
    ("dmin", {"block": "gru"}, "block"), ("dmin", {"refiner_heads": 3}, "not divisible by 3 heads"),
    ("dmin", {"attention_activation": "swish"}, "unknown activation"), ("dmin", {"routing_iterations": 3}, "routing"),
])
def test_bad_config_values_are_config_errors(planted, name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, _spec(planted), params, dim=8)


def test_head_dim_override_and_missing_sequence(planted):
    m = build_model("dmin", _spec(planted), {"refiner_heads": 3, "interests": 3, "head_dim": 5}, dim=8)
    assert torch.isfinite(_logits(m, _batch(planted, 32))).all()
    no_seq = Schema(tuple(f for f in planted.schema.fields if f.kind != Kind.SEQUENCE))
    spec = FeatureSpec(no_seq, planted.vocab_sizes)
    for name in NAMES:
        with pytest.raises(ConfigError, match="needs a behaviour sequence field with a target"):
            build_model(name, spec, {}, dim=8)
