"""DG-ENN provider: dense brute-force equations, target-edge leakage, ablation switches, eval cache,
planted-signal learning, config errors."""
import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from support_dg import (
    _graphs_without_targets,
    _train_batch,
    check_target_drop,
    tiny_raw,
)

from ctrgraph.config import TrainConfig
from ctrgraph.data.encode import encode
from ctrgraph.data.raw import RawDataset
from ctrgraph.data.schema import FeatureSpec, Field, Kind, Role, Schema
from ctrgraph.errors import ConfigError
from ctrgraph.graphs import gcn_literal_norm, sym_norm
from ctrgraph.graphs.dg import DropGraph, build_graph_data
from ctrgraph.registry import build_model, build_provider
from ctrgraph.train.trainer import Trainer


@pytest.fixture(scope="module")
def tiny():
    return encode(tiny_raw())


def _provider(ds, seed=0, **kw):
    torch.manual_seed(seed)
    p = build_provider("dg", FeatureSpec(ds.schema, ds.vocab_sizes), 4, init_std=0.5, **kw)
    p.prepare(ds)
    return p


# ----- dense brute force of Eqs. 9-22, one layer ------------------------------------------------
def _dense_norm(a, gcn, iso=1.0):
    a = (np.asarray(a) != 0).astype(np.float64)
    np.fill_diagonal(a, 0)
    deg = a.sum(1)
    s = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0)
    n = s[:, None] * a * s[None, :]
    n[np.diag_indices_from(n)] = np.where(deg > 0, (1 / np.maximum(deg, 1)) if gcn else 0.0, iso)
    return n


def _bip(b):
    b = (np.asarray(b) != 0).astype(np.float64)
    nu, nv = b.shape
    return np.block([[np.zeros((nu, nu)), b], [b.T, np.zeros((nv, nv))]])


def _layer(agg, mod, n, x):
    """One aggregation e^(1) = f(e^(0)) by the dense equations; returns (x + e^(1)) / 2 (Eq. 13)."""
    lrelu = lambda t: np.where(t > 0, t, 0.2 * t)
    ax = n @ x
    if agg == "lightgcn":  # Eq. 11
        e1 = ax
    elif agg == "gcn":  # Eq. 9 (centre term in n)
        e1 = lrelu(ax @ mod.w[0].weight.detach().double().numpy().T)
    else:  # Eq. 10
        w1, w2 = (m[0].weight.detach().double().numpy() for m in (mod.w1, mod.w2))
        e1 = lrelu((x + ax) @ w1.T + (x * ax) @ w2.T)
    return (x + e1) / 2


@pytest.mark.parametrize("isolated", ["keep", "zero"])
@pytest.mark.parametrize("agg", ["lightgcn", "gcn", "ngcf"])
def test_enhanced_tables_equal_dense_equations_one_layer(tiny, agg, isolated):
    p = _provider(tiny, aggregator=agg, layers=1, attr_mode="field", isolated=isolated)
    g = build_graph_data(tiny)
    gcn = agg == "gcn"
    iso = 1.0 if p.isolated == "keep" else 0.0
    W = {t: e.weight.detach().double().numpy() for t, e in p.tables.items()}
    want = {}
    zs = {}
    for side, owner, fields, inc in (("u", "user_id", ["age", "job"], g.user_attr),
                                     ("i", "item_id", ["year", "genres"], g.item_attr)):
        per = []
        for f in fields:  # Eqs. 9-13 per field graph, Eq. 14 mean over fields
            b = inc[f].toarray()
            h = _layer(agg, p.attr_prop[f"{side}_{f}"], _dense_norm(_bip(b), gcn, iso), np.vstack([W[owner], W[f]]))
            per.append(h[: b.shape[0]])
            want[f] = h[b.shape[0]:]
        zs[side] = np.mean(per, 0)
    zu = _layer(agg, p.cf_prop["uu"], _dense_norm(g.uu.toarray(), gcn, iso), zs["u"])  # Eqs. 16-17
    zv = _layer(agg, p.cf_prop["vv"], _dense_norm(g.vv.toarray(), gcn, iso), zs["i"])  # Eq. 18
    q = _layer(agg, p.cf_prop["uv"], _dense_norm(_bip(g.uv.toarray()), gcn, iso), np.vstack([zu, zv]))  # Eqs. 19-21
    want["user_id"], want["item_id"] = q[: zu.shape[0]], q[zu.shape[0]:]
    got = p.enhanced_tables()
    assert set(got) == set(want)
    for t, w in want.items():
        np.testing.assert_allclose(got[t].detach().double().numpy(), w, rtol=1e-4, atol=1e-5, err_msg=t)
    assert p.tables["hour"].weight.shape[0] > 1 and "hour" not in got  # context is not enhanced (Eq. 15)


def _linear_attribute_stage(p, g) -> dict[str, np.ndarray]:
    """Fig. 4 (i) densely: z = W [e_id; mean embedding of the owner's values in each field], per owner table."""
    W = {t: e.weight.detach().double().numpy() for t, e in p.tables.items()}
    out = {}
    for side, owner, fields, inc in (("u", "user_id", ["age", "job"], g.user_attr),
                                     ("i", "item_id", ["year", "genres"], g.item_attr)):
        parts = [W[owner]]
        for f in fields:
            b = (inc[f].toarray() != 0).astype(float)
            parts.append(b / np.maximum(b.sum(1, keepdims=True), 1) @ W[f])
        out[owner] = np.hstack(parts) @ p.attr_lin[side].weight.detach().double().numpy().T
    return out


def test_linear_attribute_mode_equals_dense_formula(tiny):
    """Fig. 4 (i): z_u = W [e_u; mean embedding of u's values in each field]; value tables stay plain."""
    p = _provider(tiny, attr_mode="linear", graphs="attr")
    got = p.enhanced_tables()
    for owner, want in _linear_attribute_stage(p, build_graph_data(tiny)).items():
        np.testing.assert_allclose(got[owner].detach().double().numpy(), want, rtol=1e-4, atol=1e-6)
    assert set(got) == {"user_id", "item_id"}


def test_drop_graph_normalisations_match_the_toolkit():
    rng = np.random.default_rng(1)
    a = (rng.random((12, 12)) < 0.3).astype(np.float32)
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0)
    a[4] = a[:, 4] = 0  # isolated node
    m = sp.csr_matrix(a)
    np.testing.assert_allclose(DropGraph(m, "gcn").adjacency().to_dense().numpy(), gcn_literal_norm(m).toarray(),
                               rtol=1e-6)
    sym = DropGraph(m, "sym", isolated=0.0).adjacency().to_dense().numpy()
    np.testing.assert_allclose(sym, sym_norm(m).toarray(), rtol=1e-6)
    # dropping a pair == building without it
    g = DropGraph(m * 3, "sym")  # counts 3: one drop leaves the edge, three remove it
    r, c = np.argwhere(np.triu(a))[0]
    ids = g.pair_ids(torch.tensor([r]), torch.tensor([c]))
    assert torch.equal(g.adjacency(ids).to_dense(), g.adjacency().to_dense())
    a2 = a.copy()
    a2[r, c] = a2[c, r] = 0
    np.testing.assert_allclose(g.adjacency(ids.repeat(3)).to_dense().numpy(),
                               DropGraph(sp.csr_matrix(a2), "sym").adjacency().to_dense().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="symmetric"):
        DropGraph(sp.csr_matrix(np.triu(a)), "sym")


