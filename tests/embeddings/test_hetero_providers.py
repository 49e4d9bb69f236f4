"""DG-ENN Table 4 baselines (gcn, kgat, hgat providers): dense / per-node brute-force equations,
attention normalisation, the target-edge leakage guard, the knowledge-graph loader, switches,
eval cache, checkpoints, any base model, planted-signal learning, config errors."""
import copy
import gzip

import numpy as np
import pytest
import torch
from support_dg import (  # the DG-ENN test data and its leakage reference
    check_target_drop,
    tiny_raw,
)

from ctrgraph.config import TrainConfig
from ctrgraph.data.encode import encode
from ctrgraph.data.knowledge_graph import find_kg_files, load_knowledge_graph
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.registry import build_provider
from ctrgraph.graphs.hetero import RelationMatmul
from ctrgraph.graphs.dg import build_graph_data
from ctrgraph.errors import ConfigError, DataError
from ctrgraph.registry import build_model
from ctrgraph.train.trainer import Trainer

PROVIDERS = ("gcn", "kgat", "hgat")
lrelu = lambda t: np.where(t > 0, t, 0.2 * t)


@pytest.fixture(scope="module")
def tiny():
    return encode(tiny_raw())


@pytest.fixture(scope="module")
def kg_dir(tmp_path_factory, tiny):
    """A tiny knowledge graph next to the data: items 100-119 linked (raw ids), one unknown item
    (999), a duplicate link, entities for genres / actors, one triple between two items."""
    d = tmp_path_factory.mktemp("kg")
    links = [(100 + k, f"m.i{k}") for k in range(20)] + [(999, "m.unknown"), (100, "m.dup")]
    trip = [(f"m.i{k}", "film.genre", f"g{k % 3}") for k in range(20)]
    trip += [(f"a{k % 5}", "actor.film", f"m.i{k}") for k in range(0, 20, 2)]
    trip += [("m.unknown", "film.genre", "g1"), ("m.i1", "film.sequel", "m.i2"), ("m.dup", "film.genre", "g0")]
    with gzip.open(d / "toy.link.gz", "wt") as f:
        f.write("item_id:token\tentity_id:token\n" + "".join(f"{i}\t{e}\n" for i, e in links))
    with gzip.open(d / "toy.kg.gz", "wt") as f:
        f.write("head_id:token\trelation_id:token\ttail_id:token\n" + "".join("\t".join(t) + "\n" for t in trip))
    return d


def _provider(ds, name, seed=0, **kw):
    torch.manual_seed(seed)
    p = build_provider(name, FeatureSpec(ds.schema, ds.vocab_sizes), 4, init_std=0.5, **kw)
    p.prepare(ds)
    return p


def _train_batch(ds, rows):
    tr = ds.split("train")
    return {k: torch.as_tensor(np.asarray(v[rows])) for k, v in tr.items()}


def _np(t):
    return t.detach().double().numpy()


def _dense_graph(p, g):
    """Dense 0/1 adjacency over the provider's node layout, built block by block from the DG graphs."""
    lay = p.layout
    a = np.zeros((lay.n, lay.n))
    u, i = lay["user"], lay["item"]

    def put(m, r0, c0, mirror=True):
        m = (m.toarray() != 0).astype(float)
        a[r0: r0 + m.shape[0], c0: c0 + m.shape[1]] = np.maximum(a[r0: r0 + m.shape[0], c0: c0 + m.shape[1]], m)
        if mirror:
            a[c0: c0 + m.shape[1], r0: r0 + m.shape[0]] = np.maximum(a[c0: c0 + m.shape[1], r0: r0 + m.shape[0]], m.T)

    if "uv" in p.parts:
        put(g.uv, u.offset, i.offset)
    if "uu" in p.parts:
        put(g.uu, u.offset, u.offset)
    if "vv" in p.parts:
        put(g.vv, i.offset, i.offset)
    for b in lay.blocks:
        if b.kind in ("uattr", "iattr"):
            owner = u if b.kind == "uattr" else i
            put((g.user_attr if b.kind == "uattr" else g.item_attr)[b.name], owner.offset, b.offset)
    np.fill_diagonal(a, 0)
    return a


