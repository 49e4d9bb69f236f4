"""Res-embedding provider: batched central part == dense W C_b, gradients, fallbacks, training."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.embeddings.res import g_avg, g_gcn, neighbour_table
from ctrgraph.errors import ConfigError
from ctrgraph.registry import build_model, build_provider
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
    from ctrgraph.experiments.analysis import (
        category_cosines,
        item_embedding_matrix,
    )
    from ctrgraph.registry import load_dataset

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


# ----- issue 17: +R with Res's own penalty, Eq. 3, Algorithm 1 as written, +sms ----------------------
def _penalty(p, ids):
    step = p.begin({})
    out = p.lookup(p.item_table, ids, step)
    return out, p.aux_losses(step)["res_l2"]


def test_plus_r_uses_exactly_res_penalty_at_equal_lambda(planted):
    """Table 3's "+R" (form=plain, E = R) and Res (Eq. 9) give the same λ Σ‖R_i‖² on one batch."""
    ids = torch.tensor([[2, 3, 3, 9], [9, 11, 0, 2]])  # repeats and padding
    torch.manual_seed(0)
    plus_r = _provider(planted, "gcn", form="plain", lam=0.006)
    torch.manual_seed(0)
    res = _provider(planted, "gcn", lam=0.006)
    res.prepare(planted)
    np.testing.assert_allclose(plus_r.residual.weight.detach(), res.residual.weight.detach())
    e, pen_r = _penalty(plus_r, ids)
    e_res, pen_res = _penalty(res, ids)
    uniq = torch.unique(ids)
    brute = 0.006 * sum(float(res.residual.weight[i].pow(2).sum()) for i in uniq.tolist())
    assert float(pen_r) == pytest.approx(float(pen_res), rel=1e-6) and float(pen_r) == pytest.approx(brute, rel=1e-5)
    np.testing.assert_allclose(e.detach(), plus_r.residual(ids).detach())  # E = R: the plain table
    assert not torch.allclose(e, e_res)  # ... while Res adds W C_b
    assert plus_r.diagnostics() == {}


def test_study_plus_r_row_is_res_penalty_not_embedding_l2(tmp_path):
    from ctrgraph.experiments.core import Context
    from ctrgraph.experiments.studies import STUDIES

    study = STUDIES["res-embedding"]
    ctx = Context(tmp_path, log=lambda *a: None, defaults=study.defaults)
    runs = {(r.label, r.dataset): r for r in study.item("table3").runs(ctx) if r.seed == 1}
    for mode in ("", " [default]"):
        r, gcn = runs[("DIN+R" + mode, "ml100k")], runs[("DIN+GCN" + mode, "ml100k")]
        assert r.cfg.train.embedding_l2 == 0 and r.cfg.embedding.params["form"] == "plain"
        assert r.cfg.embedding.params.get("lam", 0.006) == gcn.cfg.embedding.params.get("lam", 0.006)
        assert r.cfg.train == gcn.cfg.train  # the same training rules on every row


def test_prototype_eq3_equals_dense_pc_plus_r(planted):
    """E = P C + R (Eq. 3) against a dense one-hot P [H, I]; gradients reach C and R; the form switch
    changes the computation."""
    p = _provider(planted, "gcn", form="prototype")
    h, n_dom = p.nbr_idx.shape[0], p.domain_central.weight.shape[0]
    rng = np.random.default_rng(1)
    dom = rng.integers(0, n_dom, h)
    dom[0] = 0
    p.set_domains(torch.from_numpy(dom))
    P = np.zeros((h, n_dom))
    P[np.arange(h), dom] = 1.0
    C = p.domain_central.weight.detach().double().numpy()
    R = p.residual.weight.detach().double().numpy()
    dense = P @ C + R
    ids = torch.tensor([[1, 4, 4, 7], [12, 0, 3, 1]])
    step = p.begin({})
    out = p.lookup(p.item_table, ids, step)
    np.testing.assert_allclose(out.detach().double().numpy(), dense[ids.numpy()], rtol=1e-6, atol=1e-7)
    (out.pow(2).sum() + p.aux_losses(step)["res_l2"]).backward()
    assert p.domain_central.weight.grad.abs().sum() > 0 and p.residual.weight.grad.abs().sum() > 0
    same = dom[4]
    sharing = np.flatnonzero(dom == same)
    np.testing.assert_allclose(dense[sharing] - R[sharing], np.repeat(C[same][None], sharing.size, 0))
    torch.manual_seed(0)
    q = _provider(planted, "gcn")
    q.prepare(planted)
    assert not torch.allclose(q.item_vectors(torch.tensor([4, 7])), p.item_vectors(torch.tensor([4, 7])))