# ----- leakage (research notes 2.3) --------------------------------------------------------------
@pytest.mark.parametrize("agg", ["lightgcn", "gcn"])
def test_training_instance_cannot_see_its_own_target_edge(tiny, agg):
    p = _provider(tiny, aggregator=agg)
    tr = tiny.split("train")
    rows = np.flatnonzero(tr["label"] > 0)[5:45]
    rows = np.concatenate([rows, np.flatnonzero(tr["label"] == 0)[:20]])
    batch = _train_batch(tiny, rows)
    ref = check_target_drop(p, tiny, batch)
    # logits of a wrapped model agree as well
    m = build_model("dg-pnn", FeatureSpec(tiny.schema, tiny.vocab_sizes), {}, dim=4)
    m.embedding = p
    m2 = copy.deepcopy(m)
    m2.embedding = ref
    m.train(), m2.train()
    torch.testing.assert_close(m(batch).logits, m2(batch).logits, rtol=1e-5, atol=1e-6)


def test_knn_leave_out_rebuilds_eq8_without_the_batch_targets(tiny):
    """With ``knn_leave_out`` a training step also equals graphs whose Eq. 8 kNN graph never saw the
    batch's positive pairs; without it the stored kNN graph (built with them) differs on this batch."""
    tr = tiny.split("train")
    rows = np.concatenate([np.flatnonzero(tr["label"] > 0)[5:45], np.flatnonzero(tr["label"] == 0)[:20]])
    batch = _train_batch(tiny, rows)
    p = _provider(tiny, knn_leave_out=True)
    check_target_drop(p, tiny, batch, knn=True)
    cf1 = p.leave_out_cf1(batch)
    n_u = p._g["n"][0]
    a_step = cf1.adjacency().to_dense()[:n_u, :n_u]
    a_stored = p._g["cf1"].adjacency().to_dense()[:n_u, :n_u]
    assert not torch.equal(a_step, a_stored)  # the targets did shape some users' neighbours
    g, _ = _graphs_without_targets(tiny, batch, knn=True)
    ref = _dense_norm(g.uu.toarray(), gcn=False, iso=0.0)
    np.testing.assert_allclose(a_step.numpy(), ref, rtol=1e-6, atol=1e-7)
    # default: no per-step rebuild, so the same reference does not match the step's user embeddings
    q = _provider(tiny)
    q.tables.load_state_dict(p.tables.state_dict())
    q.cf_prop.load_state_dict(p.cf_prop.state_dict())
    q.attr_lin.load_state_dict(p.attr_lin.state_dict())
    q.train()
    assert not torch.allclose(q(batch)["user_id"], p(batch)["user_id"], atol=1e-6)


def test_knn_leave_out_needs_uu_and_whole_graph_steps(tiny):
    with pytest.raises(ConfigError, match="knn_leave_out"):
        _provider(tiny, knn_leave_out=True, graphs="uv")
    with pytest.raises(ConfigError, match="knn_leave_out"):
        _provider(tiny, knn_leave_out=True, fanouts=[2, 2])


# ----- switches, cache, errors -------------------------------------------------------------------
FIELD = {"attr_mode": "field"}
#: (base parameters, the switch): each switch must change the enhanced tables of its base
VARIANTS = [({}, {"graphs": "attr"}), ({}, {"graphs": "uu,vv"}), ({}, {"graphs": "uv"}), ({}, {"graphs": "none"}),
            ({}, {"aggregator": "gcn"}), ({}, {"aggregator": "ngcf"}), ({}, {"attr_mode": "mixed"}),
            ({}, {"attr_mode": "field"}), ({}, {"collab": "sum"}), ({}, {"collab": "mean"}),
            ({}, {"collab": "attention"}), ({}, {"layers": 1}), ({}, {"layers": 3}), ({}, {"combine": "sum"}),
            ({}, {"isolated": "keep"}), ({}, {"knn_k": 2}), ({}, {"knn_alpha": 0.0}),
            (FIELD, dict(FIELD, attr_layers=0)), (FIELD, dict(FIELD, attr_values="plain")),
            (FIELD, dict(FIELD, aggregator="gcn"))]  # knn_leave_out acts on training steps only: its own test


