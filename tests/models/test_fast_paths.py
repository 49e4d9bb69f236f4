"""The reformulated layers of issue 20's speed work compute what the earlier formulations computed.

Each test keeps the earlier formulation as a reference (written out here), copies the new layer's
parameters into it, and compares the forward output and every gradient (inputs and parameters) on
random input in float64 (rtol 1e-5 is then far above the rounding of either side).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrgraph.layers.cross import CIN


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def _check(new_fn, ref_fn, inputs: list[torch.Tensor], params_new: list[torch.Tensor],
           params_ref: list[torch.Tensor]) -> None:
    """Same outputs and same gradients of inputs and parameters under one random upstream gradient."""
    xs_new = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    xs_ref = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out_new, out_ref = new_fn(*xs_new), ref_fn(*xs_ref)
    _close(out_new, out_ref)
    g = torch.randn_like(out_ref)
    floats_new = [x for x in xs_new if x.requires_grad] + list(params_new)
    floats_ref = [x for x in xs_ref if x.requires_grad] + list(params_ref)
    grads_new = torch.autograd.grad(out_new, floats_new, g, allow_unused=True)
    grads_ref = torch.autograd.grad(out_ref, floats_ref, g, allow_unused=True)
    for gn, gr in zip(grads_new, grads_ref):
        assert (gn is None) == (gr is None)
        if gn is not None:
            _close(gn, gr)


def _cin_reference(cin: CIN, X0: torch.Tensor) -> torch.Tensor:
    """The earlier CIN: outer products materialised as [B, H_{k-1} m, D], then the 1x1 convolution."""
    B, _, D = X0.shape
    X, pooled = X0, []
    for k, (conv, act) in enumerate(zip(cin.convs, cin.acts)):
        Z = (X.unsqueeze(2) * X0.unsqueeze(1)).reshape(B, -1, D)
        Xk = act(conv(Z))
        if cin.split_half and k < len(cin.convs) - 1:
            X, direct = torch.split(Xk, Xk.shape[1] // 2, dim=1)
        else:
            X, direct = Xk, Xk
        pooled.append(direct.sum(dim=2))
    return torch.cat(pooled, dim=1)


@pytest.mark.parametrize("sizes,split,act", [([6, 4], False, "none"), ([6, 4, 2], True, "none"),
                                             ([4, 4], False, "prelu"), ([4, 6], False, "relu"), ([5], False, "none")])
def test_cin_matches_the_convolution_over_materialised_outer_products(sizes, split, act):
    torch.manual_seed(0)
    cin = CIN(5, sizes, split, act).double()
    X0 = torch.randn(7, 5, 3, dtype=torch.float64)
    params = list(cin.parameters())
    _check(cin, lambda x: _cin_reference(cin, x), [X0], params, params)


def _augru_reference(rnn, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The earlier AttentionalGRU loop: three gate splits and torch.where on the mask per step."""
    B, L, _ = x.shape
    H = rnn.hidden_size
    gx = rnn.x2h(x).unbind(1)
    att_t = att.unsqueeze(-1).unbind(1)
    mask_t = mask.unsqueeze(-1).unbind(1)
    h = x.new_zeros(B, H)
    out = []
    for t in range(L):
        xu, xr, xh = gx[t].split(H, dim=-1)
        hu, hr, hh = rnn.h2h(h).split(H, dim=-1)
        r = torch.sigmoid(xr + hr)
        cand = torch.tanh(xh + r * hh)
        a = att_t[t]
        u = a * torch.sigmoid(xu + hu) if rnn.gru_type == "augru" else a
        h = torch.where(mask_t[t], h + u * (cand - h), h)
        out.append(h)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("gru_type", ["augru", "agru"])
