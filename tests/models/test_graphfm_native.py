"""GraphFM's fused layer kernel (layers/graphfm_native.py) against the PyTorch path: values, gradients,
ties, thread count, the trace of ``explain`` and the fallback with ``CTRGRAPH_NATIVE=0``."""
from __future__ import annotations

import pytest
import torch

from ctrgraph.layers import graphfm_native
from ctrgraph.models.graphfm import GraphFMConfig, GraphFMLayer

CONFIGS = [
    (16, 12, {}),  # layer 1 of the defaults: m = n, no selection sort
    (64, 6, {}),
    (64, 3, {}),
    (64, 3, {"aggregate": "feature"}),  # ablation -I
    (64, 4, {"self_interaction": False, "score_activation": "relu", "score_bias": True}),
    (64, 3, {"field_specific": True, "residual_layernorm": True}),
    (64, 3, {"head_merge": "mean", "heads": 3, "dims": [63]}),
]


@pytest.fixture(scope="module")
def kernel():
    k = graphfm_native.kernel()
    if k is None:
        pytest.skip("the GraphFM kernel cannot be built here")
    return k


def _run(monkeypatch, layer: GraphFMLayer, h: torch.Tensor, g: torch.Tensor, native: bool) -> list[torch.Tensor]:
    monkeypatch.setenv("CTRGRAPH_NATIVE", "1" if native else "0")
    assert (layer.native(h) is not None) == native
    for t in [h, *layer.parameters()]:
        t.grad = None
    y = layer(h)
    (y * g).sum().backward()
    return [y.detach().clone(), h.grad.clone()] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
@pytest.mark.parametrize("d_in,m,kw", CONFIGS)
def test_native_layer_equals_pytorch_path(monkeypatch, kernel, dtype, tol, d_in, m, kw):
    torch.manual_seed(0)
    cfg = GraphFMConfig(**{"dims": [64], **kw})
    layer = GraphFMLayer(cfg, 12, d_in, cfg.dims[0], m).to(dtype)
    h = torch.randn(37, 12, d_in, dtype=dtype, requires_grad=True)
    g = torch.randn(37, 12, cfg.dims[0], dtype=dtype)
    ref = _run(monkeypatch, layer, h, g, native=False)
    new = _run(monkeypatch, layer, h, g, native=True)
    for a, b in zip(ref, new):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("n,d_in,m,hidden", [(16, 5, 7, 20), (2, 33, 1, 16), (16, 64, 16, 3), (13, 17, 4, 16)])