@pytest.mark.parametrize("base_kw,kw", VARIANTS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_each_ablation_switch_changes_the_output(tiny, base_kw, kw):
    base = _provider(tiny, **base_kw)
    p = _provider(tiny, **kw)
    p.tables.load_state_dict(base.tables.state_dict())
    with torch.no_grad():
        a, b = base.enhanced_tables(), p.enhanced_tables()
    diff = max(float((a[t] - b[t]).abs().max()) if t in b else float((a[t] - p.tables[t].weight).abs().max())
               for t in a)
    assert diff > 1e-4, kw


def test_eval_tables_are_cached_and_equal_the_uncached_computation(tiny):
    p = _provider(tiny, attr_mode="field")  # field mode: the genres table is enhanced too
    batch = _train_batch(tiny, np.arange(64))
    p.eval()
    with torch.no_grad():
        out = p(batch)
    assert p._cache is not None
    fresh = p.enhanced_tables()
    for f, t in (("user_id", "user_id"), ("hist_item_id", "item_id"), ("genres", "genres")):
        torch.testing.assert_close(out[f], torch.nn.functional.embedding(batch[f].long(), fresh[t]).detach())
    cached = p._cache["item_id"]
    with torch.no_grad():
        p(batch)
    assert p._cache["item_id"] is cached  # computed once
    # eval outputs do not depend on the batch's labels (no drops at evaluation)
    flipped = dict(batch, label=1 - batch["label"])
    with torch.no_grad():
        torch.testing.assert_close(p(flipped)["item_id"], out["item_id"])
    # invalidated by train() and by loading a state dict
    with torch.no_grad():
        p.tables["item_id"].weight.mul_(2)
    p.train()
    p.eval()
    with torch.no_grad():
        out2 = p(batch)
    assert not torch.allclose(out2["item_id"], out["item_id"])
    state = copy.deepcopy(p.state_dict())
    with torch.no_grad():
        p(batch)
    state["tables.item_id.weight"] *= 0.5
    p.load_state_dict(state)
    assert p._cache is None


def test_bad_parameters_are_clear_errors(tiny):
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    bad = [({"aggregator": "gat"}, "aggregator"), ({"graphs": "uv,kg"}, "unknown graph"),
           ({"attr_mode": "concat"}, "attr_mode"), ({"collab": "curriculum"}, "collab"),
           ({"layers": -1}, "layers"), ({"knn_k": 0}, "knn_k"), ({"knn_alpha": 2.0}, "knn_alpha"),
           ({"combine": "max"}, "combine"), ({"isolated": "drop"}, "isolated"), ({"layer": 2}, "unknown parameter"),
           ({"attr_values": "raw"}, "attr_values")]
    for kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            build_provider("dg", spec, 4, **kw)
    p = build_provider("dg", spec, 4)
    with pytest.raises(ConfigError, match="prepare"):
        p.enhanced_tables()


# ----- any model, learning --------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["din", "fignn", "deepfm"])
def test_dg_wraps_other_models(tiny, base):
    m = build_model(f"dg-{base}", FeatureSpec(tiny.schema, tiny.vocab_sizes), {}, dim=4, init_std=0.1)
    m.prepare(tiny)
    m.train()
    batch = _train_batch(tiny, np.arange(50))
    m(batch).logits.sum().backward()
    assert m.embedding.tables["user_id"].weight.grad.abs().sum() > 0
    assert m.embedding.tables["genres"].weight.grad.abs().sum() > 0


def test_dg_wraps_every_registered_model(tiny):
    """DG-x for every model of the registry: one training step reaches the graph-enhanced tables;
    a model without embedding vectors (LR) is a clear error instead of a silent no-op."""
    from ctrgraph.registry import MODELS

    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    batch = _train_batch(tiny, np.arange(50))
    wrapped = []
    for name in sorted(MODELS):
        if not MODELS[name].uses_embedding:
            with pytest.raises(ConfigError, match="no embedding vectors"):
                build_model(f"dg-{name}", spec, {}, dim=4)
            continue
        torch.manual_seed(0)
        m = build_model(f"dg-{name}", spec, {}, dim=4, init_std=0.1)
        m.prepare(tiny)
        m.train()
        out = m(batch)
        (out.logits.sum() + sum(out.aux.values(), torch.zeros(()))).backward()
        assert torch.isfinite(out.logits).all(), name
        assert m.embedding.tables["item_id"].weight.grad.abs().sum() > 0, name
        wrapped.append(name)
    assert len(wrapped) >= 20 and {"pnn", "din", "fignn", "graphfm", "dien"} <= set(wrapped)


def test_dg_pnn_learns_a_planted_signal(planted):
    torch.manual_seed(0)
    m = build_model("dg-pnn", FeatureSpec(planted.schema, planted.vocab_sizes), {}, dim=8, init_std=0.01)
    r = Trainer(TrainConfig(epochs=8, batch_size=256, lr=1e-2, patience=2, progress=False, num_threads=1)).fit(m, planted)
    assert r["test"]["auc"] > 0.75, r["test"]


def test_paper_protocol_targets_and_negatives():
    """§5.1.2: per user clicks T-2 / T-1 / T as train / valid / test targets, 10 non-clicked negatives each."""
    from ctrgraph.data.recipes.ml100k_dgenn import paper_protocol

    raw = tiny_raw()
    out = paper_protocol(raw, negatives=10, seed=3)
    c, oc = raw.columns, out.columns
    clicks = {}
    for u, v, t, y in zip(c["user_id"], c["item_id"], c["timestamp"], c["label"]):  # reference, per row
        if y:
            clicks.setdefault(u, []).append((t, v))
    users = [u for u, cl in clicks.items() if len(cl) >= 3]
    assert len(out) == 11 * 3 * len(users)
    year = dict(zip(c["item_id"], c["year"]))
    for split, back in ((0, 3), (1, 2), (2, 1)):
        m = out.split == split
        pos = m & (oc["label"] == 1)
        got = dict(zip(oc["user_id"][pos], oc["item_id"][pos]))
        assert got == {u: sorted(clicks[u])[-back][1] for u in users}
        neg = m & (oc["label"] == 0)
        assert neg.sum() == 10 * len(users)
        clicked = {(u, v) for u, cl in clicks.items() for _, v in cl}
        assert not any((u, v) in clicked for u, v in zip(oc["user_id"][neg], oc["item_id"][neg]))
        assert all(year[v] == y for v, y in zip(oc["item_id"][m], oc["year"][m]))  # negatives carry their own attributes
        n_hist = out.lengths["hist_item_id"][pos]
        assert (n_hist == np.array([min(len(clicks[u]) - back, 8) for u in oc["user_id"][pos]])).all()


def test_export_writes_a_plain_base_model_with_the_same_predictions(tmp_path):
    """§4.4: serving from the exported tables is the base model itself, with identical scores."""
    from ctrgraph.config import load_config
    from ctrgraph.runs.assemble import dataset_for, load_run, run_experiment
    from ctrgraph.runs.export import export_run
    from ctrgraph.train.trainer import predict_logits

    cfg = load_config(None, ["data.name=synthetic", "model.name=dg-pnn", "train.epochs=1", "train.progress=false",
                             "train.num_threads=1", "embedding.dim=8",
                             ("data.params={n_instances: 3000, n_users: 200, n_items: 300, n_categories: 5, "
                             "n_cities: 20, n_brands: 30}")])
    run_experiment(cfg, tmp_path / "run")
    info = export_run(tmp_path / "run", tmp_path / "export")
    assert info["model"] == "pnn" and {"user_id", "item_id"} <= set(info["enhanced_tables"])
    data = dataset_for(cfg)
    _, dg, schema, _ = load_run(tmp_path / "run")
    dg.prepare(data)
    pcfg, plain, _, _ = load_run(tmp_path / "export")
    assert pcfg.model.name == "pnn" and pcfg.embedding.provider == "plain"
    a, b = predict_logits(dg, data.split("test"), schema), predict_logits(plain, data.split("test"), schema)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    _, loaded, _, _ = load_run(tmp_path / "run")  # no prepare: served from the tables saved in best.pt
    np.testing.assert_allclose(predict_logits(loaded, data.split("test"), schema), a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="not empty"):
        export_run(tmp_path / "run", tmp_path / "export")


def test_uv_from_histories_only(tiny):
    """uv_targets=False: Y (uv and Eq. 8) from the training rows' histories only (the paper's protocol)."""
    from ctrgraph.graphs import user_item_graph

    tr = tiny.split("train")
    g = build_graph_data(tiny, uv_targets=False)
    nu, ni = tiny.vocab_sizes["user_id"], tiny.vocab_sizes["item_id"]
    want = user_item_graph(tr["user_id"], tr["hist_item_id"], nu, ni)
    assert (g.uv != want).nnz == 0
    assert (build_graph_data(tiny).uv != want).nnz > 0  # the default adds the train positives
    with pytest.raises(ConfigError, match="uv_histories"):
        build_graph_data(tiny, uv_histories=False, uv_targets=False)


# ----- the paper's protocol: rare positives, popular targets, uniform negatives ---------------------
def popular_clicks_raw(n_users=200, n_events=14, n_items=150, max_len=8, seed=0):
    """Click-only streams with Zipf item popularity (each user clicks an item at most once); history =
    the user's earlier clicks, most recent last. Input of ``paper_protocol`` (uniform negatives)."""
    rng = np.random.default_rng(seed)
    keys = -np.log(np.arange(1, n_items + 1))[None, :] + rng.gumbel(size=(n_users, n_items))
    items = np.argsort(-keys, axis=1)[:, :n_events]  # Gumbel top-k: popularity-weighted, no repeats
    users = np.repeat(np.arange(n_users), n_events)
    take = np.minimum(np.arange(n_events), max_len)[:, None]  # history length at each position
    pos = np.arange(n_events)[:, None] - take + np.arange(max_len)[None, :]  # [n_events, max_len]
    ok = np.arange(max_len)[None, :] < take
    hist = np.where(ok[None], items[:, np.clip(pos, 0, None)] + 100, 0)  # [n_users, n_events, max_len]
    hts = np.broadcast_to(np.where(ok, pos + 1000, 0), hist.shape)
    it = items.ravel()
    cols = {"user_id": users + 10, "item_id": it + 100, "age": users % 5, "year": it % 6,
            "hour": rng.integers(0, 24, users.size), "hist_item_id": hist.reshape(users.size, -1),
            "hist_ts": hts.reshape(users.size, -1), "timestamp": np.tile(np.arange(n_events), n_users) + 1000,
            "label": np.ones(users.size, dtype=np.int8)}
    fields = (
        Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("age", Kind.CATEGORICAL, Role.USER_ATTR), Field("year", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("hour", Kind.CATEGORICAL, Role.CONTEXT),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=max_len, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False), Field("label", Kind.NUMERIC, Role.LABEL),
    )
    lens = np.broadcast_to(take.ravel(), (n_users, n_events)).ravel().copy()
    return RawDataset(Schema(fields), cols, {"hist_item_id": lens, "hist_ts": lens.copy()},
                      np.zeros(users.size, dtype=np.int8), meta={"recipe": "popular-clicks"})


def test_popularity_clicks_history_is_the_earlier_clicks():
    raw = popular_clicks_raw(n_users=3, n_events=5, max_len=3)
    c = raw.columns
    for r in np.flatnonzero(c["user_id"] == 11):  # reference, per row
        earlier = c["item_id"][(c["user_id"] == 11) & (c["timestamp"] < c["timestamp"][r])][-3:]
        n = raw.lengths["hist_item_id"][r]
        assert list(c["hist_item_id"][r][:n]) == list(earlier) and not c["hist_item_id"][r][n:].any()


@pytest.mark.parametrize("prior", [False, True, "auto"])
def test_rare_positive_protocol_needs_the_prior_bias(prior):
    """ml100k-dgenn's inversion, planted: positives are popular, negatives uniform, base rate 1/11.
    Without the prior output bias, the base rate is learned through the embeddings and the symmetric
    propagation (Â 1 grows with the degree) turns 'lower every logit' into 'rank popular items last':
    dg-pnn's validation AUC after one epoch is below 0.5 (0.26-0.34 over seeds 0-2); with it, above 0.65."""
    from ctrgraph.data.recipes.ml100k_dgenn import paper_protocol
    from ctrgraph.embeddings.dg import DualGraphEmbedding

    assert DualGraphEmbedding.prior_bias_default  # what train.prior_bias=auto should use for dg models
    ds = encode(paper_protocol(popular_clicks_raw(), negatives=10, seed=0))
    torch.manual_seed(0)
    m = build_model("dg-pnn", FeatureSpec(ds.schema, ds.vocab_sizes), {}, dim=8, init_std=1e-4)
    r = Trainer(TrainConfig(epochs=1, batch_size=256, lr=1e-3, prior_bias=prior, progress=False,
                            num_threads=1)).fit(m, ds)
    valid = r["history"][0]["valid_auc"]
    assert (valid > 0.65) if prior else (valid < 0.45), valid  # "auto" must act as True for dg models


def test_drop_graph_equals_the_graph_rebuilt_without_the_dropped_pairs():
    """DropGraph.adjacency(drop) (degrees updated from the dropped pairs only) equals a DropGraph
    built from the matrix with those pairs' counts subtracted, for random drops with repeats."""
    rng = np.random.default_rng(3)
    n = 40
    a = sp.random(n, n, density=0.15, random_state=4, data_rvs=lambda k: rng.integers(1, 4, k)).toarray()
    a = np.triu(a, 1)
    a = sp.csr_matrix(a + a.T)
    for norm, iso in (("sym", 1.0), ("gcn", 0.0)):
        g = DropGraph(a, norm, iso)
        up = sp.triu(a, 1).tocoo()
        for _ in range(5):
            pick = rng.integers(0, up.nnz, 12)  # repeats subtract several
            ids = g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick]))
            b = sp.lil_matrix(a.astype(np.float64))
            for r, c in zip(up.row[pick], up.col[pick]):
                b[r, c] -= 1
                b[c, r] -= 1
            b = sp.csr_matrix(np.clip(b.toarray(), 0, None))
            want = DropGraph(b, norm, iso).adjacency().to_dense()
            torch.testing.assert_close(g.adjacency(ids).to_dense(), want, rtol=0, atol=0)