def test_attentional_gru_matches_the_masked_loop(gru_type):
    from ctrgraph.layers.recurrent import InterestEvolution, last_valid

    torch.manual_seed(0)
    B, L, I, H = 6, 7, 5, 4
    lens = torch.tensor([0, 1, 3, 7, 7, 2])
    mask = torch.arange(L) < lens.unsqueeze(1)  # post-padded, one empty row
    scores = torch.randn(B, L, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    att = torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0)  # 0 on padding, as DIEN's masked_softmax
    x = torch.randn(B, L, I, dtype=torch.float64)
    evo = InterestEvolution(I, H, gru_type).double()
    params = list(evo.parameters())
    _check(lambda x, a: evo(x, a, mask), lambda x, a: last_valid(_augru_reference(evo.rnn, x, a, mask), mask),
           [x, att], params, params)
    _check(lambda x, a: evo.rnn(x, a, mask), lambda x, a: _augru_reference(evo.rnn, x, a, mask),
           [x, att], params, params)


@pytest.mark.parametrize("gru_type", ["gru", "aigru"])
def test_interest_evolution_without_attention_cells_matches_torch_gru(gru_type):
    from ctrgraph.layers.recurrent import InterestEvolution, last_valid

    torch.manual_seed(0)
    B, L = 5, 6
    mask = torch.arange(L) < torch.tensor([1, 6, 3, 2, 6]).unsqueeze(1)
    att = torch.rand(B, L, dtype=torch.float64) * mask
    evo = InterestEvolution(4, 3, gru_type).double()
    ref = lambda x, a: last_valid(evo.rnn(x * a.unsqueeze(-1) if gru_type == "aigru" else x)[0], mask)
    params = list(evo.parameters())
    _check(lambda x, a: evo(x, a, mask), ref, [torch.randn(B, L, 4, dtype=torch.float64), att], params, params)


def test_dien_aux_loss_matches_the_concatenated_pairs():
    """DIEN's auxiliary loss: flat-index gather + split first layer vs boolean-mask pairs through
    the aux net on [h_t, e_{t+1}] and [h_t, neg] (same negatives: the same random stream)."""
    from ctrgraph.layers.mlp import MLP
    from ctrgraph.models.dien import DIEN

    torch.manual_seed(0)
    H, E, B, L = 4, 6, 5, 7
    cfg = DIEN.Config()
    net = MLP(H + E, cfg.aux_hidden, cfg.aux_activation).double()
    unit = type("U", (), {"aux_net": net})()
    mask = torch.arange(L) < torch.tensor([0, 1, 3, 7, 5]).unsqueeze(1)
    table = torch.randn(20, E, dtype=torch.float64, requires_grad=True)
    eb = type("EB", (), {"lookup": lambda self, t, ids: table[ids]})()
    members = [type("M", (), {"table": "item", "name": "hist"})()]
    model = type("D", (), {"spec": type("S", (), {"vocab_sizes": {"item": 20}})()})()

    def new(h, e):
        torch.manual_seed(5)
        return DIEN._aux_loss(model, unit, h, e, mask, members, [None], eb)

    def ref(h, e):
        torch.manual_seed(5)
        pair = mask[:, 1:]
        hs, pos = h[:, :-1][pair], e[:, 1:][pair]
        n = hs.shape[0]
        neg = table[torch.randint(2, 20, (n,))]
        logits = net(torch.cat([torch.cat([hs, pos], -1), torch.cat([hs, neg], -1)], 0)).squeeze(-1)
        f = nn.functional.softplus
        return (f(-logits[:n]) + f(logits[n:])).mean()

    params = list(net.parameters()) + [table]
    _check(new, ref, [torch.randn(B, L, H, dtype=torch.float64), torch.randn(B, L, E, dtype=torch.float64)],
           params, params)


def test_afm_pairs_match_advanced_indexing():
    from ctrgraph.layers.cross import PairwiseAttention
    from ctrgraph.layers.interaction import upper_pairs

    torch.manual_seed(0)
    att = PairwiseAttention(3, 4).double()
    E = torch.randn(5, 6, 3, dtype=torch.float64)
    iu = upper_pairs(6)

    def ref(E):
        P = E[:, iu[0]] * E[:, iu[1]]
        a = torch.softmax(att.h(torch.relu(att.W(P))).squeeze(-1), dim=1)
        return torch.einsum("bp,bpd->bd", a, P)

    params = list(att.parameters())
    _check(att, ref, [E], params, params)


