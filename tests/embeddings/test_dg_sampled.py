"""DG-ENN neighbour sampling (§4.4, provider parameter ``fanouts``): exact above the largest degree,
unbiased for LightGCN below it, the per-step leakage drops hold in the sampled blocks, only the
looked-up rows are computed, models train, bad fan-outs are clear errors."""
import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.encode import encode
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.registry import build_provider
from ctrgraph.embeddings.dg_sampled import parse_fanouts
from ctrgraph.graphs.dg import build_graph_data
from ctrgraph.errors import ConfigError
from ctrgraph.graphs.sampling import sample_csr
from ctrgraph.registry import build_model
from ctrgraph.train.trainer import Trainer
from support_dg import _graphs_without_targets, _train_batch, tiny_raw

BIG = [10_000, 10_000]  # above every degree of the tiny graphs: exact


@pytest.fixture(scope="module")
def tiny():
    return encode(tiny_raw())


@pytest.fixture(autouse=True)
def _one_thread():
    """Many small sparse ops: on a shared machine intra-op threads cost ~20x (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def batch(tiny):
    """40 positives (their own uv edges and transitions are dropped per step) and 20 negatives."""
    tr = tiny.split("train")
    rows = np.concatenate([np.flatnonzero(tr["label"] > 0)[5:45], np.flatnonzero(tr["label"] == 0)[:20]])
    return _train_batch(tiny, rows)


def _pair(tiny, fanouts, seed=0, **kw):
    """(whole-graph provider, the same provider with ``fanouts``), both in training mode."""
    torch.manual_seed(seed)
    p = build_provider("dg", FeatureSpec(tiny.schema, tiny.vocab_sizes), 4, init_std=0.5, **kw)
    p.prepare(tiny)
    p.train()
    q = copy.deepcopy(p)
    q.fanouts = fanouts
    return p, q


FIELDS = ("user_id", "item_id", "hist_item_id")
CONFIGS = [{}, dict(aggregator="gcn"), dict(aggregator="ngcf"), dict(aggregator="gcn", isolated="keep"),
           dict(combine="sum"), dict(collab="sum"), dict(collab="attention", aggregator="ngcf"),
           dict(attr_mode="field"), dict(attr_mode="mixed", aggregator="gcn"), dict(graphs="uv"),
           dict(graphs="uu,vv"), dict(graphs="vv,uv", aggregator="gcn"), dict(graphs="uu,uv"),
           dict(graphs="attr"), dict(layers=1), dict(layers=3)]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_fanouts_above_the_max_degree_equal_the_whole_graph(tiny, batch, kw):
    """Outputs and gradients of a training step (drops on) equal the whole-graph step's."""
    p, q = _pair(tiny, BIG[:1] * kw.get("layers", 2), **kw)
    assert max([int(v.crow.diff().max()) for v in q._views().values()], default=0) < BIG[0]
    assert kw.get("graphs") == "attr" or any(d is not None and d.numel() for d in p.target_drops(batch))
    a, b = p(batch), q(batch)
    fields = FIELDS + (("genres", "age") if kw.get("attr_mode") in ("field", "mixed") else ())
    w = {f: torch.randn(a[f].shape, generator=torch.Generator().manual_seed(1)) for f in fields}
    for f in fields:
        torch.testing.assert_close(b[f], a[f], rtol=1e-5, atol=1e-6)
    sum((a[f] * w[f]).sum() for f in fields).backward()
    sum((b[f] * w[f]).sum() for f in fields).backward()
    grads = [(n, x.grad, y.grad) for (n, x), y in zip(p.named_parameters(), q.parameters()) if x.grad is not None]
    assert grads and any(n.startswith("tables.user_id") for n, *_ in grads)
    for n, gx, gy in grads:
        torch.testing.assert_close(gy, gx, rtol=1e-4, atol=1e-6, msg=n)


def _draws(q, batch, n, fields=("user_id", "item_id")):
    with torch.no_grad():
        outs = [q(batch) for _ in range(n)]
    return {f: torch.stack([o[f] for o in outs]) for f in fields}


