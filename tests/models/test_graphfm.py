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


def _layer_loop(layer, h: torch.Tensor) -> torch.Tensor:
    """One layer (Eq. 7-14 and the official code's switches) written literally for one instance h [n, d]:
    loops over query fields i, heads and neighbours j, nothing batched or fused."""
    F = torch.nn.functional
    cfg, n = layer.cfg, h.shape[0]

    def p_of(i, j):
        if not cfg.selection:
            return torch.tensor(1.0)
        if cfg.metric == "nmf":  # Eq. 7
            return torch.sigmoid(layer.metric(h[i] * h[j])).squeeze()
        zi, zj = layer.metric_proj(h[i]), layer.metric_proj(h[j])  # §4.2.1, Euclidean (DGM's form)
        return torch.exp(-layer.log_t.exp() * ((zi - zj) ** 2).sum())

    new = []
    for i in range(n):
        cands = [j for j in range(n) if cfg.self_interaction or j != i]
        p = {j: p_of(i, j) for j in cands}
        if not cfg.selection:
            nbrs = cands
        elif cfg.select == "threshold":  # §4.2.2: a minimum edge probability
            nbrs = [j for j in cands if float(p[j]) >= cfg.threshold]
        else:  # Eq. 8: the m_k largest, ties -> lower index
            nbrs = sorted(cands, key=lambda j: (-float(p[j]), j))[:layer.m]
        pm = {j: (p[j] if j in nbrs else torch.tensor(0.0)) for j in range(n)}  # Eq. 8-9: 0 off N_i
        heads = []
        for hd in range(cfg.heads):
            def score(j):  # Eq. 10 (official: ReLU with a bias)
                s = layer.score.weight[hd] @ (h[i] * h[j]) + (0 if layer.score.bias is None else layer.score.bias[hd])
                return F.leaky_relu(s, 0.2) if cfg.score_activation == "leaky_relu" else F.relu(s)

            W = layer.W_a[i, hd] if cfg.field_specific else layer.W_a[hd]
            over = nbrs if cfg.softmax_over == "selected" else list(range(n))  # Eq. 11 | official: every field
            msg = torch.zeros(W.shape[1])
            if over:
                logits = torch.stack([score(j) * pm[j] if cfg.p_on == "logit" else score(j) for j in over])
                alpha = torch.softmax(logits, 0)
                for t, j in enumerate(over):
                    term = h[i] * h[j] if cfg.aggregate == "interaction" else h[j]  # -I: the neighbour's features
                    scale = alpha[t] * pm[j] if cfg.p_on == "message" else alpha[t]  # Eq. 12: α_ij p_ij
                    msg = msg + scale * (W.T @ term)
            heads.append(msg)
        out = torch.cat(heads) if cfg.head_merge == "concat" else torch.stack(heads).mean(0)  # Eq. 13 | 14
        if not cfg.residual_layernorm:
            out = torch.relu(out)  # σ
        else:  # official code: LayerNorm(ReLU(msg + ReLU(W_r h_i))), per-field gain and bias
            Wr = layer.W_r[i] if cfg.field_specific else layer.W_r[0]
            out = torch.relu(out + torch.relu(h[i] @ Wr))
            out = F.layer_norm(out, out.shape) * layer.ln_gain[i] + layer.ln_bias[i]
        new.append(out)
    return torch.stack(new)


def _brute_force(model, batch) -> torch.Tensor:
    """Eq. 7-17 written literally: loops over instances, layers, fields, heads, neighbours."""
    E = model.embedding(batch).matrix()
    out = []
    for b in range(E.shape[0]):
        states, h = [E[b]], E[b]
        for layer in model.layers_:
            h = _layer_loop(layer, h)
            states.append(h)
        e_star = torch.cat([states[k].mean(0) for k in model.readout_ids], dim=-1)  # Eq. 15-16
        out.append(model.proj(e_star).squeeze())  # Eq. 17
    return torch.stack(out)