@pytest.mark.parametrize("projection", ["linear", "relu"])
def test_self_attention_projections_match_the_fused_permuted_layout(projection):
    from torch.nn import functional as Fn

    from ctrgraph.layers.self_attention import MultiHeadSelfAttention

    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(6, 4, 2, projection=projection).double()
    x = torch.randn(5, 7, 6, dtype=torch.float64)

    def ref(x):
        B, F, _ = x.shape
        qkv = layer.qkv(x)
        if projection == "relu":
            qkv = torch.relu(qkv)
        q, k, v = qkv.view(B, F, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        out = Fn.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(B, F, 8)
        return torch.relu(out + layer.res(x))

    params = list(layer.parameters())
    _check(layer, ref, [x], params, params)


@pytest.mark.parametrize("hidden,act,softmax", [([6], "dice", False), ([6, 4], "sigmoid", True), ([5], "relu", False)])
def test_target_attention_split_first_layer_matches_the_concatenated_input(hidden, act, softmax):
    """DIN's unit: q (W_q + W_d)^T per row + [k, q k] [W_k - W_d | W_p]^T vs the MLP on [q, k, q - k, q k]."""
    from ctrgraph.layers.attention import TargetAttention
    from ctrgraph.layers.pooling import weighted_sum

    torch.manual_seed(0)
    B, L, d = 5, 7, 3
    unit = TargetAttention(d, hidden, act, softmax).double()
    unit.train()
    mask = torch.arange(L) < torch.tensor([0, 1, 4, 7, 2]).unsqueeze(1)

    def ref(q, keys):
        flat = mask.reshape(-1).nonzero().squeeze(1)
        k = keys.reshape(B * L, -1).index_select(0, flat)
        qq = q.index_select(0, torch.div(flat, L, rounding_mode="floor"))
        s = unit.mlp(torch.cat([qq, k, qq - k, qq * k], dim=-1)).squeeze(-1)
        if softmax:
            full = keys.new_full((B * L,), float("-inf")).scatter(0, flat, s).view(B, L)
            w = torch.nan_to_num(torch.softmax(full, dim=1), nan=0.0)
        else:
            w = keys.new_zeros(B * L).scatter(0, flat, s).view(B, L)
        return weighted_sum(w, keys)

    params = list(unit.parameters())
    _check(lambda q, k: unit(q, k, mask), ref,
           [torch.randn(B, d, dtype=torch.float64), torch.randn(B, L, d, dtype=torch.float64)], params, params)


def test_dice_training_path_matches_the_module_by_module_form():
    """Dice's hand-written training backward vs autograd through BatchNorm1d, sigmoid and the gate;
    the running statistics are updated identically (bit for bit, same native kernel)."""
    import copy

    from ctrgraph.layers.activation import Dice

    torch.manual_seed(0)
    dice = Dice(4).double()
    with torch.no_grad():
        dice.alpha.uniform_(-1, 1)
    ref_mod = copy.deepcopy(dice)

    def ref(x):
        p = torch.sigmoid(ref_mod.bn(x.reshape(-1, 4)))
        return (x.reshape(-1, 4) * (p + ref_mod.alpha * (1 - p))).reshape(x.shape)

    x = torch.randn(3, 9, 4, dtype=torch.float64) * 2 + 0.5
    _check(dice, ref, [x], [dice.alpha], [ref_mod.alpha])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(dice.bn, name), getattr(ref_mod.bn, name))
    dice.eval(), ref_mod.eval()
    with torch.no_grad():
        _close(dice(x), ref(x))