def _symmetric_graph_with_isolated_nodes(n: int, density: float, seed: int, sp_seed: int):
    """A random symmetric n x n graph (edge weights 1-2) whose nodes 0-2 are isolated, its upper
    triangle as COO (the candidate drops) and the generator, for the drops."""
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=density, random_state=sp_seed, data_rvs=lambda k: rng.integers(1, 3, k)).toarray()
    a = np.triu(a, 1)
    a[:3] = 0  # isolated nodes
    a[:, :3] = 0
    a = sp.csr_matrix(a + a.T)
    return a, sp.triu(a, 1).tocoo(), rng


def _operator_with_drops(g, up, rng, k: int):
    """g's operator for a step that drops k random upper-triangle edges of ``up`` (repeats possible)."""
    if not k:
        return g.operator(None)
    pick = rng.integers(0, up.nnz, k)
    return g.operator(g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick])))


def test_drop_graph_operator_equals_the_normalised_matrix_values_and_gradients():
    """DropGraph.operator(drop) (scales on the vectors, fixed 0/1 structure, dropped edges subtracted)
    applies the matrix of DropGraph.adjacency(drop): values and x-gradients, both normalisations,
    isolated nodes (isolated 1 and 0), random drops with repeats; its to_csr() is that matrix."""
    from ctrgraph.graphs import spmm

    n = 50
    a, up, rng = _symmetric_graph_with_isolated_nodes(n, 0.08, 5, 6)
    for norm, iso in (("sym", 1.0), ("gcn", 0.0), ("sym", 0.0)):
        g = DropGraph(a, norm, iso)
        for k in (0, 4, 20):
            pick = rng.integers(0, up.nnz, k)
            ids = g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick])) if k else None
            dense = g.adjacency(ids).to_dense().double()
            op = g.operator(ids)
            torch.testing.assert_close(op.to_csr().to_dense().double(), dense, rtol=1e-6, atol=1e-7)
            x = torch.randn(n, 4, dtype=torch.float32, requires_grad=True)
            up_g = torch.randn(n, 4)
            y = spmm(op, x)
            y.backward(up_g)
            torch.testing.assert_close(y.double(), dense @ x.detach().double(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(x.grad.double(), dense.T @ up_g.double(), rtol=1e-5, atol=1e-6)
            if k:  # dropping changes the result (the test can fail)
                assert not torch.allclose(dense, g.adjacency().to_dense().double())


# ----- the two modes: the paper's method (preset ``paper``) and the tuned default ----------------
def _light(n, x, layers):
    """LightGCN (Eq. 11) for ``layers`` layers, then the layer mean (Eq. 13)."""
    out = [x]
    for _ in range(layers):
        out.append(n @ out[-1])
    return np.mean(out, 0)


def _collab(p, g, zu, zv, layers=2):
    """Eqs. 16-21 (LightGCN, organised): uu / vv from z, then uv from [ẑ_U; ẑ_V]."""
    zu = _light(_dense_norm(g.uu.toarray(), False, 0.0), zu, layers)
    zv = _light(_dense_norm(g.vv.toarray(), False, 0.0), zv, layers)
    q = _light(_dense_norm(_bip(g.uv.toarray()), False, 0.0), np.vstack([zu, zv]), layers)
    return q[: zu.shape[0]], q[zu.shape[0]:]


def test_paper_preset_equals_the_papers_equations_two_layers(tiny):
    """``preset="paper"``: field-wise attribute graphs (Eqs. 11-14), attribute values from their own
    Eq. 13 (Eq. 15), then the organised collaborative stages (Eqs. 16-22); two LightGCN layers."""
    p = _provider(tiny, preset="paper")
    assert (p.attr_mode, p.aggregator, p.collab, p.combine, p.layers) == ("field", "lightgcn", "organized", "mean", 2)
    g = build_graph_data(tiny)
    W = {t: e.weight.detach().double().numpy() for t, e in p.tables.items()}
    want, zs = {}, {}
    for side, owner, fields, inc in (("u", "user_id", ["age", "job"], g.user_attr),
                                     ("i", "item_id", ["year", "genres"], g.item_attr)):
        per = []
        for f in fields:
            b = inc[f].toarray()
            h = _light(_dense_norm(_bip(b), False, 0.0), np.vstack([W[owner], W[f]]), 2)
            per.append(h[: b.shape[0]])
            want[f] = h[b.shape[0]:]
        zs[side] = np.mean(per, 0)  # Eq. 14
    want["user_id"], want["item_id"] = _collab(p, g, zs["u"], zs["i"])
    got = p.enhanced_tables()
    assert set(got) == set(want)
    for t, w in want.items():
        np.testing.assert_allclose(got[t].detach().double().numpy(), w, rtol=1e-4, atol=1e-6, err_msg=t)


def test_default_mode_equals_its_equations_two_layers(tiny):
    """The tuned default: z = W [e_id; mean attribute embedding per field] (Fig. 4 (i)), attribute
    value tables plain, then the same organised collaborative stages."""
    p = _provider(tiny)
    assert p.attr_mode == "linear"
    g = build_graph_data(tiny)
    zs = _linear_attribute_stage(p, g)
    want = dict(zip(("user_id", "item_id"), _collab(p, g, zs["user_id"], zs["item_id"])))
    got = p.enhanced_tables()
    assert set(got) == {"user_id", "item_id"}
    for t, w in want.items():
        np.testing.assert_allclose(got[t].detach().double().numpy(), w, rtol=1e-4, atol=1e-6, err_msg=t)


def test_paper_preset_changes_the_computation_and_yields_to_explicit_parameters(tiny):
    paper, default = _provider(tiny, preset="paper"), _provider(tiny)
    a, b = paper.enhanced_tables(), default.enhanced_tables()
    assert not torch.allclose(a["user_id"], b["user_id"])  # the ablation switch changes the computation
    back = _provider(tiny, preset="paper", attr_mode="linear")  # an explicit parameter wins over the preset
    np.testing.assert_allclose(back.enhanced_tables()["item_id"].detach().numpy(), b["item_id"].detach().numpy())
    with pytest.raises(ConfigError, match="no preset 'papr'"):
        _provider(tiny, preset="papr")


def _scaled_mm_autograd(op, x):
    """ScaledAdjacency.mm as it was written before its fused autograd node (the reference)."""
    from ctrgraph.graphs.propagate import _SpMM

    s, c = op.s.to(x.dtype)[:, None], op.diag.to(x.dtype)[:, None]
    xs = s * x
    y = _SpMM.apply(op.a01, op.a01, xs)
    if op.dead_rows is not None and op.dead_rows.numel():
        y = y.index_add(0, op.dead_rows, xs.index_select(0, op.dead_cols), alpha=-1)
    return s * y + c * x if op.has_diag else s * y


def test_scaled_adjacency_fused_node_equals_the_autograd_composition_bit_for_bit(monkeypatch):
    """ScaledAdjacency.mm (one autograd node, its own backward) gives the values and x-gradients of the
    composition s * (A (s x) - D (s x)) [+ c x] under autograd bit for bit, inside a 2-layer LightGCN
    whose layers are also read by the layer mean (so x's gradient sums several contributions); every
    normalisation / isolated choice (the diagonal term or not), with and without drops. PyTorch path
    (the native kernel sums rows in another order than MKL: its own bit-level tests follow)."""
    monkeypatch.setenv("CTRGRAPH_NATIVE", "0")
    n = 60
    a, up, rng = _symmetric_graph_with_isolated_nodes(n, 0.1, 7, 8)

    class _Ref:  # the operator with the reference mm
        def __init__(self, op):
            self.op = op

        def mm(self, x):
            return _scaled_mm_autograd(self.op, x)

    for norm, iso in (("sym", 0.0), ("sym", 1.0), ("gcn", 0.0), ("gcn", 1.0)):
        g = DropGraph(a, norm, iso)
        for k in (0, 30):
            op = _operator_with_drops(g, up, rng, k)
            x0, up_g = torch.randn(n, 8), torch.randn(n, 8)
            outs = []
            for adj in (op, _Ref(op)):
                x = x0.clone().requires_grad_()
                h = x * 2.0  # x's gradient also comes through a second path
                layers, cur = [h], h
                for _ in range(2):
                    cur = adj.mm(cur)
                    layers.append(cur)
                y = torch.stack(layers).sum(0) / 3 + x
                y.backward(up_g)
                outs.append((y.detach(), x.grad))
            assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), (norm, iso, k)


# ----- the native scaled product (graphs.native.scaled_spmm) and the fused LightGCN stage -----------
def _native_or_skip():
    from ctrgraph.graphs import native

    if native.spmm_kernel() is None:
        pytest.skip("native sparse-product kernel not available")
    return native


def _ordered_reference(op, x, mode, add=None, div=0.0):
    """What scaled_spmm computes, written out with torch ops in its order: each row's sum of s[c] x[c]
    in four partial sums (entry j of the row to sum j % 4, in order; then (p0 + p1) + (p2 + p3)), the dropped edges (mode 0: subtracted
    one by one; mode 1: their sum from zero, then added), the row scale, then (add + y) [/ div]."""
    s = op.s.to(x.dtype)[:, None]
    xs = s * x
    crow, col = op.a01.crow_indices().tolist(), op.a01.col_indices().tolist()
    y = torch.zeros_like(x)
    for r in range(x.shape[0]):
        part = [torch.zeros(x.shape[1], dtype=x.dtype) for _ in range(4)]
        for j in range(crow[r], crow[r + 1]):
            w = (j - crow[r]) % 4
            part[w] = part[w] + xs[col[j]]
        y[r] = (part[0] + part[1]) + (part[2] + part[3])
    rows, cols = op.dead_rows, op.dead_cols
    if rows is not None and rows.numel():
        if mode == 0:
            y = y.index_add(0, rows, xs.index_select(0, cols).neg())
        else:  # the backward's D^T: pairs swapped
            y = y + torch.zeros_like(xs).index_add_(0, cols, xs.index_select(0, rows).neg())
    y = y * s
    if add is None:
        return y
    z = add + y
    return y, (z / div if div else z)


@pytest.mark.parametrize("d", [3, 8, 16, 32])
def test_native_scaled_spmm_equals_its_documented_order_bit_for_bit(d):
    """scaled_spmm (AVX-512 / AVX2 loops where the CPU has them: d = 16 / 32 / 8; the portable loop
    otherwise, and when switched off) equals the written-out reference of its summation order bit for bit: both modes of the
    dropped-edge correction (repeated drops), isolated nodes, with and without the fused epilogue,
    float32 and float64; and equals the PyTorch composition (MKL's order) to rounding."""
    native = _native_or_skip()
    ext = native.spmm_kernel()
    n = 70
    a, up, rng = _symmetric_graph_with_isolated_nodes(n, 0.3, 9, 10)  # rows of ~20 entries
    g = DropGraph(a, "sym", 0.0)
    for k in (0, 25):
        pick = rng.integers(0, up.nnz, k)
        op = g.operator(g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick])) if k else None)
        crow, col = op.a01.crow_indices(), op.a01.col_indices()
        assert crow.dtype == torch.int32
        for dtype in (torch.float32, torch.float64):
            x, add = torch.randn(n, d, dtype=dtype), torch.randn(n, d, dtype=dtype)
            for mode in (0, 1):
                for simd in (True, False):
                    ext.set_simd(simd)
                    try:
                        y = native.scaled_spmm(crow, col, op.s, x, op.dead_rows, op.dead_cols, mode)
                        y2, z = native.scaled_spmm(crow, col, op.s, x, op.dead_rows, op.dead_cols, mode, add=add, div=3.0)
                        _, z1 = native.scaled_spmm(crow.long(), col.long(), op.s, x, op.dead_rows, op.dead_cols, mode,
                                                   add=add)
                    finally:
                        ext.set_simd(True)
                    ref = _ordered_reference(op, x, mode)
                    assert torch.equal(y, ref) and torch.equal(y2, ref), (d, k, dtype, mode, simd)
                    assert torch.equal(z, _ordered_reference(op, x, mode, add, 3.0)[1])
                    assert torch.equal(z1, _ordered_reference(op, x, mode, add)[1])
            if k:  # the drops change the result (the test can fail)
                assert not torch.allclose(y, native.scaled_spmm(crow, col, op.s, x))
            dense = g.adjacency(g.pair_ids(torch.as_tensor(up.row[pick]), torch.as_tensor(up.col[pick])) if k
                                else None).to_dense().to(dtype)
            torch.testing.assert_close(native.scaled_spmm(crow, col, op.s, x, op.dead_rows, op.dead_cols), dense @ x,
                                       rtol=1e-5, atol=1e-6)