def _kipf(a):
    d = a.sum(1) + 1
    return (a + np.eye(len(a))) / np.sqrt(np.outer(d, d))


# ----- equations --------------------------------------------------------------------------------
def test_relation_matmul_equals_a_per_row_matrix_product():
    torch.manual_seed(0)
    rel = torch.randint(0, 5, (70,))
    rel[rel == 3] = 1  # a relation without rows
    x = torch.randn(70, 3, requires_grad=True)
    w = torch.randn(5, 4, 3, requires_grad=True)
    y = RelationMatmul(rel, 5, 3, 4)(x, w)
    want = torch.einsum("pkj,pj->pk", w[rel], x)
    torch.testing.assert_close(y, want)
    g = torch.randn(70, 4)
    got, ref = torch.autograd.grad((y * g).sum(), [x, w]), torch.autograd.grad((want * g).sum(), [x, w])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="expected"):
        RelationMatmul(rel, 5, 3, 4)(x[:5], w)


def test_gcn_equals_dense_kipf_equations(tiny):
    """One layer: H1 = LeakyReLU(Â H0 W), Â = D~^-1/2 (A + I) D~^-1/2 over all graphs as one graph."""
    p = _provider(tiny, "gcn", layers=1)
    a = _kipf(_dense_graph(p, build_graph_data(tiny)))
    x = _np(p.node_input())
    h = (x + lrelu(a @ x @ _np(p.w[0].weight).T)) / 2
    got = p.enhanced_tables()
    assert set(got) == {"user_id", "item_id", "age", "job", "year", "genres"}  # context (hour) plain
    for b in p.layout.blocks:
        np.testing.assert_allclose(_np(got[b.table]), h[b.offset: b.offset + b.size], rtol=1e-4, atol=1e-6)
    assert np.abs(h[p.layout["item"].offset]).max() == 0  # padding rows stay zero


def test_kgat_attention_is_a_softmax_per_head_equal_to_a_per_node_loop(tiny):
    p = _provider(tiny, "kgat")
    x = p.node_input()
    with torch.no_grad():
        rows, cols, rel, pi = (t.numpy() for t in p.attention(x))
    # the CKG edges: uv and item-attribute graphs, both directions, nothing else
    want = _dense_graph(p, build_graph_data(tiny))
    got = np.zeros_like(want)
    got[rows, cols] = 1
    np.testing.assert_array_equal(got, want)
    sums = np.bincount(rows, weights=pi, minlength=p.layout.n)
    np.testing.assert_allclose(sums[np.unique(rows)], 1.0, rtol=1e-5)
    e, er, wr = _np(x), _np(p.rel_emb), _np(p.rel_w)
    for h in np.unique(rows):  # reference, one head at a time
        k = np.flatnonzero(rows == h)
        s = np.array([(wr[r] @ e[t]) @ np.tanh(wr[r] @ e[h] + er[r]) for r, t in zip(rel[k], cols[k])])
        np.testing.assert_allclose(pi[k], np.exp(s - s.max()) / np.exp(s - s.max()).sum(), rtol=1e-4, atol=1e-7)


def test_kgat_bi_interaction_layer_equals_dense_formula(tiny):
    p = _provider(tiny, "kgat", layers=1, final="mean")
    x = p.node_input()
    with torch.no_grad():
        rows, cols, _, pi = (t.numpy() for t in p.attention(x))
    att = np.zeros((p.layout.n, p.layout.n))
    att[rows, cols] = pi
    e = _np(x)
    en = att @ e
    h = lrelu((e + en) @ _np(p.w1[0].weight).T) + lrelu((e * en) @ _np(p.w2[0].weight).T)
    got = p.enhanced_tables()
    for b in p.layout.blocks:
        np.testing.assert_allclose(_np(got[b.table]), ((e + h) / 2)[b.offset: b.offset + b.size], rtol=1e-4, atol=1e-6)
    proj = _provider(tiny, "kgat", layers=1)  # final="concat": W_p [e0; e1]
    proj.load_state_dict({k: v for k, v in p.state_dict().items()}, strict=False)
    want = np.hstack([e, h]) @ _np(proj.proj.weight).T
    np.testing.assert_allclose(_np(proj.enhanced_tables()["item_id"]), want[p.layout["item"].offset:][:p.layout["item"].size],
                               rtol=1e-4, atol=1e-6)