def test_linear_term_fused_lookup_matches_the_per_field_mean_pooling():
    """LinearTerm's one gather over all fields (ids offset into the concatenated 1-d tables, a
    coefficient per id) vs the provider's per-field lookups, mean pooling and sum; padding ids
    (also inside a valid position of a grouped sequence) keep a zero gradient."""
    from ctrgraph.data.schema import FeatureSpec, Field, Kind, Role, Schema
    from ctrgraph.models.lr import LinearTerm

    schema = Schema((
        Field("user_id", Kind.CATEGORICAL, Role.USER),
        Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("tags", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=3),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=5, target="item_id"),
        Field("hist_tag", Kind.SEQUENCE, Role.BEHAVIOR, vocab="tags", max_len=5, group="hist_item_id"),
        Field("label", Kind.NUMERIC, Role.LABEL),
    ))
    spec = FeatureSpec(schema, {"user_id": 7, "item_id": 9, "tags": 4})
    torch.manual_seed(0)
    term = LinearTerm(spec).double()
    with torch.no_grad():
        for t in term.weights.tables.values():
            t.weight.normal_()
            t.weight[0] = 0
        term.bias.fill_(0.3)
    hist = torch.tensor([[3, 4, 0, 0, 0], [0, 0, 0, 0, 0], [1, 2, 8, 5, 6], [7, 0, 0, 0, 0]], dtype=torch.int32)
    batch = {"user_id": torch.tensor([1, 0, 6, 2], dtype=torch.int32),
             "item_id": torch.tensor([8, 3, 0, 1], dtype=torch.int32),
             "tags": torch.tensor([[1, 2, 0], [0, 0, 0], [3, 0, 0], [1, 2, 3]], dtype=torch.int32),
             "hist_item_id": hist,
             "hist_tag": torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [2, 3, 0, 1, 2], [3, 0, 0, 0, 0]],
                                      dtype=torch.int32)}
    assert term._fusable
    params = list(term.parameters())
    new = term(batch)
    ref = term.weights(batch).matrix().sum(dim=(1, 2)) + term.bias
    _close(new, ref)
    g = torch.randn_like(ref)
    for gn, gr in zip(torch.autograd.grad(new, params, g), torch.autograd.grad(ref, params, g)):
        _close(gn, gr)
    tables = [t.weight for t in term.weights.tables.values()]
    for gt in torch.autograd.grad(term(batch), tables, g):
        assert gt[0].abs().sum() == 0  # the padding rows


def test_small_attention_kernel_matches_sdpa_and_gradcheck():
    """layers.native.small_attention (the fused kernel of short-row attention from a [B, F, 3 H dh]
    projection): SDPA's values and gradients within float tolerance (the specialised float path for
    head widths 4-32 and F <= 16, the generic loops otherwise), float64 gradcheck."""
    from torch.nn import functional as Fn

    from ctrgraph.layers import native

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    for B, F, H, dh, scale in ((64, 12, 2, 8, 1.0), (33, 5, 3, 32, 0.3), (16, 20, 2, 8, 1.0), (8, 7, 1, 6, 0.5),
                              (17, 16, 2, 16, 1.0), (9, 1, 2, 4, 1.0), (5, 2, 1, 4, 2.0)):
        D = H * dh
        g = torch.Generator().manual_seed(B)
        qkv = torch.randn(B, F, 3 * D, generator=g).requires_grad_()
        up = torch.randn(B, F, D, generator=g)
        q, k, v = (t.reshape(B, F, H, dh).transpose(1, 2) for t in qkv.split(D, -1))
        ref = Fn.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(B, F, D)
        (gref,) = torch.autograd.grad(ref, qkv, up)
        out = native.small_attention(qkv, H, scale)
        (gout,) = torch.autograd.grad(out, qkv, up)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gout, gref, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(native.small_attention(qkv, H, scale), ref, rtol=1e-5, atol=1e-5)
    x = torch.randn(3, 5, 3 * 2 * 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: native.small_attention(t, 2, 0.7), (x,))


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("structure", ["parallel", "stacked", "cross_only"])
def test_cross_v2_kernel_is_bit_identical_to_the_modules(layers, structure):
    """layers.native.cross_v2 (DCN-V2's cross network as one Function, CrossNetV2.fork): the loss and
    every gradient equal to the plain modules' bit for bit in float32, with x0 also feeding a deep
    branch (its gradient summed into x0's in autograd's order), feeding nothing else, or with the
    deep branch on top; float64 takes the modules."""
    from ctrgraph.layers import native
    from ctrgraph.layers.cross import CrossNetV2
    from ctrgraph.layers.mlp import MLP

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    torch.manual_seed(layers)
    net, deep = CrossNetV2(48, layers), MLP(48, [32, 16], out_dim=None)
    head = nn.Linear({"parallel": 48 + 16, "stacked": 16, "cross_only": 48}[structure], 1)
    emb = torch.randn(64, 3, 16, requires_grad=True)
    params = [emb, *net.parameters(), *deep.parameters()]

    def run(fused: bool):
        x0 = emb.flatten(1) * 1.0
        if fused:
            xc, x0d = net.fork(x0)
        else:
            xc, x0d = x0, x0
            for lin in net.layers:
                xc = x0 * lin(xc) + xc
        z = {"parallel": lambda: torch.cat([xc, deep(x0d)], 1), "stacked": lambda: deep(xc),
             "cross_only": lambda: xc}[structure]()
        loss = torch.sigmoid(head(z)).sum()
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    (lr, gr), (lf, gf) = run(False), run(True)
    assert torch.equal(lr, lf)
    for a, b in zip(gr, gf):
        assert (a is None and b is None) or torch.equal(a, b)
    x64 = torch.randn(4, 48, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: net.double().fork(t)[0], (x64,))


