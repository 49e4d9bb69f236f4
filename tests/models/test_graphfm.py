"""GraphFM: the batched layer equals a per-instance, per-field loop over Eq. 7-17; selection keeps
exactly m_k edges and gives zero weight elsewhere; switches change the computation; the paper and
reference modes agree where they should; explain writes its table and heat maps."""
import numpy as np
import pytest
import torch
from conftest import assert_padding_invariant

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.registry import build_model
from ctrgraph.train.trainer import Trainer


@pytest.fixture(scope="module")
def spec(planted):
    return FeatureSpec(planted.schema, planted.vocab_sizes)


@pytest.fixture(scope="module")
def batch(planted):
    from ctrgraph.data.loader import BatchLoader

    tr = {k: np.asarray(v[:64]) for k, v in planted.split("train").items()}
    return next(iter(BatchLoader(tr, planted.schema, 64, shuffle=False)))


PAPER = {"preset": "paper"}


def _model(spec, seed=0, **params):
    torch.manual_seed(seed)
    m = build_model("graphfm", spec, params, dim=8, init_std=1.0)
    m.eval()
    return m


def _brute_force(model, batch) -> torch.Tensor:
    """Eq. 7-17 in the paper mode written literally: loops over instances, fields, heads, neighbours."""
    cfg = model.cfg
    E = model.embedding(batch).matrix()
    out = []
    for b in range(E.shape[0]):
        states, h = [E[b]], E[b]
        for layer, m in zip(model.layers_, model.m):
            n = h.shape[0]
            new = []
            for i in range(n):
                p = torch.stack([torch.sigmoid(layer.metric(h[i] * h[j])).squeeze() for j in range(n)])  # Eq. 7
                order = sorted(range(n), key=lambda j: (-float(p[j]), j))[:m]  # Eq. 8, ties -> lower index
                heads = []
                for hd in range(cfg.heads):
                    c = torch.stack([torch.nn.functional.leaky_relu(layer.score.weight[hd] @ (h[i] * h[j]), 0.2)
                                     for j in order])  # Eq. 10
                    alpha = torch.softmax(c, 0)  # Eq. 11, over the selected neighbours only
                    msg = sum(alpha[t] * p[j] * (layer.W_a[hd].T @ (h[i] * h[j])) for t, j in enumerate(order))
                    heads.append(torch.relu(msg))  # Eq. 12
                new.append(torch.cat(heads))  # Eq. 13
            h = torch.stack(new)
            states.append(h)
        e_star = torch.cat(states, dim=-1).mean(0)  # Eq. 15-16
        out.append(model.proj(e_star).squeeze())  # Eq. 17
    return torch.stack(out)


def test_batched_layers_equal_the_literal_equations(spec, batch):
    model = _model(spec, layers=2, m=[7, 3], dims=[8], **PAPER)
    small = {k: v[:5] for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(model(small).logits, _brute_force(model, small), atol=1e-5)


def test_selection_keeps_exactly_m_edges_and_zero_weight_outside(spec, batch):
    model = _model(spec, layers=3, m=[7, 4, 2], **PAPER)
    trace = model.explain(batch)
    for t, m in zip(trace, [7, 4, 2]):
        assert (t["mask"].sum(-1) == m).all()
        assert (t["weight"][~t["mask"].unsqueeze(1).expand_as(t["weight"])] == 0).all()
        assert (t["p"][~t["mask"]] == 0).all() and (t["p"][t["mask"]] > 0).all()
        # the selected edges hold the m largest scores of each row
        kept_min = t["scores"].masked_fill(~t["mask"], 2.0).amin(-1)
        dropped_max = t["scores"].masked_fill(t["mask"], -1.0).amax(-1)
        assert (kept_min >= dropped_max).all()
    # reference mode: unselected fields still get softmax weight (the official code's behaviour)
    ref = _model(spec, preset="reference", m=[7, 4, 2]).explain(batch)
    assert (ref[1]["weight"][~ref[1]["mask"].unsqueeze(1).expand_as(ref[1]["weight"])] > 0).any()


def test_ties_are_broken_towards_the_lower_field_index(spec, batch):
    model = _model(spec, layers=1, m=[3])
    with torch.no_grad():  # constant metric output: every score ties
        model.layers_[0].metric[2].weight.zero_()
    mask = model.explain(batch)[0]["mask"]
    assert mask[..., :3].all() and not mask[..., 3:].any()


def test_metric_mlp_receives_gradient(spec, batch):
    for preset in ("paper", "reference"):
        model = _model(spec, preset=preset, m=[7, 4, 2])
        model.train()
        model(batch).logits.sum().backward()
        for layer in model.layers_:
            g = layer.metric[0].weight.grad
            assert g is not None and g.abs().sum() > 0, preset


@pytest.mark.parametrize("change", [
    {"selection": False}, {"aggregate": "feature"}, {"heads": 1}, {"readout": [1]}, {"readout": [3]},
    {"head_merge": "mean"}, {"m": [7, 2, 1]}, {"p_on": "logit"}, {"softmax_over": "all"},
    {"score_activation": "relu"}, {"score_bias": True}, {"self_interaction": False}, {"activation": "identity"},
    {"field_specific": True}, {"residual_layernorm": True}, {"preset": "reference"},
])
def test_each_switch_changes_the_output(spec, batch, change):
    base = {"m": [7, 4, 2], **PAPER}
    a = _model(spec, **base)
    b = _model(spec, **{**base, **change})
    mine = b.state_dict()  # same weights where names and shapes agree
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k in mine and mine[k].shape == v.shape}, strict=False)
    with torch.no_grad():
        assert not torch.allclose(a(batch).logits, b(batch).logits, atol=1e-6)