def test_hgat_type_and_node_attention_equal_a_per_node_loop(tiny):
    p = _provider(tiny, "hgat", layers=1)
    lay = p.layout
    a = _kipf(_dense_graph(p, build_graph_data(tiny)))
    x = p.node_input()
    with torch.no_grad():
        rows, cols, val = p.edges()
        alpha = _np(p.type_attention(0, x, rows, cols, val))
    # type attention: a distribution over the types present around each node
    nt = lay.node_type
    present = np.zeros((lay.n, lay.n_types), dtype=bool)
    present[np.nonzero(a)[0], nt[np.nonzero(a)[1]]] = True
    np.testing.assert_allclose(alpha.sum(1), 1.0, rtol=1e-6)
    assert (alpha[~present] == 0).all() and (present.sum(1) >= 1).all()
    assert present[lay["user"].offset + 2].sum() > 2  # users see users, items and their attribute types
    e = _np(x)
    mu, nu, w = _np(p.mu[0]), _np(p.nu[0]), _np(p.w[0])
    h = np.zeros_like(e)
    for v in range(lay.n):  # reference, one node at a time
        nb = np.flatnonzero(a[v])
        types = np.unique(nt[nb])
        h_tau = {t: a[v, nb[nt[nb] == t]] @ e[nb[nt[nb] == t]] for t in types}
        s = np.array([lrelu(mu[t] @ np.concatenate([e[v], h_tau[t]])) for t in types])
        al = dict(zip(types, np.exp(s - s.max()) / np.exp(s - s.max()).sum()))
        np.testing.assert_allclose(alpha[v, types], [al[t] for t in types], rtol=1e-4, atol=1e-7)
        b = np.array([lrelu(nu @ (al[nt[j]] * np.concatenate([e[v], e[j]]))) for j in nb])
        beta = np.exp(b - b.max()) / np.exp(b - b.max()).sum()
        h[v] = lrelu(sum(bj * (w[nt[j]] @ e[j]) for bj, j in zip(beta, nb)))
    got = p.enhanced_tables()
    for blk in lay.blocks:
        np.testing.assert_allclose(_np(got[blk.table]), ((e + h) / 2)[blk.offset: blk.offset + blk.size],
                                   rtol=1e-4, atol=1e-6)


# ----- leakage (research notes 2.3) ------------------------------------------------------------------
@pytest.mark.parametrize("name", PROVIDERS)
def test_training_instance_cannot_see_its_own_target_edge(tiny, name):
    """The batch's positive (u, v) edges and the users' own transitions into / out of v are absent
    from the step's propagation: embeddings and logits equal those of graphs rebuilt without them."""
    p = _provider(tiny, name, graphs="all")  # kgat: vv too, so its transition drops are exercised
    tr = tiny.split("train")
    rows = np.concatenate([np.flatnonzero(tr["label"] > 0)[5:45], np.flatnonzero(tr["label"] == 0)[:20]])
    batch = _train_batch(tiny, rows)
    ref = check_target_drop(p, tiny, batch, ref_drops=False)  # the rebuilt graphs hold no target edge already
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    m = build_model(f"{name}-pnn", spec, {}, dim=4)
    m.embedding = p
    m2 = copy.deepcopy(m)
    m2.embedding = ref
    m.train(), m2.train()
    torch.testing.assert_close(m(batch).logits, m2(batch).logits, rtol=1e-5, atol=1e-6)