def test_augru_kernel_is_bit_identical_to_the_loop():
    """layers.native.augru_last (DIEN's AUGRU as one native loop): the last state and the gradients of
    x, the attention scores and all weights equal to the PyTorch loop's bit for bit in float32 (with
    empty and full rows); float64 and all-state calls take the loop."""
    from ctrgraph.layers import native
    from ctrgraph.layers.recurrent import AttentionalGRU, _attentional_loop

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    torch.manual_seed(0)
    B, L, I, H = 37, 9, 5, 8
    mask = torch.arange(L) < torch.randint(0, L + 1, (B,)).unsqueeze(1)
    scores = torch.randn(B, L).masked_fill(~mask, float("-inf"))
    att = torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0).requires_grad_()
    x = torch.randn(B, L, I, requires_grad=True)
    gru = AttentionalGRU(I, H, "augru")
    params = [x, att, *gru.parameters()]
    up = torch.randn(B, H)

    def run(fused: bool):
        if fused:
            out = gru.final(x, att, mask)
        else:
            a = (att * mask.to(att.dtype)).unsqueeze(-1)
            out = _attentional_loop(gru.x2h(x), gru.h2h.weight.t(), a, "augru", False)
        return out, torch.autograd.grad(out, params, up)

    (o0, g0), (o1, g1) = run(False), run(True)
    assert torch.equal(o0, o1)
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)


@pytest.mark.parametrize("B, F, d, t", [(64, 12, 16, 16), (37, 5, 3, 4), (9, 2, 8, 256)])
def test_pair_attention_kernel_is_bit_identical_to_the_modules(B, F, d, t):
    """layers.native.pair_attention (AFM's attention over pairs as one Function, the path
    PairwiseAttention takes when training in float32 on the CPU): the output and the gradients of E, W,
    b and h equal to the modules' (index_select pairs, Linear, ReLU, Linear, softmax, einsum) bit for
    bit; float64, eval with dropout and active dropout take the modules."""
    from ctrgraph.layers import native
    from ctrgraph.layers.cross import PairwiseAttention

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    torch.manual_seed(F)
    att = PairwiseAttention(d, t)
    E = torch.randn(B, F, d, requires_grad=True)
    params = [E, *att.parameters()]
    up = torch.randn(B, d)

    def plain(E):
        P = att.pairs(E)
        return torch.einsum("bp,bpd->bd", att.weights(P), att.dropout(P))

    assert att._fused(E)
    out_f = att(E)
    assert type(out_f.grad_fn).__name__ == "_PairAttentionBackward"
    out_p = plain(E)
    assert torch.equal(out_f, out_p)
    for a, b in zip(torch.autograd.grad(out_f, params, up), torch.autograd.grad(out_p, params, up)):
        assert torch.equal(a, b)
    assert not att.double()._fused(E.detach().double().requires_grad_())
    drop = PairwiseAttention(d, t, dropout=0.5)
    assert not drop._fused(E) and drop.eval()._fused(E)