def test_native_ordered_sum_equals_the_torch_additions_bit_for_bit():
    """ordered_sum (base + dense or gathered terms, in order; index == rows: a zero row) equals the torch
    additions it replaces bit for bit, signed zeros included (-0 + 0 is +0), float32 and float64."""
    native = _native_or_skip()
    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        n, d = 50, 16
        base = torch.randn(n, d, generator=gen, dtype=dtype)
        base[:5] = -0.0
        p1, p2 = torch.randn(7, d, generator=gen, dtype=dtype), torch.randn(4, d, generator=gen, dtype=dtype)
        dense = torch.randn(n, d, generator=gen, dtype=dtype)
        s1, s2 = torch.randint(0, 8, (n,), generator=gen), torch.randint(0, 5, (n,), generator=gen)
        s1[:5] = 7  # zero rows onto -0 entries
        want = base
        for t, sel in ((p1, s1), (dense, None), (p2, s2)):
            want = want + (t if sel is None else torch.cat([t, t.new_zeros(1, d)]).index_select(0, sel))
        got = native.ordered_sum(base, [p1, dense, p2], [s1, None, s2])
        assert torch.equal(got, want) and torch.equal(got.view(torch.int64 if dtype == torch.float64 else torch.int32),
                                                      want.view(torch.int64 if dtype == torch.float64 else torch.int32))
        assert torch.signbit(got[:5]).logical_not().any()
    with pytest.raises(RuntimeError):
        native.ordered_sum(base, [p1], [torch.full((n,), 9)])