def test_prototype_prepare_takes_p_from_the_item_domain(planted):
    from ctrgraph.data.lookups import attribute_table

    p = _provider(planted, "gcn", form="prototype")
    assert p.domain_table == "tags"  # the first multi-valued item attribute (its first value)
    p.prepare(planted)
    np.testing.assert_array_equal(p.domain_of.numpy(), attribute_table(planted, "item_id", "tags"))
    assert p.diagnostics()["res_ratio"] > 0
    with pytest.raises(ConfigError, match="form"):
        _provider(planted, "gcn", form="proto")


def _algorithm1_brute(histories, h, delta, k):
    """Algorithm 1 as printed: every sample's history b_i, Z(g_c, g_w) += 1 for w in [c-Δ, c+Δ] \\ g_c,
    then the K largest of each row (ties: smaller id)."""
    z = np.zeros((h, h))
    for b in histories:  # reference: loops over samples and positions
        b = [int(x) for x in b if x != 0]
        for c in range(len(b)):
            for w in range(max(0, c - delta), min(len(b), c + delta + 1)):
                if b[w] != b[c]:
                    z[b[c], b[w]] += 1
    keep = np.zeros_like(z)
    for i in range(h):
        nz = np.flatnonzero(z[i])
        top = nz[np.lexsort((nz, -z[i, nz]))][:k]
        keep[i, top] = z[i, top]
    return keep


def test_paper_mode_algorithm1_counts_every_training_sample(planted):
    """count_over=samples (the paper mode) is Algorithm 1 over every train sample's history; the
    default (each user's sequence once) is a different graph."""
    h = planted.vocab_sizes["item_id"]
    ref = _algorithm1_brute(planted.split("train")["hist_item_id"], h, 2, 3)
    p = _provider(planted, "avg", count_over="samples")
    p.prepare(planted)
    got = np.zeros((h, h))
    idx, w = p.nbr_idx.numpy(), p.nbr_w.numpy()
    rows = np.repeat(np.arange(h), idx.shape[1])
    got[rows[w.ravel() > 0], idx.ravel()[w.ravel() > 0]] = 1
    np.testing.assert_array_equal(got, ref > 0)
    np.testing.assert_allclose(w.sum(1)[(ref > 0).any(1)], 1.0, rtol=1e-6)  # Eq. 6 rows average
    q = _provider(planted, "avg", count_over="users")
    q.prepare(planted)
    assert not torch.equal(p.nbr_idx, q.nbr_idx)


def test_sms_siamese_pretraining_pulls_cooccurring_items_together(planted):
    from ctrgraph.embeddings.pretrained import train_siamese, window_pairs
    from ctrgraph.graphs import behaviour_sequences

    values, offsets = behaviour_sequences(planted, "users")
    h = planted.vocab_sizes["item_id"]
    side = np.stack([np.arange(h), np.zeros(h, dtype=np.int64)], 1)
    vecs, counts = train_siamese(values, offsets, side, [h, 2], 8, window=2, epochs=3, batch_size=256,
                                 lr=0.02, seed=0)
    assert vecs.shape == (h, 8) and counts.sum() == values.size
    a, b = window_pairs(values, offsets, 2)
    rng = np.random.default_rng(0)
    r = rng.choice(np.flatnonzero(counts > 0), size=(a.size, 2))
    pos = (vecs[a] * vecs[b]).sum(1).mean()
    neg = (vecs[r[:, 0]] * vecs[r[:, 1]]).sum(1).mean()
    assert pos > neg + 0.02, (pos, neg)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    torch.manual_seed(0)
    prov = build_provider("sms", spec, 8, epochs=1)
    before = prov.tables["item_id"].weight.detach().clone()
    prov.prepare(planted)
    assert prov.pretrained_rows.size > 0
    assert not torch.allclose(before[prov.pretrained_rows], prov.tables["item_id"].weight[prov.pretrained_rows])