def test_afm_training_with_the_pair_attention_kernel_is_bit_identical(planted, monkeypatch):
    """AFM on the planted data, 4 Adam steps from one seed: every parameter equal bit for bit with the
    native pair attention and with the modules (PairwiseAttention._fused forced off)."""
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.layers import cross, native
    from ctrgraph.registry import build_model

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    batches = [b for _, b in zip(range(4), BatchLoader(planted.split("train"), planted.schema, 256, shuffle=True,
                                                         seed=0))]
    calls = []
    fused = cross.pair_attention
    monkeypatch.setattr(cross, "pair_attention", lambda *a: calls.append(1) or fused(*a))

    def train(use_kernel: bool):
        if not use_kernel:
            monkeypatch.setattr(cross.PairwiseAttention, "_fused", lambda self, E: False)
        torch.manual_seed(0)
        m = build_model("afm", spec, {}, dim=8)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for b in batches:
            loss = nn.functional.binary_cross_entropy_with_logits(m(b).logits, b[planted.schema.label])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in m.parameters()]

    with_kernel = train(True)
    assert len(calls) == len(batches)
    plain = train(False)
    assert len(calls) == len(batches)
    for a, b in zip(with_kernel, plain):
        assert torch.equal(a, b)


@pytest.mark.parametrize("upstream", ["expanded_row", "scalar_sum", "column_block"])
def test_cross_v2_backward_reads_every_output_gradient_layout(upstream):
    """The cross network's backward reads an output gradient with strided rows in place (a column
    block of a concatenation) and copies any other layout (a broadcast row: zero row stride; a sum:
    zero strides): the gradients of the input and weights equal the plain modules' bit for bit."""
    from ctrgraph.layers import native
    from ctrgraph.layers.cross import CrossNetV2

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    torch.manual_seed(2)
    net = CrossNetV2(40, 3)
    x = torch.randn(32, 40, requires_grad=True)
    v, other = torch.randn(40), torch.randn(32, 24)
    params = [x, *net.parameters()]

    def run(fused: bool):
        x0 = x * 1.0
        if fused:
            xc = net.fork(x0)[0]
        else:
            xc = x0
            for lin in net.layers:
                xc = x0 * lin(xc) + xc
        loss = {"expanded_row": lambda: xc.sum(0) @ v, "scalar_sum": lambda: xc.sum(),
                "column_block": lambda: torch.cat([xc, other], 1).pow(2).sum()}[upstream]()
        return torch.autograd.grad(loss, params)

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("d", [16, 12])
def test_lookup_kernels_rows_of_16_match_the_reference(d):
    """The native lookups' rows of 16 floats (one vector each: pooled_lookup_forward's gather,
    pooled_lookup_backward's accumulation, field_lookups_forward) equal the reference computations
    bit for bit: bmm over the gathered rows, index_add_ of the rounded products w * g, index_select;
    d = 12 takes the generic loops."""
    from ctrgraph.layers import native

    k = native.kernel()
    if k is None:
        pytest.skip("the native layer kernels are not available")
    g = torch.Generator().manual_seed(d)
    V, B, L = 57, 200, 9
    T = torch.randn(V, d, generator=g)
    ids = torch.randint(0, V, (B, L), generator=g)
    w = torch.rand(B, L, generator=g)
    assert torch.equal(k.pooled_lookup_forward(T, ids, w, 64), torch.bmm(w.unsqueeze(1), T[ids]).squeeze(1))
    gr = torch.randn(B, d, generator=g)
    ref = torch.zeros(V, d).index_add_(0, ids.reshape(-1), (w.unsqueeze(-1) * gr.unsqueeze(1)).reshape(-1, d))
    ref[0] = 0
    assert torch.equal(k.pooled_lookup_backward(gr, ids, w, V, 0), ref)
    for dt in (torch.int32, torch.int64):
        x = ids[:, 0].to(dt).contiguous()
        assert torch.equal(k.field_lookups_forward([T], [x])[0], T.index_select(0, x.long()))