def test_paper_and_reference_agree_with_full_graph_and_unit_p(spec, batch):
    """m_k = n and p = 1: the paper's masked softmax with α·p on the message equals the official
    code's logit·p with an unmasked softmax, given the same activation and weights."""
    paper = _model(spec, m=[7, 7, 7], **PAPER, score_activation="relu")
    ref = _model(spec, m=[7, 7, 7], **PAPER, score_activation="relu", p_on="logit", softmax_over="all")
    ref.load_state_dict(paper.state_dict())
    for m in (paper, ref):
        for layer in m.layers_:
            with torch.no_grad():
                layer.metric[2].bias.fill_(100.0)  # sigmoid -> exactly 1 in float32
    with torch.no_grad():
        assert torch.allclose(paper(batch).logits, ref(batch).logits, atol=1e-6)
    # with p < 1 they differ (p on the message vs on the logit)
    for m in (paper, ref):
        for layer in m.layers_:
            with torch.no_grad():
                layer.metric[2].bias.fill_(0.0)
    with torch.no_grad():
        assert not torch.allclose(paper(batch).logits, ref(batch).logits, atol=1e-6)


def test_graphfm_learns_planted_signal_and_ignores_padding(planted, spec):
    torch.manual_seed(0)
    model = build_model("graphfm", spec, {"m": [7, 4, 2]}, dim=8, init_std=0.01)
    res = Trainer(TrainConfig(epochs=15, batch_size=256, lr=1e-2, patience=3, progress=False)).fit(model, planted)
    assert res["test"]["auc"] > 0.7, res["test"]
    assert_padding_invariant(model, planted, n=200, extra=5)


def test_bad_configs_give_clear_errors(spec):
    for params, msg in (({"m": [7, 4]}, "layers"), ({"m": [9, 4, 2]}, "more neighbours"),
                        ({"dims": [63]}, "divisible"), ({"readout": [4]}, "readout"),
                        ({"head_merge": "max"}, "head_merge")):
        with pytest.raises(ConfigError, match=msg):
            build_model("graphfm", spec, params, dim=8)


def test_explain_writes_table_and_heatmaps(planted, spec, batch, tmp_path):
    from ctrgraph.runs.explain import explain_arrays, heatmaps, summary_lines

    model = _model(spec, m=[7, 4, 2])
    arrays = {k: np.asarray(v[:2]) for k, v in planted.split("test").items()}
    table = explain_arrays(model, arrays, planted.schema, [0, 1])
    assert len(table) == 2 * 3 * 7 * 7
    assert table.groupby(["row", "layer", "field_i"])["selected"].sum().unstack("layer").values.tolist() \
        == [[7, 4, 2]] * 14
    paths = heatmaps(table, tmp_path)
    assert len(paths) == 2 and all(p.stat().st_size > 1000 for p in paths)
    assert summary_lines(table)[0].startswith("row 0")
    with pytest.raises(ConfigError, match="explain"):
        explain_arrays(build_model("fm", spec, {}, dim=8), arrays, planted.schema, [0, 1])


@pytest.mark.parametrize("chunk_bytes", [1, 96, 1 << 30])  # one row per group, a few rows, every row of an offset
@pytest.mark.parametrize("n", [1, 2, 5, 6])  # odd and even field counts (even: the half offset n/2)
def test_pair_linear_equals_unfused_reference(monkeypatch, chunk_bytes, n):
    from ctrgraph.layers import pair_linear as pl

    monkeypatch.setattr(pl, "CHUNK_BYTES", chunk_bytes)
    iu, ju = pl.circulant_pairs(n)
    pairs = set(zip(torch.minimum(iu, ju).tolist(), torch.maximum(iu, ju).tolist()))
    assert iu.numel() == len(pairs) == n * (n + 1) // 2  # every unordered pair exactly once
    g = torch.Generator().manual_seed(n)
    h = torch.randn(7, n, 4, generator=g, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 4, generator=g, dtype=torch.double, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.double, requires_grad=True)
    ref = torch.nn.functional.linear(h[:, iu] * h[:, ju], w, b).transpose(0, 1)
    out = pl.pair_linear(h, w, b)
    assert torch.allclose(out, ref)
    up = torch.randn(out.shape, generator=g, dtype=torch.double)
    grads_ref = torch.autograd.grad((ref * up).sum(), (h, w, b))
    grads = torch.autograd.grad((out * up).sum(), (h, w, b))
    for a, r in zip(grads, grads_ref):
        assert torch.allclose(a, r)
    assert torch.autograd.gradcheck(lambda h, w: pl.pair_linear(h, w, None), (h, w))


def test_pair_linear_rejects_bad_shapes():
    from ctrgraph.layers.pair_linear import pair_linear

    with pytest.raises(ValueError, match="pair_linear"):
        pair_linear(torch.randn(2, 3, 4), torch.randn(2, 5), None)
    with pytest.raises(ValueError, match="bias"):
        pair_linear(torch.randn(2, 3, 4), torch.randn(2, 4), torch.randn(3))


def test_softmax_last_equals_torch_softmax():
    from ctrgraph.layers.softmax import softmax_last

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 5, 7, generator=g, dtype=torch.double)
    x[0, 0, 0, :3] = float("-inf")  # masked entries get weight 0
    x.requires_grad_(True)
    up = torch.randn(x.shape, generator=g, dtype=torch.double)
    ref = torch.softmax(x, dim=-1)
    out = softmax_last(x)
    assert torch.allclose(out, ref) and float(out[0, 0, 0, :3].abs().sum()) == 0.0
    assert torch.allclose(torch.autograd.grad((out * up).sum(), x)[0], torch.autograd.grad((ref * up).sum(), x)[0])