def test_native_sizes_off_the_16_lane_grid(monkeypatch, kernel, n, d_in, m, hidden):
    """n = 16 fills every lane of the rank; widths and metric sizes that are no multiple of 16 take the
    kernel's zero-padded tails; a duplicated field makes exact ties in P (float64 against the PyTorch path)."""
    torch.manual_seed(6)
    layer = GraphFMLayer(GraphFMConfig(dims=[48], metric_hidden=hidden), n, d_in, 48, m).double()
    h = torch.randn(21, n, d_in, dtype=torch.float64)
    h[:, -1] = h[:, 0]
    h.requires_grad_(True)
    g = torch.randn(21, n, 48, dtype=torch.float64)
    ref = _run(monkeypatch, layer, h, g, native=False)
    new = _run(monkeypatch, layer, h, g, native=True)
    for a, b in zip(ref, new):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_native_gradcheck(kernel):
    """Gradients of x against finite differences (float64; away from selection ties and ReLU kinks)."""
    torch.manual_seed(3)
    n, d, q, H = 5, 4, 3, 2
    h = torch.randn(2, n, d, dtype=torch.float64, requires_grad=True)
    wc = torch.randn(q + H, d, dtype=torch.float64, requires_grad=True)
    bc = torch.randn(q + H, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(q, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(1, dtype=torch.float64, requires_grad=True)
    for interaction in (True, False):
        for m, self_interaction in ((3, True), (5, True), (2, False)):
            def f(*args):
                return graphfm_native.aggregate(*args, m, self_interaction, 0.2, interaction)[0]
            assert torch.autograd.gradcheck(f, (h, wc, bc, w2, b2))


def test_native_selection_breaks_ties_towards_lower_index(monkeypatch, kernel):
    """Equal scores (identical fields): the kept neighbours are the lowest indices, as the stable sort's."""
    torch.manual_seed(1)
    layer = GraphFMLayer(GraphFMConfig(), 6, 8, 8, 2).double()
    h = torch.randn(3, 1, 8, dtype=torch.float64).expand(3, 6, 8).contiguous()
    _, _, P, mask = layer.native(h)
    assert bool((P == P[:, :1, :1]).all())
    assert bool(mask[:, :, :2].all()) and not bool(mask[:, :, 2:].any())
    monkeypatch.setenv("CTRGRAPH_NATIVE", "0")
    assert torch.equal(layer.edges(h)[2], mask)


def test_native_result_with_two_threads(kernel):
    """Blocks of rows split over threads write disjoint rows and per-block partial sums: no races."""
    torch.manual_seed(2)
    layer = GraphFMLayer(GraphFMConfig(), 12, 16, 64, 6)
    h = torch.randn(100, 12, 16, requires_grad=True)
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            h.grad = None
            for p in layer.parameters():
                p.grad = None
            y = layer(h)
            y.square().sum().backward()
            outs.append([y.detach(), h.grad] + [p.grad for p in layer.parameters()])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_explain_trace_equal_on_both_paths(monkeypatch, kernel):
    torch.manual_seed(4)
    layer = GraphFMLayer(GraphFMConfig(), 12, 16, 64, 5).eval()
    h = torch.randn(9, 12, 16)
    traces = {}
    for native in (False, True):
        monkeypatch.setenv("CTRGRAPH_NATIVE", "1" if native else "0")
        trace: list = []
        with torch.no_grad():
            layer(h, trace)
        traces[native] = trace[0]
    for key in ("scores", "p", "weight"):
        torch.testing.assert_close(traces[True][key], traces[False][key], rtol=1e-5, atol=1e-6)
    assert torch.equal(traces[True]["mask"], traces[False]["mask"])


def test_pytorch_fallback_and_unsupported_switches_take_the_pytorch_path(monkeypatch):
    torch.manual_seed(5)
    monkeypatch.setenv("CTRGRAPH_NATIVE", "0")
    layer = GraphFMLayer(GraphFMConfig(), 12, 16, 64, 6)
    h = torch.randn(4, 12, 16, requires_grad=True)
    assert layer.native(h) is None
    layer(h).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    monkeypatch.setenv("CTRGRAPH_NATIVE", "1")
    for kw in ({"p_on": "logit"}, {"softmax_over": "all"}, {"metric": "euclidean"}, {"select": "threshold"},
               {"selection": False}):
        assert GraphFMLayer(GraphFMConfig(**kw), 12, 16, 64, 12).native(h) is None
    assert GraphFMLayer(GraphFMConfig(), 17, 16, 64, 6).native(torch.randn(2, 17, 16)) is None  # n > 16
    drop = GraphFMLayer(GraphFMConfig(attention_dropout=0.1), 12, 16, 64, 6)
    assert drop.native(h) is None and (graphfm_native.kernel() is None or drop.eval().native(h) is not None)


def _outputs_and_grads(fns, x, W, g):
    """For each function of (x, W): its output and the gradients of x and W for the upstream gradient g."""
    out = []
    for f in fns:
        x.grad = W.grad = None
        y = f()
        (y * g).sum().backward()
        out.append((y.detach(), x.grad, W.grad))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_head_linear_equals_einsum(dtype):
    """Eq. 12-13's per-head W^h_a on strided views (the native path's product) = the einsum, values and gradients."""
    torch.manual_seed(7)
    x = torch.randn(9, 5, 3, 7, dtype=dtype, requires_grad=True)
    W = torch.randn(3, 7, 4, dtype=dtype, requires_grad=True)
    g = torch.randn(9, 5, 12, dtype=dtype)
    grads = _outputs_and_grads((lambda: torch.einsum("bihd,hde->bihe", x, W).flatten(2),
                                lambda: graphfm_native.head_linear(x, W)), x, W, g)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(graphfm_native.head_linear, (x[:3, :2], W))


def test_native_float32_extreme_scores(monkeypatch, kernel):
    """float32 metric scores far past exp's range (|s| up to ~1e3): the kernel's vectorised exp gives P of exactly 0
    or 1 and finite softmax weights, as the PyTorch path (values, selection and gradients)."""
    torch.manual_seed(8)
    layer = GraphFMLayer(GraphFMConfig(), 12, 16, 64, 6)
    with torch.no_grad():
        layer.metric[2].weight.mul_(300.0)
        layer.score.weight.mul_(50.0)
    h = torch.randn(33, 12, 16, requires_grad=True)
    g = torch.randn(33, 12, 64)
    traces, outs = {}, {}
    for native in (False, True):
        trace: list = []
        monkeypatch.setenv("CTRGRAPH_NATIVE", "1" if native else "0")
        assert (layer.native(h) is not None) == native
        outs[native] = _run(monkeypatch, layer, h, g, native)
        with torch.no_grad():
            layer(h, trace)
        traces[native] = trace[0]
    P = traces[True]["scores"]
    assert bool(((P == 0) | (P == 1)).float().mean() > 0.5) and torch.isfinite(P).all()
    assert torch.equal(traces[True]["mask"], traces[False]["mask"])
    torch.testing.assert_close(P, traces[False]["scores"], rtol=1e-5, atol=1e-6)
    for a, b in zip(outs[False], outs[True]):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_head_linear_with_relu_equals_einsum_then_relu():
    torch.manual_seed(9)
    x = torch.randn(6, 4, 2, 5, dtype=torch.float64, requires_grad=True)
    W = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 4, 6, dtype=torch.float64)
    res = _outputs_and_grads((lambda: torch.relu(torch.einsum("bihd,hde->bihe", x, W).flatten(2)),
                              lambda: graphfm_native.head_linear(x, W, relu=True)), x, W, g)
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: graphfm_native.head_linear(a, b, True), (x[:2], W))