def test_native_scaled_product_and_lightgcn_stage_gradcheck():
    """float64 gradcheck of ScaledAdjacency.mm and of the fused LightGCN stage (1-3 layers, mean and sum)
    on the native kernel: a random symmetric graph with isolated nodes, with and without drops."""
    from ctrgraph.graphs import lightgcn_layers

    _native_or_skip()
    n = 30
    a, up, rng = _symmetric_graph_with_isolated_nodes(n, 0.2, 3, 4)
    g = DropGraph(a, "sym", 0.0)
    for k in (0, 6):
        op = _operator_with_drops(g, up, rng, k)
        assert op.native(torch.zeros(n, 4, dtype=torch.float64)) and not op.has_diag
        x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op.mm, (x,))
        for layers in (1, 2, 3):
            for how in ("mean", "sum"):
                assert torch.autograd.gradcheck(lambda t, L=layers, h=how: lightgcn_layers(op, t, L, h), (x,))


def test_fused_lightgcn_stage_equals_the_layer_loop_bit_for_bit():
    """lightgcn_layers (one node: the layer products, Eq. 13's sums and division in the kernel's pass)
    gives the values and x-gradients of the layer loop over ScaledAdjacency.mm and combine_layers on
    the same kernel bit for bit, with x also read elsewhere; 1-3 layers, mean and sum, with drops."""
    from ctrgraph.graphs import LightGCN, combine_layers, lightgcn_layers

    _native_or_skip()
    n = 80
    a, up, rng = _symmetric_graph_with_isolated_nodes(n, 0.15, 11, 12)
    g = DropGraph(a, "sym", 0.0)
    for k in (0, 40):
        op = _operator_with_drops(g, up, rng, k)
        for layers in (1, 2, 3):
            for how in ("mean", "sum"):
                x0, up_g = torch.randn(n, 16), torch.randn(n, 16)
                outs = []
                for fused in (True, False):
                    x = x0.clone().requires_grad_()
                    h = x * 2.0
                    if fused:
                        y = lightgcn_layers(op, h, layers, how)
                    else:
                        ls = [h]
                        for _ in range(layers):
                            ls.append(op.mm(ls[-1]))
                        y = combine_layers(ls, how)
                    (y + x).backward(up_g)
                    outs.append((y.detach(), x.grad))
                assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), (k, layers, how)
                assert torch.equal(LightGCN(layers, how)(op, x0 * 2.0), outs[0][0])  # the module takes this path