def _z(draws: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|mean of the draws - ref| in standard errors of the mean (exact entries: 0)."""
    se = draws.std(0) / draws.shape[0] ** 0.5
    return (draws.mean(0) - ref).abs() / (se + 1e-7)


def test_lightgcn_sampling_is_unbiased_and_gcn_is_not(tiny, batch):
    """LightGCN is linear in the sampled blocks, drawn independently hop by hop and stage by stage:
    the mean over draws converges to the whole-graph rows (|z| ~ half-normal). GCN's activation
    after a sampled aggregation is not: its mean stays off by many standard errors."""
    p, q = _pair(tiny, [2, 2])
    with torch.no_grad():
        ref = p(batch)
    d = _draws(q, batch, 600)
    for f, x in d.items():
        assert (x[0] - ref[f]).abs().max() > 1e-2  # one draw is not the whole graph
        z = _z(x, ref[f])
        assert z.max() < 5.0 and z.mean() < 1.2, (f, float(z.max()), float(z.mean()))
    p, q = _pair(tiny, [2, 2], aggregator="gcn")
    with torch.no_grad():
        ref = p(batch)
    z = torch.cat([_z(x, ref[f]).flatten() for f, x in _draws(q, batch, 300).items()])
    assert z.mean() > 2.0, float(z.mean())


def _removed_pairs(tiny, batch, n_u, off):
    """Brute force: global node pairs (uv space, uu/vv space) that dropping the batch's positives
    removes entirely (edges of the full graphs, absent from the graphs rebuilt without them)."""
    full = build_graph_data(tiny)
    rm, _ = _graphs_without_targets(tiny, batch)
    uv = sp.coo_matrix((full.uv != 0).astype(int) - (rm.uv != 0).astype(int))
    vv = sp.coo_matrix((full.vv != 0).astype(int) - (rm.vv != 0).astype(int))
    pairs = {(int(a), int(b) + n_u) for a, b in zip(uv.row[uv.data > 0], uv.col[uv.data > 0])}
    pairs_vv = {(int(a) + off, int(b) + off) for a, b in zip(vv.row[vv.data > 0], vv.col[vv.data > 0])}
    return pairs | {(b, a) for a, b in pairs}, pairs_vv


def _block_pairs(blocks_lists) -> set:
    out = set()
    for blocks in blocks_lists:
        for b in blocks:
            crow, col, w = b.adj.crow_indices(), b.adj.col_indices(), b.adj.values()
            row = torch.repeat_interleave(torch.arange(b.dst.numel()), crow.diff())
            on = w != 0
            out |= set(zip(b.dst[row[on]].tolist(), b.src[col[on]].tolist()))
    return out


def test_sampled_blocks_never_carry_a_positive_own_edge(tiny, batch):
    p, q = _pair(tiny, [4, 3])
    n_u = tiny.vocab_sizes["user_id"]
    drop_uv, drop_vv = _removed_pairs(tiny, batch, n_u, p._g["vv_offset"])
    assert len(drop_uv) > 40 and len(drop_vv) > 5
    leaky = copy.deepcopy(q)
    leaky.drop_target_edges = False
    seen_uv, seen_vv, leak_uv, leak_vv = set(), set(), set(), set()
    with torch.no_grad():
        for _ in range(30):
            blocks = q(batch).step["blocks"]
            seen_uv |= _block_pairs(blocks["uv"])
            seen_vv |= _block_pairs(blocks["cf1"])
            blocks = leaky(batch).step["blocks"]
            leak_uv |= _block_pairs(blocks["uv"])
            leak_vv |= _block_pairs(blocks["cf1"])
    assert len(seen_uv) > 150 and len(seen_vv) > 200  # the blocks hold most edges (uv: 284 directed) ...
    assert not seen_uv & drop_uv and not seen_vv & drop_vv  # ... but none of the dropped ones
    assert leak_uv & drop_uv and leak_vv & drop_vv  # without the drop they are drawn


def test_sampled_mean_matches_graphs_built_without_the_targets(tiny, batch):
    """End to end: the sampled estimate converges to the whole-graph rows of graphs from which the
    batch positives' edges were removed beforehand, not to those of the full (leaky) graphs."""
    p, q = _pair(tiny, [3, 2])
    ref = copy.deepcopy(p)
    ref.install(_graphs_without_targets(tiny, batch)[0])
    ref.drop_target_edges = False
    leaky = copy.deepcopy(p)
    leaky.drop_target_edges = False
    with torch.no_grad():
        want, bad = ref(batch), leaky(batch)
    d = _draws(q, batch, 600)
    for f, x in d.items():
        assert _z(x, want[f]).max() < 5.0, f
        assert _z(x, bad[f]).max() > 10.0, f


def test_only_the_looked_up_rows_are_computed(tiny, batch):
    p, q = _pair(tiny, [3, 2])
    step = q(batch).step
    users = torch.unique(batch["user_id"])
    items = torch.unique(torch.cat([batch["item_id"], batch["hist_item_id"].flatten()]))
    assert torch.equal(step["rows"]["user_id"][0], users) and torch.equal(step["rows"]["item_id"][0], items)
    for stage in ("uv", "cf1"):
        for blocks in step["blocks"][stage]:
            for b, f in zip(blocks, [2, 3]):  # input layer first: fanouts reversed
                assert b.src.numel() <= b.dst.numel() * (1 + f)
    # a 2-row batch with fan-out 1 touches a small part of the graph
    small = {k: v[:2] for k, v in batch.items()}
    q.fanouts = [1, 1]
    touched = {int(x) for bl in q(small).step["blocks"]["uv"] for b in bl for x in b.src}
    assert len(touched) < (tiny.vocab_sizes["user_id"] + tiny.vocab_sizes["item_id"]) / 3


def test_eval_keeps_whole_cached_tables(tiny, batch):
    p, q = _pair(tiny, [2, 1])
    p.eval(), q.eval()
    with torch.no_grad():
        a, b = p(batch), q(batch)
    assert b.step["rows"] == {} and q._cache is not None
    for f in FIELDS:
        torch.testing.assert_close(b[f], a[f])


@pytest.mark.parametrize("model", ["dg-pnn", "dg-din", "dg-dien"])
def test_models_train_steps_with_fanouts(tiny, model):
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    torch.manual_seed(0)
    m = build_model(model, spec, {}, dim=4, init_std=0.1, provider_params={"fanouts": "3,2"})
    m.prepare(tiny)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = m.embedding.tables["user_id"].weight.detach().clone()
    for step in range(2):
        batch = _train_batch(tiny, np.arange(step * 64, (step + 1) * 64))
        out = m(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["label"].float())
        loss = loss + sum(out.aux.values(), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert m.embedding.tables["genres"].weight.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(before, m.embedding.tables["user_id"].weight)
    n_items = torch.unique(torch.cat([batch["item_id"], batch["hist_item_id"].flatten()])).numel()
    if model == "dg-dien":  # its auxiliary loss looks up random negatives: computed on demand
        assert "dien_aux" in out.aux and out.views[0].step["rows"]["item_id"][0].numel() > n_items
    else:
        assert out.views[0].step["rows"]["item_id"][0].numel() == n_items


def test_dg_pnn_with_fanouts_learns_a_planted_signal(planted):
    torch.manual_seed(0)
    m = build_model("dg-pnn", FeatureSpec(planted.schema, planted.vocab_sizes), {}, dim=8, init_std=0.01,
                    provider_params={"fanouts": [5, 3]})
    cfg = TrainConfig(epochs=8, batch_size=256, lr=1e-2, patience=2, progress=False, num_threads=1)
    r = Trainer(cfg).fit(m, planted)
    assert r["test"]["auc"] > 0.75, r["test"]


def test_sample_csr_keeps_small_rows_and_draws_inside_large_ones():
    crow = torch.tensor([0, 2, 2, 9])  # degrees 2, 0, 7
    torch.manual_seed(0)
    pos, e, scale = sample_csr(crow, torch.tensor([0, 1, 2]), 3)
    assert pos.tolist() == [0, 0, 2, 2, 2] and e[:2].tolist() == [0, 1]
    assert ((e[2:] >= 2) & (e[2:] < 9)).all()
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.0, 7 / 3, 7 / 3, 7 / 3]))
    with pytest.raises(ValueError, match="fanout"):
        sample_csr(crow, torch.tensor([0]), 0)