@pytest.mark.parametrize("g", ["gcn", "att"])
def test_whole_table_lookup_equals_the_unique_rows_bit_for_bit(planted, g):
    """A lookup of at least as many ids as items (a behaviour sequence) computes every item's row and
    gathers; fewer ids take the distinct ids' rows. Both give the same vectors, the same gradients of
    every parameter and the same L(R) rows, bit for bit (the rows no id uses add exact zeros)."""
    p = _provider(planted, g)
    h = p.nbr_idx.shape[0]
    z = _random_z(h, 3)
    wt = g_gcn(sp.csr_matrix(z)) if g == "gcn" else (sp.csr_matrix(z) > 0).astype(np.float32)
    idx, ww = neighbour_table(wt, 3)
    p.set_graph(torch.from_numpy(idx), torch.from_numpy(ww))
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, h, (max(h, 8), 5), generator=gen)  # ids.numel() >= h: the whole-table path
    ids[0, 0] = 0
    up = torch.randn(*ids.shape, 4, generator=gen)
    results = []
    for whole in (True, False):
        p.zero_grad(set_to_none=True)
        step = p.begin({})
        if whole:
            out = p.lookup(p.item_table, ids, step)
        else:  # the distinct-id path, as the provider takes it for fewer ids than items
            uniq, inv = torch.unique(ids, return_inverse=True)
            step["rows"] = uniq
            out = p.item_vectors(uniq)[inv]
        loss = (out * up).sum() + p.aux_losses(step)["res_l2"]
        loss.backward()
        results.append((out.detach(), step["rows"], [q.grad.clone() for q in p.parameters() if q.grad is not None]))
    (o1, r1, g1), (o2, r2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(r1, r2) and len(g1) == len(g2) > 0
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_plain_tables_pool_lazily_with_the_numbers_of_the_gathered_rows(planted, monkeypatch):
    """In training, sequence and multi-valued fields of the plain tables (hist_cat, tags) stay lazy
    (``lookup_table``; the item table's lookups do not: they record their rows for L(R)): the field
    matrix, the auxiliary loss and every parameter's gradient equal those of the gathered rows bit for bit."""
    from ctrgraph.embeddings.base import EmbeddingProvider
    from ctrgraph.embeddings.res import ResEmbedding
    from ctrgraph.layers import native
    from ctrgraph.layers.lookup import LazyRows

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    tr = planted.split("train")
    batch = {k: torch.as_tensor(np.asarray(v[:200])) for k, v in tr.items()}
    runs = []
    for lazy in (True, False):
        if not lazy:
            monkeypatch.setattr(ResEmbedding, "lookup_table", EmbeddingProvider.lookup_table)
        p = _provider(planted, "gcn")
        p.prepare(planted)
        p.train()
        eb = p(batch)
        raw = {n: dict.__getitem__(eb.values, n) for n in ("hist_cat", "tags", "hist_item_id")}
        assert [isinstance(v, LazyRows) for v in raw.values()] == [lazy, lazy, False]
        E = eb.matrix()
        aux = sum(eb.aux_losses().values())
        ((E * torch.randn(E.shape, generator=torch.Generator().manual_seed(1))).sum() + aux).backward()
        runs.append((E.detach(), aux.detach(), {n: q.grad for n, q in p.named_parameters() if q.grad is not None}))
    (ea, aa, ga), (eb_, ab, gb) = runs
    assert torch.equal(ea, eb_) and torch.equal(aa, ab) and set(ga) == set(gb)
    for n in ga:
        assert torch.equal(ga[n], gb[n]), n