def test_batched_layers_equal_the_literal_equations(spec, batch):
    model = _model(spec, layers=2, m=[7, 3], dims=[8], **PAPER)
    small = {k: v[:5] for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(model(small).logits, _brute_force(model, small), atol=1e-5)


@pytest.mark.parametrize("params", [
    {},  # the default is the paper
    {"preset": "official", "m": [7, 3]},  # the official code's aggregation (p on the logit, softmax over all, ...)
    {"preset": "reference", "m": [7, 3], "readout": [1, 2]},
    {"m": [7, 3], "select": "threshold", "threshold": 0.5} | {"m": None},
    {"preset": "official", "select": "threshold", "threshold": 0.5},
    {"metric": "euclidean", "m": [5, 2]},
    {"metric": "euclidean", "select": "threshold", "threshold": 0.3},
    {"preset": "official", "metric": "euclidean", "m": [5, 2]},
    {"head_merge": "mean", "self_interaction": False, "m": [4, 2]},
    {"aggregate": "feature", "m": [6, 3]}, {"selection": False},
])
def test_both_modes_and_every_selection_equal_the_loop_reference(spec, batch, params):
    """Paper mode and official mode, top-m and threshold selection, NMF and Euclidean metric: the batched
    model equals the per-instance, per-field loop of Eq. 7-17."""
    params = {"m": [7, 3], **params}
    if params.get("select") == "threshold" or params.get("m") is None:
        params.pop("m")
    model = _model(spec, layers=2, dims=[8], **params)
    small = {k: v[:6] for k, v in batch.items()}
    with torch.no_grad():
        got = model(small).logits
        assert torch.isfinite(got).all()
        assert torch.allclose(got, _brute_force(model, small), atol=1e-5), params


def test_official_preset_is_the_earlier_default_and_paper_the_default():
    from ctrgraph.models.graphfm import GraphFMConfig
    from ctrgraph.registry import model_config

    paper = model_config("graphfm", {"preset": "paper"}).model_dump()
    assert GraphFMConfig().model_dump() == paper
    off = model_config("graphfm", {"preset": "official"})
    assert (off.p_on, off.softmax_over, off.score_activation, off.score_bias, off.field_specific,
            off.residual_layernorm, off.readout) == ("logit", "all", "relu", True, True, True, None)


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
    {"field_specific": True}, {"residual_layernorm": True}, {"preset": "reference"}, {"preset": "official"},
    {"metric": "euclidean"}, {"select": "threshold", "m": None}, {"select": "threshold", "m": None, "threshold": 0.3},
])
def test_each_switch_changes_the_output(spec, batch, change):
    base = {"m": [7, 4, 2], **PAPER}
    if change.get("m", 0) is None:
        base.pop("m"), change.pop("m")
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


@pytest.mark.parametrize("params,floor", [({"preset": "official", "m": [7, 4, 2]}, 0.75), ({}, 0.62)])
def test_graphfm_learns_planted_signal_and_ignores_padding(planted, spec, params, floor):
    """Both modes learn the planted signal (measured: official 0.80, the paper's default 0.66; the literal
    paper trains less well without the residual LayerNorm, docs/graphfm.md)."""
    torch.manual_seed(0)
    model = build_model("graphfm", spec, params, dim=8, init_std=0.01)
    res = Trainer(TrainConfig(epochs=15, batch_size=256, lr=1e-2, patience=3, progress=False)).fit(model, planted)
    assert res["test"]["auc"] > floor, res["test"]
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


def test_threshold_selection_keeps_the_edges_at_or_above_it(spec, batch):
    """§4.2.2: edges whose probability reaches the threshold, so degrees vary by node (the reason the
    paper gives for preferring top-m); a node left without neighbours gets no message (finite, zero)."""
    model = _model(spec, layers=2)
    tau = float(model.explain(batch)[0]["scores"].median())  # about half the layer-1 edges pass
    model = _model(spec, layers=2, select="threshold", threshold=tau)
    trace = model.explain(batch)
    t = trace[0]
    assert torch.equal(t["mask"], t["scores"] >= tau)
    deg = t["mask"].sum(-1)
    assert deg.min() < deg.max()  # unlike top-m, the number of neighbours varies
    assert (t["weight"][~t["mask"].unsqueeze(1).expand_as(t["weight"])] == 0).all()
    # every edge below the threshold: no neighbours anywhere, finite output, zero layer states
    empty = _model(spec, layers=2, select="threshold", threshold=0.999999)
    with torch.no_grad():
        for layer in empty.layers_:
            layer.metric[2].bias.fill_(-50.0)  # p ~ 2e-22
        states = []
        h = empty.embedding(batch).matrix()
        for layer in empty.layers_:
            h = layer(h)
            states.append(h)
        assert torch.isfinite(empty(batch).logits).all()
    assert all((st == 0).all() for st in states)
    empty.train()
    empty(batch).logits.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in empty.parameters() if q.grad is not None)


def test_euclidean_metric_equals_the_distance_formula(spec, batch):
    """§4.2.1's alternative metric: p_ij = exp(-t ||W_s h_i - W_s h_j||^2) (DGM [51]), symmetric, p_ii = 1;
    top-m then selects the m nearest fields of each row."""
    model = _model(spec, layers=2, metric="euclidean", m=[4, 2])
    with torch.no_grad():
        model.layers_[0].log_t.fill_(-1.0)
    trace = model.explain(batch)
    h = model.embedding(batch).matrix()
    layer = model.layers_[0]
    z = layer.metric_proj(h)
    ref = torch.exp(-layer.log_t.exp() * ((z[:, :, None, :] - z[:, None, :, :]) ** 2).sum(-1))
    P = trace[0]["scores"]
    assert torch.allclose(P, ref, atol=1e-5)
    assert torch.allclose(P, P.transpose(-1, -2)) and torch.allclose(torch.diagonal(P, dim1=-2, dim2=-1), torch.ones(()))
    assert (trace[0]["mask"].sum(-1) == 4).all()
    model.train()
    model(batch).logits.sum().backward()
    assert layer.metric_proj.weight.grad.abs().sum() > 0 and layer.log_t.grad.abs() > 0


def test_threshold_and_euclidean_configs_are_checked(spec):
    for params, msg in (({"select": "threshold", "m": [7, 4, 2]}, "no effect"), ({"threshold": 1.0}, "threshold"),
                        ({"metric": "cosine"}, "metric")):
        with pytest.raises(ConfigError, match=msg):
            build_model("graphfm", spec, params, dim=8)