def test_numpy_integer_steps_equal_the_torch_code(tiny, monkeypatch):
    """On the CPU the per-step integer work (target_drops, DropGraph.pair_ids, the dropped pairs of
    operator()) runs in numpy; other devices run the torch code. Both give the same ids (target_drops
    in another order, which no user of them sees), the same dropped edges (in the same order) and the
    same scales, bit for bit."""
    from ctrgraph.graphs import dg as graph_dg

    p = _provider(tiny)
    tr = tiny.split("train")
    rng = np.random.default_rng(11)
    for rows in (rng.choice(len(tr["label"]), 60, replace=False), np.flatnonzero(tr["label"] > 0)[:80]):
        batch = _train_batch(tiny, rows)
        outs = []
        for flag in (True, False):
            monkeypatch.setattr(graph_dg, "NUMPY_ON_CPU", flag)
            du, dv = p.target_drops(batch)
            ops = [p._g["uv"].operator(du), p._g["cf1"].operator(dv)]
            outs.append((du, dv, ops))
        (du, dv, ops), (du_t, dv_t, ops_t) = outs
        assert du.numel() and dv.numel()
        assert torch.equal(du.sort().values, du_t.sort().values) and torch.equal(dv.sort().values, dv_t.sort().values)
        for a, b in zip(ops, ops_t):
            assert torch.equal(a.dead_rows, b.dead_rows) and torch.equal(a.dead_cols, b.dead_cols)
            assert a.dead_rows.dtype == b.dead_rows.dtype == torch.int64
            assert torch.equal(a.s, b.s) and torch.equal(a.diag, b.diag)
    # repeated pair ids (counts > 1 in vv) and pairs that are not edges
    g = p._g["cf1"]
    a = torch.as_tensor(rng.integers(0, g.n, 200))
    b = torch.as_tensor(rng.integers(0, g.n, 200))
    got = []
    for flag in (True, False):
        monkeypatch.setattr(graph_dg, "NUMPY_ON_CPU", flag)
        ids = g.pair_ids(a, b)
        ids = torch.cat([ids, ids[:5], g.pair_ids(g.rows[g.pair_edges[:, 0]], g.cols[g.pair_edges[:, 0]])])
        op = g.operator(ids)
        got.append((ids, op.dead_rows, op.dead_cols, op.s))
    for x, y in zip(*got):
        assert torch.equal(x, y)


def test_drop_table_gives_the_ids_of_the_three_searches(tiny):
    """target_drops on the CPU looks each positive (u, v) up once in a table built from the fixed graphs
    (_drop_table); it returns the ids of the per-step searches (uv pair, sequence position, vv pairs;
    the path a per-step cf1 graph takes) in the same order, also for repeated and non-edge pairs."""
    p = _provider(tiny)
    tr = tiny.split("train")
    rng = np.random.default_rng(5)
    pos = np.flatnonzero(tr["label"] > 0)
    for rows in (rng.choice(len(tr["label"]), 60, replace=False), pos[:80], np.r_[pos[:10], pos[:10]]):
        batch = _train_batch(tiny, rows)
        du, dv = p.target_drops(batch)
        ru, rv = p._target_drops_np(batch, p._g["cf1"])  # the three searches, on the same (stored) graph
        assert du.dtype == dv.dtype == torch.int64
        assert torch.equal(du, ru) and torch.equal(dv, rv)
    assert du.numel() and dv.numel()
    batch = _train_batch(tiny, pos[:40])  # other items: most (u, v) then no uv edge, no sequence position
    batch["item_id"] = (batch["item_id"] % (len(tiny.vocabs["item_id"]) - 2)) + 2
    assert all(torch.equal(a, b) for a, b in zip(p.target_drops(batch), p._target_drops_np(batch, p._g["cf1"])))


def test_operator_scales_from_the_degree_table_equal_the_recomputed_ones(tiny):
    """DropGraph.operator on the CPU (LightGCN's literal norm) sets only the changed nodes' scales from a
    table of _scales over all degrees: bit for bit the scales of the degrees after the drop."""
    p = _provider(tiny)
    tr = tiny.split("train")
    batch = _train_batch(tiny, np.flatnonzero(tr["label"] > 0)[:80])
    du, dv = p.target_drops(batch)
    for g, d in ((p._g["uv"], du), (p._g["cf1"], dv)):
        deg, _ = g._drop(d)
        assert torch.equal(g.operator(d).s, g._scales(deg)) and not torch.equal(deg, g.deg0)
        assert torch.equal(g.operator(None).s, g._scales(g.deg0))
    v = torch.arange(0, 5000, dtype=torch.float32)[torch.randperm(5000)]
    g = DropGraph(sp.csr_matrix(np.ones((3, 3), dtype=np.float32)))
    g._scale_table = g._scales(torch.arange(5000, dtype=torch.float32)).numpy()
    assert torch.equal(torch.from_numpy(g._scale_table[v.long().numpy()]), g._scales(v))


@pytest.mark.parametrize("graphs", ["all", "uv", "uu,vv", "vv,uv"])
def test_native_step_operators_equal_target_drops_then_operator(tiny, graphs):
    """A training step's two operators from one native call (step_operators: dg_drops looks the positives
    up in the drop table and computes the dropped pairs and scales) equal target_drops followed by
    DropGraph.operator: the same dropped edges in the same order, the same scales (the same tensor where
    nothing is dropped), bit for bit; also for repeated positives, batches without positives and (u, v)
    without any edge. begin() takes it, and Eq. 22's tables and gradients are those of the reference path."""
    from ctrgraph.graphs import native

    if native.spmm_kernel() is None:
        pytest.skip("the native sparse-product kernel is not available")
    p = _provider(tiny, graphs=graphs)
    p.train()
    tr = tiny.split("train")
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(tr["label"] > 0), np.flatnonzero(tr["label"] <= 0)
    other = _train_batch(tiny, pos[:40])
    other["item_id"] = (other["item_id"] % (len(tiny.vocabs["item_id"]) - 2)) + 2
    batches = [_train_batch(tiny, r) for r in (rng.choice(len(tr["label"]), 60, replace=False), pos[:80],
                                               np.r_[pos[:10], pos[:10], pos[3:6]], neg[:30])] + [other]
    st = p._g
    seen = 0
    for batch in batches:
        batch["user_id"] = batch["user_id"].int()  # the loader's int32 ids
        ops = p.step_operators(batch)
        assert ops is not None
        du, dv = p.target_drops(batch)
        want = (st["cf1"].operator(dv) if "cf1" in st else None, st["uv"].operator(du) if "uv" in st else None)
        for got, ref in zip(ops, want):
            assert (got is None) == (ref is None)
            if ref is None:
                continue
            assert (got.dead_rows is None) == (ref.dead_rows is None)
            if ref.dead_rows is not None:
                seen += 1
                assert torch.equal(got.dead_rows, ref.dead_rows) and torch.equal(got.dead_cols, ref.dead_cols)
                assert got.dead_rows.dtype == got.dead_cols.dtype == torch.int64
            else:
                assert got.s is ref.s
            assert got.s.dtype == ref.s.dtype and torch.equal(got.s, ref.s)
            assert torch.equal(got.diag, ref.diag) and got.has_diag == ref.has_diag == False  # noqa: E712
            assert got.a01 is ref.a01
    assert seen
    batch = batches[1]
    runs = []
    for fast in (True, False):
        p.zero_grad()
        if not fast:
            p.step_operators = lambda b: None
        out = p.begin(batch)["enh"]
        gen = torch.Generator().manual_seed(2)
        sum((t * torch.randn(t.shape, generator=gen)).sum() for t in out.values()).backward()
        runs.append(({k: v.detach() for k, v in out.items()},
                     {n: q.grad.clone() for n, q in p.named_parameters() if q.grad is not None}))
    del p.step_operators
    (ta, ga), (tb, gb) = runs
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[n], gb[n]) for n in ga)