# ----- the knowledge graph -----------------------------------------------------------------------------
def test_kg_loader_maps_items_through_the_vocabulary(kg_dir, tiny):
    vocab = tiny.vocabs["item_id"]
    kg = load_knowledge_graph(*find_kg_files(kg_dir), vocab)
    known = {int(r) for r in vocab.values}
    item_of = {f"m.i{k}": int(vocab.encode(np.array([100 + k]))[0]) for k in range(20) if 100 + k in known}
    names = dict(zip(kg.entities, range(kg.n_items, kg.n_items + kg.n_entities)))
    assert "m.unknown" in names and "m.dup" in names  # unknown item's and duplicate link's entities stay entities
    assert not set(item_of) & set(names)  # linked entities of known items are the items themselves
    assert list(kg.entities) == sorted(kg.entities) and list(kg.relations) == ["actor.film", "film.genre", "film.sequel"]
    node = {**item_of, **names}
    want = {(node[h], r, node[t]) for h, r, t in _toy_triples()}
    got = set(zip(kg.head.tolist(), kg.relations[kg.relation].tolist(), kg.tail.tolist()))
    assert got == want
    assert kg.linked_items == len(item_of) and kg.n_items == len(vocab)
    with pytest.raises(DataError, match="not found"):
        load_knowledge_graph(kg_dir / "missing.kg", kg_dir / "toy.link.gz", vocab)


def _toy_triples():
    trip = [(f"m.i{k}", "film.genre", f"g{k % 3}") for k in range(20)]
    trip += [(f"a{k % 5}", "actor.film", f"m.i{k}") for k in range(0, 20, 2)]
    return trip + [("m.unknown", "film.genre", "g1"), ("m.i1", "film.sequel", "m.i2"), ("m.dup", "film.genre", "g0")]


def test_kgat_knowledge_graph_switch_and_errors(tiny, kg_dir, tmp_path):
    with_kg = _provider(tiny, "kgat", kg=True, kg_dir=str(kg_dir))
    auto = _provider(tiny, "kgat", kg_dir=str(kg_dir))  # auto: files found
    no_kg = _provider(tiny, "kgat", kg=False, kg_dir=str(kg_dir))
    assert with_kg.entity.shape[0] == auto.entity.shape[0] > 0 and no_kg.entity.shape == (0, 4)
    assert any(n.startswith("kg:film.genre") for n in with_kg._g["rel_names"])
    no_kg.load_state_dict({k: v for k, v in with_kg.state_dict().items() if k.startswith("tables")}, strict=False)
    with torch.no_grad():
        a, b = with_kg.enhanced_tables(), no_kg.enhanced_tables()
    assert float((a["item_id"] - b["item_id"]).abs().max()) > 1e-4  # the switch changes the output
    assert _provider(tiny, "kgat")._g["n_nodes"] == no_kg._g["n_nodes"]  # auto without files: no KG
    with pytest.raises(ConfigError, match="kg=true"):
        _provider(tiny, "kgat", kg=True, kg_dir=str(tmp_path))
    # TransR's loss (KGAT Eq. 2) is an auxiliary loss that reaches the entity table
    with_kg.train()
    aux = with_kg(_train_batch(tiny, np.arange(32))).aux_losses()
    assert set(aux) == {"kgat_kg"} and torch.isfinite(aux["kgat_kg"])
    aux["kgat_kg"].backward()
    assert with_kg.entity.grad.abs().sum() > 0 and with_kg.rel_w.grad.abs().sum() > 0
    with_kg.eval()
    with torch.no_grad():
        assert with_kg(_train_batch(tiny, np.arange(32))).aux_losses() == {}


def test_kgat_checkpoint_loads_without_prepare(tiny, kg_dir):
    """The KG-sized parameters are created from the checkpoint; the saved tables serve evaluation."""
    p = _provider(tiny, "kgat", kg_dir=str(kg_dir))
    batch = _train_batch(tiny, np.arange(40))
    p.eval()
    with torch.no_grad():
        want = p(batch)
    q = build_provider("kgat", FeatureSpec(tiny.schema, tiny.vocab_sizes), 4, kg_dir=str(kg_dir))
    assert q.entity is None
    q.load_state_dict(p.state_dict())
    assert q.entity.shape == p.entity.shape and q.rel_w.shape == p.rel_w.shape
    q.eval()
    with torch.no_grad():
        got = q(batch)
    for f in ("user_id", "item_id", "genres", "hist_item_id"):
        torch.testing.assert_close(got[f], want[f])
    q.prepare(tiny)  # the same KG: the loaded parameters are kept
    with pytest.raises(ConfigError, match="shape"):
        q.install(build_graph_data(tiny), None)  # another relation set than the checkpoint's