def test_fanouts_parse_and_bad_values_are_clear_errors(tiny):
    assert parse_fanouts(None, 2) is None and parse_fanouts("none", 2) is None and parse_fanouts("", 2) is None
    assert parse_fanouts("10,5", 2) == parse_fanouts("[10, 5]", 2) == parse_fanouts([10, 5], 2) == [10, 5]
    assert parse_fanouts(7, 1) == [7]
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    bad = [([10], "one value per collaborative layer"), ("10,5,2", "one value per collaborative layer"),
           ([10, 0], ">= 1"), ("10,-1", ">= 1"), ("a,b", "integers"), ([True, 2], ">= 1"), ([2.5, 2], ">= 1"),
           (10, "one value per collaborative layer")]
    for val, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            build_provider("dg", spec, 4, fanouts=val)
    with pytest.raises(ConfigError, match="one value per collaborative layer"):
        build_provider("dg", spec, 4, fanouts=[5], layers=3)


def test_cf_fanouts_bound_the_uu_vv_stage_only(tiny, batch):
    """``cf_fanouts`` samples the uu/vv stage (Eqs. 16-18) with its own fan-outs; the uv stage keeps
    ``fanouts``; large cf_fanouts reproduce the whole-graph step as before."""
    def max_row(blocks):
        return max(int(b.adj.to_sparse_csr().crow_indices().diff().max()) for b in blocks)

    _, q = _pair(tiny, BIG)
    q.cf_fanouts = [1, 1]
    blocks = q(batch).step["blocks"]
    cf, uv = blocks["cf1"], blocks["uv"]
    assert cf and uv and all(max_row(bl) <= 1 for bl in cf)
    assert max(max_row(bl) for bl in uv) > 1  # the uv stage is not limited by cf_fanouts
    p, q2 = _pair(tiny, BIG)
    q2.cf_fanouts = list(BIG)
    torch.testing.assert_close(q2(batch)["user_id"], p(batch)["user_id"], rtol=1e-5, atol=1e-6)
    spec = FeatureSpec(tiny.schema, tiny.vocab_sizes)
    assert build_provider("dg", spec, 4, fanouts=[5, 3], cf_fanouts="2,2").cf_fanouts == [2, 2]
    with pytest.raises(ConfigError, match="cf_fanouts .* needs fanouts"):
        build_provider("dg", spec, 4, cf_fanouts=[2, 2])
    with pytest.raises(ConfigError, match="cf_fanouts needs one value per collaborative layer"):
        build_provider("dg", spec, 4, fanouts=[5, 3], cf_fanouts=[2])
