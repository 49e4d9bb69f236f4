"""EGIN (Peng et al., 2024): SimExtract against its definition, the cross-batch queue, the graph
loss (accidental hits never count as negatives; each relation's loss is non-zero and reaches its
table), every ablation switch, item-only mode, clear errors, and a planted search signal learned."""
import numpy as np
import pytest
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.encode import encode
from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.layers.negative_queue import (
    IdQueue,
    sampled_softmax_loss,
    table_softmax_loss,
    two_way_softmax_loss,
)
from ctrgraph.models import egin as egin_mod
from ctrgraph.models.egin import SimExtract
from ctrgraph.registry import build_model, build_raw
from ctrgraph.train.metrics import auc
from ctrgraph.train.trainer import Trainer, predict_logits

SMALL = {"n_users": 300, "n_items": 600, "n_categories": 12, "queries_per_cluster": 3, "max_sessions": 16,
         "max_len": 20, "max_query_len": 12}


@pytest.fixture(scope="module")
def search():
    return encode(build_raw("synthetic_search", SMALL))


def _model(data, seed=0, **params):
    torch.manual_seed(seed)
    return build_model("egin", FeatureSpec(data.schema, data.vocab_sizes), params, dim=8, init_std=0.05)


def _batch(data, n=128, split="train"):
    return next(iter(BatchLoader({k: np.asarray(v[:n]) for k, v in data.split(split).items()}, data.schema, n)))


def test_sim_extract_is_topk_binning_and_recency_positions():
    torch.manual_seed(0)
    sx = SimExtract(4, k=3, bins=4, max_len=5, pos_emb=True, sim_value=True)
    t = torch.tensor([[1.0, 0, 0, 0]])
    seq = torch.tensor([[[1.0, 0, 0, 0], [-1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 1, 0, 0], [9, 9, 9, 9]]])
    mask = torch.tensor([[True, True, True, True, False]])
    out = sx(t, seq, mask)
    # cosines 1, -1, 0.6, 0 (the padded 5th is never chosen): top-3 = positions 0, 2, 3
    bins = torch.tensor([4, 4, 3])  # floor((c + 1) * 4 / 2) clamped to 3, + 1: 1 -> 4, 0.6 -> 4, 0 -> 3
    pos = torch.tensor([4, 2, 1])  # length 4 - index: 1 = the most recent
    want = (sx.bin_emb(bins) + sx.pos_emb(pos)).flatten()
    torch.testing.assert_close(out[0, :12], want)
    torch.testing.assert_close(out[0, 12:], torch.tensor([1.0, 0.6, 0.0]))


def test_sim_extract_short_sequences_leave_zero_slots_and_stop_the_gradient():
    sx = SimExtract(4, k=5, bins=10, max_len=3, pos_emb=True, sim_value=False)
    t = torch.randn(2, 4, requires_grad=True)
    seq = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = sx(t, seq, mask)
    assert out.shape == (2, 20)
    assert (out[0, 8:] == 0).all() and (out[1] == 0).all()  # 2 valid behaviours; none
    out.sum().backward()
    assert t.grad is None or (t.grad == 0).all()  # top-k and binning: no gradient to the graph side


def test_queue_is_fifo_and_samples_what_was_pushed():
    q = IdQueue(5, vocab=100)
    assert ((q.sample(50) >= 2) & (q.sample(50) < 100)).all()  # empty: uniform over the vocabulary
    q.push(torch.tensor([[7, 8, 0], [9, 0, 0]]))  # padding skipped
    assert int(q.filled) == 3 and set(q.sample(200).tolist()) == {7, 8, 9}
    q.push(torch.tensor([10, 11, 12, 13]))
    assert int(q.filled) == 5 and set(q.sample(400).tolist()) == {9, 10, 11, 12, 13}  # 7 and 8 overwritten


def test_accidental_hits_never_count_as_negatives():
    torch.manual_seed(0)
    A, B = torch.randn(20, 4), torch.randn(20, 4)
    # every negative is the pair's own positive id: the denominator holds the positive only, loss 0
    neg_ids = torch.tensor([10, 10, 10])
    ref = sampled_softmax_loss(A[[3]], B[[10]], torch.tensor([10]), B[neg_ids], neg_ids)
    assert float(ref) == pytest.approx(0.0, abs=1e-7)
    got = table_softmax_loss(A, torch.tensor([3]), B, torch.tensor([10]), neg_ids)
    assert float(got) == pytest.approx(0.0, abs=1e-6)  # the closed form: log(1 - 3 + e^{log 3}), rounding only