# ----- switches, cache, errors ---------------------------------------------------------------------
VARIANTS = [("gcn", {}, {"graphs": "uv"}), ("gcn", {}, {"graphs": "attr"}), ("gcn", {}, {"combine": "last"}),
            ("gcn", {}, {"layers": 1}), ("hgat", {}, {"graphs": "uu,vv,uv"}), ("hgat", {}, {"combine": "last"}),
            ("hgat", {}, {"layers": 1}), ("kgat", {}, {"final": "mean"}), ("kgat", {}, {"graphs": "uv,iattr,vv"}),
            ("kgat", {}, {"graphs": "uv"}), ("kgat", {}, {"layers": 1})]


@pytest.mark.parametrize("name,base_kw,kw", VARIANTS, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_each_switch_changes_the_output(tiny, name, base_kw, kw):
    base = _provider(tiny, name, **base_kw)
    p = _provider(tiny, name, **kw)
    p.tables.load_state_dict(base.tables.state_dict())
    with torch.no_grad():
        a, b = base.enhanced_tables(), p.enhanced_tables()
    diff = max(float((a[t] - b[t]).abs().max()) if t in b else float((a[t] - p.tables[t].weight.detach()).abs().max())
               for t in a)
    assert diff > 1e-4, kw


@pytest.mark.parametrize("name", PROVIDERS)
def test_eval_tables_are_cached_and_equal_the_uncached_computation(tiny, name):
    p = _provider(tiny, name)
    assert p.prior_bias_default  # train.prior_bias=auto gives these the prior output bias, as dg
    batch = _train_batch(tiny, np.arange(64))
    p.eval()
    with torch.no_grad():
        out = p(batch)
        fresh = p.enhanced_tables()
    for f, t in (("user_id", "user_id"), ("hist_item_id", "item_id"), ("genres", "genres")):
        torch.testing.assert_close(out[f], torch.nn.functional.embedding(batch[f].long(), fresh[t]))
    cached = p._cache["item_id"]
    with torch.no_grad():
        p(dict(batch, label=1 - batch["label"]))  # no drops at evaluation: labels do not matter
    assert p._cache["item_id"] is cached
    with torch.no_grad():
        p.tables["item_id"].weight.mul_(2)
    p.train()
    p.eval()
    with torch.no_grad():
        assert not torch.allclose(p(batch)["item_id"], out["item_id"])


def test_bad_parameters_are_clear_errors(tiny):
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    bad = [("gcn", {"graphs": "uv,kg"}, "unknown graph"), ("gcn", {"layers": -1}, "layers"),
           ("gcn", {"combine": "max"}, "combine"), ("hgat", {"knn_k": 0}, "knn_k"),
           ("hgat", {"knn_alpha": 2.0}, "knn_alpha"), ("kgat", {"kg": "yes"}, "kg must be"),
           ("kgat", {"final": "sum"}, "final"), ("kgat", {"kg_weight": -1}, "kg_weight"),
           ("kgat", {"kg_batch": 0}, "kg_batch"), ("hgat", {"heads": 2}, "unknown parameter")]
    for name, kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            build_provider(name, spec, 4, **kw)
    for name in PROVIDERS:
        with pytest.raises(ConfigError, match="prepare"):
            build_provider(name, spec, 4).enhanced_tables()


# ----- any model, learning -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("base", ["pnn", "din"])
def test_wraps_any_model(tiny, name, base):
    m = build_model(f"{name}-{base}", FeatureSpec(tiny.schema, tiny.vocab_sizes), {}, dim=4, init_std=0.1)
    m.prepare(tiny)
    m.train()
    out = m(_train_batch(tiny, np.arange(50)))
    (out.logits.sum() + sum(out.aux.values())).backward()
    assert m.embedding.tables["user_id"].weight.grad.abs().sum() > 0
    assert m.embedding.tables["genres"].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PROVIDERS)
def test_learns_a_planted_signal(planted, name):
    torch.manual_seed(0)
    m = build_model(f"{name}-pnn", FeatureSpec(planted.schema, planted.vocab_sizes), {}, dim=8, init_std=0.01)
    r = Trainer(TrainConfig(epochs=6, batch_size=256, lr=1e-2, patience=2, progress=False, num_threads=1)).fit(m, planted)
    assert r["test"]["auc"] > 0.75, r["test"]