def test_native_step_operators_stand_aside_where_they_do_not_apply(tiny):
    """Other normalisations (GCN's centre term, isolated nodes kept) and drops turned off keep the
    reference path."""
    batch = _train_batch(tiny, np.arange(60))
    for kw in ({"aggregator": "gcn"}, {"isolated": "keep"}, {"drop_target_edges": False}):
        assert _provider(tiny, **kw).step_operators(batch) is None


# ----- the training step's cost paths (issue 20): the same numbers as the plain compositions ------------
@pytest.mark.parametrize("native", ["1", "0"])
def test_linear_attribute_node_equals_the_autograd_composition_bit_for_bit(tiny, native, monkeypatch):
    """The linear attribute stage as one autograd node (one-hot incidences applied as gathers; the sum's
    additions in the native ordered_sum where it is built, else torch ops) gives the values of
    e W_0^T + sum_f R_f (T_f W_f^T) and the gradients of every table and of W that autograd gives for
    that composition, bit for bit (categorical fields and a two-valued one, genres)."""
    from ctrgraph.graphs import spmm

    monkeypatch.setenv("CTRGRAPH_NATIVE", native)

    p = _provider(tiny, attr_mode="linear", graphs="attr")
    p.train()
    st = p._g
    assert all(m[2] is not None for m in st["lin_t"]["u"]) and st["lin_t"]["i"][1][2] is None
    gen = torch.Generator().manual_seed(0)
    got = p._attribute_stage({})
    ups = [torch.randn(z.shape, generator=gen) for z in got]
    sum((z * u).sum() for z, u in zip(got, ups)).backward()
    grads = {n: q.grad.clone() for n, q in p.named_parameters() if q.grad is not None}
    p.zero_grad()
    want = []
    for side, owner, fields in (("u", "user_id", p.uattr), ("i", "item_id", p.iattr)):
        w = p.attr_lin[side].weight.split(4, dim=1)
        out = p.tables[owner].weight @ w[0].t()
        for (r, r_t, _), f, wf in zip(st["lin_t"][side], fields, w[1:]):
            out = out + spmm(r, p.tables[f.table].weight @ wf.t(), r_t)
        want.append(out)
    sum((z * u).sum() for z, u in zip(want, ups)).backward()
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    ref = {n: q.grad for n, q in p.named_parameters() if q.grad is not None}
    assert set(grads) == set(ref) and len(ref) == 8
    for n in ref:
        assert torch.equal(grads[n], ref[n]), n


def test_provider_tables_pool_lazily_with_the_numbers_of_the_gathered_rows(tiny, monkeypatch):
    """In training, sequence fields of this step's Eq. 22 table (hist_item_id) and of a plain table (genres)
    stay lazy (``lookup_table``) and are pooled without the [B, L, d] gather: the field matrix and every
    parameter's gradient equal those of the gathered rows (``lookup_table`` off) bit for bit."""
    from ctrgraph.embeddings.base import EmbeddingProvider
    from ctrgraph.embeddings.dg import DualGraphEmbedding
    from ctrgraph.layers import native
    from ctrgraph.layers.lookup import LazyRows

    if native.kernel() is None:
        pytest.skip("the native layer kernels are not available")
    batch = _train_batch(tiny, np.arange(0, 300, 3))
    runs = []
    for lazy in (True, False):
        if not lazy:
            monkeypatch.setattr(DualGraphEmbedding, "lookup_table", EmbeddingProvider.lookup_table)
        p = _provider(tiny)
        p.train()
        eb = p(batch)
        raw = {n: dict.__getitem__(eb.values, n) for n in ("hist_item_id", "genres")}
        assert all(isinstance(v, LazyRows) == lazy for v in raw.values())
        E = eb.matrix()
        E.backward(torch.randn(E.shape, generator=torch.Generator().manual_seed(1)))
        runs.append((E.detach(), {n: q.grad for n, q in p.named_parameters() if q.grad is not None}))
    (ea, ga), (eb_, gb) = runs
    assert torch.equal(ea, eb_) and set(ga) == set(gb)
    for n in ga:
        assert torch.equal(ga[n], gb[n]), n


def test_plain_fields_of_a_graph_provider_take_the_batched_lookup_bit_for_bit(tiny, monkeypatch):
    """The dg provider's fields that no graph enhances join the one native lookup
    (EmbeddingProvider._single_lookups via plain_lookup); values and every table gradient equal the
    per-field lookups exactly."""
    from ctrgraph.layers.native import kernel
    if kernel() is None:
        pytest.skip("no native kernel")
    batch = _train_batch(tiny, np.arange(64))
    runs = []
    for batched in (True, False):
        p = _provider(tiny)
        p.train()
        step = p.begin(batch)
        plain = [t for _, t in p._own_table if p.plain_lookup(t, step)]
        enhanced = [t for _, t in p._own_table if not p.plain_lookup(t, step)]
        if batched:
            assert len(p._single_lookups(batch, step)) >= 2  # the batched path is taken
        else:
            monkeypatch.setattr(type(p), "_single_lookups", lambda self, b, s: {})
        torch.manual_seed(3)
        out = p(batch)
        vals = torch.cat([out.values[f.name].reshape(len(batch[f.name]), -1) for f in p.fields
                          if not f.is_sequence_like], 1)
        vals.pow(2).sum().backward()
        runs.append((vals.detach(), {n: e.weight.grad.clone() for n, e in p.tables.items()
                                     if e.weight.grad is not None}))
        monkeypatch.undo()
    assert plain and enhanced  # the tiny set has both kinds of field
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1].keys() == runs[1][1].keys()
    for n in runs[0][1]:
        assert torch.equal(runs[0][1][n], runs[1][1][n]), n