@pytest.fixture(params=["native", "torch"])
def loss_path(request, monkeypatch):
    """The graph loss's per-pair pass by the fused C++ kernel and by the PyTorch fallback."""
    from ctrgraph.graphs import native
    from ctrgraph.layers import negative_queue

    if request.param == "native":
        if native.search_graph_kernel() is None:
            pytest.skip("the native pair-softmax kernel cannot be built here")
    else:
        monkeypatch.setattr(negative_queue, "search_graph_kernel", lambda: None)
    return request.param


@pytest.mark.parametrize("V, P", [(30, 300), (200, 100), (500, 40)])  # whole table / used rows by count / by sort
def test_the_fused_table_loss_equals_the_per_pair_loss_with_gradients(V, P, loss_path):
    torch.manual_seed(0)
    A, B = torch.randn(V, 6, requires_grad=True), torch.randn(V + 5, 6, requires_grad=True)
    a, p, neg = torch.randint(1, V, (P,)), torch.randint(1, V + 5, (P,)), torch.randint(1, V + 5, (12,))
    neg[:3] = p[:3]  # accidental hits, taken out in closed form
    neg[3] = p[0]  # twice the same hit (c = 2)
    got = table_softmax_loss(A, a, B, p, neg)
    want = sampled_softmax_loss(A[a], B[p], p, B[neg], neg)
    torch.testing.assert_close(got, want)
    for x, y in zip(torch.autograd.grad(got, [A, B]), torch.autograd.grad(want, [A, B])):
        torch.testing.assert_close(x, y)
    neg_a = torch.randint(1, V, (12,))
    neg_a[:2] = a.flip(0)[:2]
    same = table_softmax_loss(A, a, A, a.flip(0), neg_a)  # one table on both sides (i2i): the gradients add up
    ref = sampled_softmax_loss(A[a], A[a.flip(0)], a.flip(0), A[neg_a], neg_a)
    for x, y in zip(torch.autograd.grad(same, [A]), torch.autograd.grad(ref, [A])):
        torch.testing.assert_close(x, y)



def test_the_closed_form_holds_when_hits_dominate_the_denominator(loss_path):
    """Many repeated hits on large logits (the case where S - c e^{a·p} could cancel): float32 stays
    close to the float64 per-pair reference, loss and gradients."""
    torch.manual_seed(1)
    A64, B64 = torch.randn(8, 5, dtype=torch.float64) * 3, torch.randn(6, 5, dtype=torch.float64) * 3
    a, p = torch.randint(0, 8, (400,)), torch.randint(0, 6, (400,))
    neg = torch.randint(0, 3, (50,))  # 50 negatives over 3 ids: most pairs have many hits
    A32, B32 = A64.float().requires_grad_(), B64.float().requires_grad_()
    A64.requires_grad_(), B64.requires_grad_()
    got = table_softmax_loss(A32, a, B32, p, neg)
    want = sampled_softmax_loss(A64[a], B64[p], p, B64[neg], neg)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    for x, y in zip(torch.autograd.grad(got, [A32, B32]), torch.autograd.grad(want, [A64, B64])):
        torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("same_table", [True, False])  # i2i / q2q (one table) and q2i (two)
@pytest.mark.parametrize("V, P", [(30, 300), (200, 100), (500, 40)])
def test_the_two_way_loss_equals_both_one_way_losses_with_gradients(same_table, V, P, loss_path):
    torch.manual_seed(2)
    A = torch.randn(V, 6, requires_grad=True)
    B = A if same_table else torch.randn(V + 7, 6, requires_grad=True)
    a, b = torch.randint(1, V, (P,)), torch.randint(1, B.shape[0], (P,))
    neg_a, neg_b = torch.randint(1, V, (12,)), torch.randint(1, B.shape[0], (9,))
    neg_a[:2], neg_b[:3] = a[:2], b[:3]  # accidental hits in both directions
    if same_table:  # one negative set both ways (EGIN's i2i and q2q): the shared-logits path
        neg_b = neg_a
    got = two_way_softmax_loss(A, a, B, b, neg_a, neg_b)
    want = 0.5 * (sampled_softmax_loss(A[a], B[b], b, B[neg_b], neg_b) + sampled_softmax_loss(B[b], A[a], a, A[neg_a], neg_a))
    torch.testing.assert_close(got, want)
    params = [A] if same_table else [A, B]
    for x, y in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(x, y)

@pytest.mark.parametrize("d, N", [(10, 100), (10, 37), (7, 100), (16, 20)])  # the unrolled paper sizes, others
@pytest.mark.parametrize("kind", ["one way", "two ways, one table", "two ways, two tables"])
def test_the_fused_native_loss_equals_the_pytorch_path(d, N, kind, monkeypatch):
    """The C++ loss (forward and backward in one call each) against the PyTorch path, float32, with
    repeated anchors, accidental hits (c = 1 and 2) and large logits; the gradients by the PyTorch
    path's hand-written backward and by autograd through the per-pair reference."""
    from ctrgraph.graphs import native
    from ctrgraph.layers import negative_queue

    if native.search_graph_kernel() is None:
        pytest.skip("the native kernel cannot be built here")
    torch.manual_seed(3)
    V, P = 300, 3000
    A = (torch.randn(V, d) * 1.5).requires_grad_()
    B = A if kind == "two ways, one table" else (torch.randn(V + 11, d) * 1.5).requires_grad_()
    a, b = torch.randint(1, V, (P,)), torch.randint(1, B.shape[0], (P,))
    neg_a, neg_b = torch.randint(1, V, (N,)), torch.randint(1, B.shape[0], (N,))
    neg_b[:3], neg_b[3], neg_a[:2] = b[:3], b[0], a[:2]
    if kind == "two ways, one table":
        neg_a = neg_b
    params = [A] if B is A else [A, B]

    def loss():
        if kind == "one way":
            return table_softmax_loss(A, a, B, b, neg_b)
        return two_way_softmax_loss(A, a, B, b, neg_a, neg_b)

    assert negative_queue._native(A, B) is not None
    got = loss()
    g_got = torch.autograd.grad(got, params)
    with monkeypatch.context() as mp:
        mp.setattr(negative_queue, "search_graph_kernel", lambda: None)
        want = loss()
        g_want = torch.autograd.grad(want, params)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=0)
    for x, y in zip(g_got, g_want):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
    ref = sampled_softmax_loss(A[a], B[b], b, B[neg_b], neg_b)
    if kind != "one way":
        ref = 0.5 * (ref + sampled_softmax_loss(B[b], A[a], a, A[neg_a], neg_a))
    for x, y in zip(g_got, torch.autograd.grad(ref, params)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_each_graph_loss_is_nonzero_and_reaches_its_table(search):
    m = _model(search)
    m.train()
    out = m(_batch(search))
    assert set(out.aux) == {"egin_i2i", "egin_q2q", "egin_q2i"}
    for name, tables in (("egin_i2i", ["g_item"]), ("egin_q2q", ["g_query"]), ("egin_q2i", ["g_item", "g_query"])):
        assert float(out.aux[name]) > 0
        m.zero_grad()
        out = m(_batch(search))
        out.aux[name].backward()
        for t in tables:
            assert getattr(m, t).weight.grad.abs().sum() > 0, (name, t)
    assert int(m.item_queue.filled) > 0 and int(m.query_queue.filled) > 0  # pushed after each step


def test_ctr_loss_does_not_reach_the_graph_tables_unless_sim_value(search):
    for sim_value, reaches in ((False, False), (True, True)):
        m = _model(search, sim_value=sim_value)
        m.train()
        m(_batch(search)).logits.sum().backward()
        g = m.g_item.weight.grad
        assert (g is not None and g.abs().sum() > 0) == reaches


@pytest.mark.parametrize("params", [{"graph": False}, {"query": False}, {"pos_emb": False}, {"sim_value": True},
                                    {"window": 1}, {"span_direction": "both"}, {"seeds_mix": 1.0},
                                    {"subsample": 1e-4}, {"subsample": 1e-4, "subsample_target": "negatives"}])
def test_each_switch_changes_the_computation(search, params):
    b = _batch(search)
    base, var = _model(search), _model(search, **params)
    base.prepare(search)
    var.prepare(search)
    base.train()
    var.train()
    torch.manual_seed(1)
    o1 = base(b)
    torch.manual_seed(1)
    o2 = var(b)
    changed = not torch.equal(o1.logits, o2.logits) or set(o1.aux) != set(o2.aux) or any(
        not torch.equal(o1.aux[k], o2.aux[k]) for k in o1.aux if k in o2.aux)
    assert changed, params
    if params == {"graph": False}:
        assert not o2.aux and not hasattr(var, "g_item")
        from ctrgraph.experiments.analysis import item_embedding_matrix  # Table 5 reads the provider's table

        assert var.item_vectors() is None
        np.testing.assert_array_equal(item_embedding_matrix(var), var.embedding.tables["item_id"].weight.detach())
        np.testing.assert_array_equal(item_embedding_matrix(base), base.g_item.weight.detach())
    if params == {"query": False}:
        assert set(o2.aux) == {"egin_i2i"}
    if "subsample" in params:  # §4.6.1: keep = min(1, sqrt(t / f)), f the id's share of the train histories
        ids = np.asarray(search.split("train")["hist_item_id"]).ravel()
        cnt = np.bincount(ids[ids > 0], minlength=var.keep_item.numel())
        f = cnt / cnt.sum()
        want = np.minimum(1.0, np.sqrt(1e-4 / np.maximum(f, 1e-300)))
        np.testing.assert_allclose(var.keep_item.numpy(), want, rtol=1e-6)
        assert want[cnt > 0].min() < 0.5


def test_seeds_sequence_keeps_only_the_query_category():
    raw = build_raw("synthetic_search", SMALL)
    data = encode(raw)
    m = _model(data, seeds_mix=1.0)
    m.train()
    b = _batch(data, 64)
    seen = {}
    orig = egin_mod.window_pairs

    def spy(mask, w, **kw):
        seen["mask"] = mask
        return orig(mask, w, **kw)

    egin_mod.window_pairs = spy
    try:
        m(b)
    finally:
        egin_mod.window_pairs = orig
    keep = (b["hist_category"] == b["query_category"].unsqueeze(1)) & (b["hist_item_id"] > 0)
    assert torch.equal(seen["mask"].sum(1), keep.sum(1))  # every row: exactly its seeds, compacted
    assert not seen["mask"][:, 1:].gt(seen["mask"][:, :-1]).any()  # valid positions first
    with pytest.raises(ConfigError, match="seeds_mix needs query mode"):
        d = encode(build_raw("movielens"))
        build_model("egin", FeatureSpec(d.schema, d.vocab_sizes), {"seeds_mix": 0.2}, dim=8)


def test_item_only_mode_on_movielens():
    data = encode(build_raw("movielens"))
    m = build_model("egin", FeatureSpec(data.schema, data.vocab_sizes), {}, dim=8)
    assert not m.query_mode
    m.train()
    out = m(_batch(data, 64))
    assert set(out.aux) == {"egin_i2i"} and out.logits.shape == (64,)


def test_bad_inputs_are_clear_errors(search):
    spec = FeatureSpec(search.schema, search.vocab_sizes)
    with pytest.raises(ConfigError, match="not a sequence of the query history"):
        build_model("egin", spec, {"query_similarity_field": "hist_ts"}, dim=8)
    with pytest.raises(ConfigError, match="graph_dim must equal"):
        build_model("egin", spec, {"graph": False, "graph_dim": 4}, dim=8)
    bad = search.schema.replace(fields=tuple(
        f if f.name != "hist_query_category" else type(f)(**{**f.__dict__, "vocab": "query_id"})
        for f in search.schema.fields))
    with pytest.raises(ConfigError, match="share one vocabulary"):
        build_model("egin", FeatureSpec(bad, search.vocab_sizes), {}, dim=8)
    no_clicks = search.schema.replace(fields=tuple(f for f in search.schema.fields
                                                   if not f.name.startswith("hist_")))
    with pytest.raises(ConfigError, match="click sequence"):
        build_model("egin", FeatureSpec(no_clicks, search.vocab_sizes), {}, dim=8)


def test_egin_learns_the_planted_search_signal(search):
    torch.manual_seed(0)
    m = _model(search)
    Trainer(TrainConfig(epochs=4, batch_size=256, lr=3e-3, patience=0, progress=False)).fit(m, search)
    te = search.split("test")
    got = auc(te["label"], predict_logits(m, te, search.schema))
    bayes = auc(te["label"], te["true_prob"])
    assert got > 0.6 and got > 0.5 + 0.4 * (bayes - 0.5), (got, bayes)


@pytest.mark.parametrize("provider, aux", [("dg", None), ("res", "res_l2"), ("eges", None)])
def test_egin_runs_on_the_embedding_providers(search, provider, aux):
    """The provider's vectors are f_o's (and, with ``graph=False``, SimExtract's); EGIN's graph tables
    stay its own (research notes §3.2 #1), so its graph losses are unchanged."""
    torch.manual_seed(0)
    params = {"graph": False} if provider == "eges" else {}
    pp = {"epochs": 1, "num_walks": 1} if provider == "eges" else {}
    m = build_model(f"{provider}-egin", FeatureSpec(search.schema, search.vocab_sizes), params, dim=8,
                    provider_params=pp)
    m.prepare(search)
    m.train()
    out = m(_batch(search))
    want = set() if provider == "eges" else {"egin_i2i", "egin_q2q", "egin_q2i"}
    assert want <= set(out.aux) and (aux is None or out.aux[aux] > 0)
    assert torch.isfinite(out.logits).all()
