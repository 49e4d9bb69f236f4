"""Sparse-gradient embeddings (embedding.sparse): sparse gradients, SparseAdam for the tables and Adam
for the rest in one optimizer, a planted signal learnt, checkpoint/resume round trips, clear errors for
what cannot work, and the dense default unchanged."""
from __future__ import annotations

import pytest
import torch

from ctrgraph.config import TrainConfig, load_config
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.registry import build_model
from ctrgraph.train.optim import SparseDenseAdam, build_optimizer, sparse_parameters
from ctrgraph.train.trainer import Trainer


def _model(planted, name="deepfm", sparse=True, **params):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    return build_model(name, spec, {"hidden": [16], **params}, dim=4, init_std=0.01, sparse=sparse)


def _fit(planted, run_dir=None, resume=False, name="deepfm", sparse=True, **kw):
    model = _model(planted, name, sparse)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 512, "lr": 1e-2, "patience": 0, "progress": False, **kw})
    return model, Trainer(cfg, run_dir).fit(model, planted, resume=resume)


def _batch(planted, n=64):
    from ctrgraph.data.loader import BatchLoader

    return next(iter(BatchLoader(planted.split("train"), planted.schema, n, shuffle=False)))


@pytest.mark.parametrize("name", ["deepfm", "din"])
def test_tables_get_sparse_gradients_and_sparse_adam_updates_used_rows_only(planted, name):
    model = _model(planted, name)
    tables = sparse_parameters(model)
    # the provider's tables and, for DeepFM, the first-order term's 1-d tables
    assert len(tables) == len(planted.schema.tables) * (2 if name == "deepfm" else 1)
    opt = build_optimizer(model, TrainConfig(lr=0.01))
    assert isinstance(opt, SparseDenseAdam) and [g["kind"] for g in opt.param_groups] == ["dense", "sparse"]
    batch = _batch(planted)
    before = model.embedding.tables["item_id"].weight.detach().clone()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch).logits, batch["label"]).backward()
    for p in tables:
        assert p.grad is not None and p.grad.is_sparse
    assert all(not p.grad.is_sparse for p in model.parameters() if p.grad is not None and
               all(p is not t for t in tables))
    opt.step()
    w = model.embedding.tables["item_id"].weight
    st = opt.state[w]
    assert set(st) >= {"step", "exp_avg", "exp_avg_sq"}  # SparseAdam's state for the table
    used = torch.unique(torch.cat([batch["item_id"].flatten(), batch["hist_item_id"].flatten()]))
    moved = (w.detach() != before).any(dim=1)
    assert moved[used[used > 0]].all()
    unused = torch.ones(w.shape[0], dtype=torch.bool)
    unused[used] = False
    assert not moved[unused].any()  # lazy: rows the batch did not use are untouched
    dense = next(p for p in model.mlp.parameters())
    assert set(opt.state[dense]) >= {"step", "exp_avg", "exp_avg_sq"}  # Adam's state for the rest


def test_sparse_deepfm_learns_the_planted_signal_like_dense(planted):
    """The planted click model is learnt (test AUC 0.60 after one epoch, > 0.75 after six), as
    closely as by dense tables with Adam (measured: 0.7725 vs 0.7739 after eight epochs)."""
    _, dense = _fit(planted, sparse=False, epochs=6)
    model, sparse = _fit(planted, epochs=6)
    assert sparse["test"]["auc"] > 0.75
    assert abs(sparse["test"]["auc"] - dense["test"]["auc"]) < 0.01
    assert all(p.grad is None or p.grad.is_sparse for p in sparse_parameters(model))


def test_resume_round_trips_both_optimizers(planted, tmp_path):
    """Interrupted after 2 epochs and resumed to 4 (with a learning-rate decay): the numbers of the
    uninterrupted run; the checkpoint holds Adam's and SparseAdam's state."""
    full, rf = _fit(planted, tmp_path / "full", epochs=4, lr_decay=0.7)
    _fit(planted, tmp_path / "cut", epochs=2, lr_decay=0.7)
    ck = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    groups = ck["optimizer"]["param_groups"]
    assert [g["kind"] for g in groups] == ["dense", "sparse"]
    n_state = len(ck["optimizer"]["state"])
    assert n_state == len(groups[0]["params"]) + len(groups[1]["params"])
    assert groups[1]["lr"] == pytest.approx(1e-2 * 0.7 ** 2)
    res, rr = _fit(planted, tmp_path / "cut", resume=True, epochs=4, lr_decay=0.7)
    assert rr["test"] == rf["test"] and rr["epochs_run"] == 4
    assert [h["lr"] for h in rr["history"]] == pytest.approx([1e-2 * 0.7 ** k for k in range(1, 5)])  # logged after the decay
    for (k, a), (_, b) in zip(full.state_dict().items(), res.state_dict().items()):
        assert torch.allclose(a, b), k


def test_embedding_l2_works_with_sparse_tables(planted):
    _, plain = _fit(planted, epochs=1)
    _, l2 = _fit(planted, epochs=1, embedding_l2=1.0)
    assert l2["history"][0]["train_loss"] != plain["history"][0]["train_loss"]


def test_what_cannot_work_is_refused_clearly(planted):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    with pytest.raises(ConfigError, match="'dg' provider.*plain provider only"):
        build_model("dg-pnn", spec, {}, dim=4, sparse=True)
    with pytest.raises(ConfigError, match="SparseAdam has no weight decay"):
        load_config(None, ["embedding.sparse=true", "train.weight_decay=0.01"])
    with pytest.raises(ConfigError, match="grad_clip is not supported"):
        load_config(None, ["embedding.sparse=true", "train.grad_clip=1.0"])
    model = _model(planted)
    with pytest.raises(ConfigError, match="SparseAdam has no weight decay"):
        build_optimizer(model, TrainConfig(weight_decay=0.01))
    with pytest.raises(ConfigError, match="grad_clip"):
        build_optimizer(model, TrainConfig(grad_clip=1.0))


def test_dense_default_is_plain_adam(planted):
    model = _model(planted, sparse=False)
    assert not sparse_parameters(model)
    opt = build_optimizer(model, TrainConfig(lr=0.01, weight_decay=0.001))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.001
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == len(list(model.parameters()))


def _sparse_adam_pair(V=50, d=3, lr=1e-2):
    from ctrgraph.train.optim import LazyAdam

    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(V, d))
    w2 = torch.nn.Parameter(w1.detach().clone())
    return w1, w2, torch.optim.SparseAdam([w1], lr=lr), LazyAdam([w2], lr=lr)


@pytest.mark.parametrize("coalesced", [False, True])
def test_lazy_adam_equals_torch_sparse_adam(coalesced):
    """LazyAdam (index-based rows) against torch.optim.SparseAdam over steps with repeated ids in a
    step (summed), rows unused for several steps, and the table's first and last rows."""
    V, d = 50, 3
    w1, w2, o1, o2 = _sparse_adam_pair(V, d)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        ids = torch.randint(0, V // (1 + step % 3), (40,), generator=g)
        ids[:2] = torch.tensor([0, V - 1]) if step % 5 == 0 else ids[:2]
        vals = torch.randn(40, d, generator=g)
        grad = torch.sparse_coo_tensor(ids[None], vals, (V, d))
        if coalesced:
            grad = grad.coalesce()
        for w, o in ((w1, o1), (w2, o2)):
            o.zero_grad()
            w.grad = grad.clone()
            o.step()
        torch.testing.assert_close(w2, w1, rtol=1e-5, atol=1e-6)  # duplicates summed in another order
    s1, s2 = o1.state[w1], o2.state[w2]
    assert s1["step"] == s2["step"] == 30
    torch.testing.assert_close(s2["exp_avg"], s1["exp_avg"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s2["exp_avg_sq"], s1["exp_avg_sq"], rtol=1e-5, atol=1e-6)
    o1.load_state_dict(o2.state_dict())  # the same state layout as SparseAdam's


def test_lazy_adam_is_torch_sparse_adam_bit_for_bit_on_distinct_rows():
    """Without duplicate rows in a step (nothing to sum) the same operations run in the same order."""
    w1, w2, o1, o2 = _sparse_adam_pair()
    for step in range(10):
        ids = torch.randperm(50, generator=torch.Generator().manual_seed(step))[:20]
        grad = torch.sparse_coo_tensor(ids[None], torch.randn(20, 3), (50, 3)).coalesce()
        for w, o in ((w1, o1), (w2, o2)):
            o.zero_grad()
            w.grad = grad.clone()
            o.step()
    assert torch.equal(w1, w2)
    assert torch.equal(o1.state[w1]["exp_avg_sq"], o2.state[w2]["exp_avg_sq"])


@pytest.mark.parametrize("n_rows", [30, 100_000])  # marked rows / sorted ids (unique_rows' two ways)
def test_row_sparse_lookup_gradient_equals_nn_embedding_sparse(n_rows):
    from ctrgraph.layers.lookup import embedding_rows

    torch.manual_seed(0)
    emb = torch.nn.Embedding(n_rows, 4, padding_idx=0, sparse=True)
    ids = torch.randint(0, 30, (64, 7))
    ids[:, -2:] = 0  # padding
    g = torch.randn(64, 7, 4)
    out = embedding_rows(emb, ids)
    assert torch.equal(out, emb(ids))
    out.backward(g)
    ours, emb.weight.grad = emb.weight.grad, None
    emb(ids).backward(g)
    ref = emb.weight.grad.coalesce()
    rows = ours._indices()[0]
    assert bool((rows[1:] > rows[:-1]).all()) and 0 not in rows.tolist()  # each row once, in order, no padding
    assert torch.equal(ours._indices(), ref._indices())
    torch.testing.assert_close(ours._values(), ref._values(), rtol=1e-5, atol=1e-5)  # summed in another order


def test_sparse_pooled_table_gradient_is_the_dense_kernels_rows():
    """A sequence field of a sparse table pooled by the native kernel: its row-sparse gradient holds
    exactly the rows of the dense-table kernel's gradient that the batch used (padding row left out)."""
    from ctrgraph.layers.native import kernel, pooled_table

    if kernel() is None:
        pytest.skip("native kernel not built")
    torch.manual_seed(0)
    weight = torch.randn(1000, 8, requires_grad=True)
    ids = torch.randint(0, 1000, (32, 20))
    ids[:, 15:] = 0
    w = (ids != 0).float() / (ids != 0).sum(1, keepdim=True).clamp_min(1)
    g = torch.randn(32, 8)
    dense = torch.autograd.grad(pooled_table(w, weight, ids, 0), weight, g)[0]
    sparse = torch.autograd.grad(pooled_table(w, weight, ids, 0, sparse=True), weight, g)[0]
    assert sparse.is_sparse
    rows = sparse._indices()[0]
    assert torch.equal(rows, torch.unique(ids[ids != 0]))
    assert torch.equal(sparse._values(), dense[rows])
    assert torch.equal(sparse.to_dense(), dense)


def test_sparse_model_step_matches_nn_embedding_sparse_path(planted):
    """One DeepFM step with sparse tables: the LazyRows / row-sparse path gives the gradients of the
    plain nn.Embedding(sparse=True) lookups (to float tolerance) and the same updated parameters."""
    from ctrgraph.embeddings.base import EmbeddingProvider

    batch = _batch(planted, 256)
    m1, m2 = _model(planted), _model(planted)
    m2.load_state_dict(m1.state_dict())
    for mod in m2.modules():  # the reference: torch's own sparse lookups, no lazy pooling
        if isinstance(mod, EmbeddingProvider):
            mod.lookup = lambda table, ids, step, mod=mod: mod.tables[table](ids)
            mod.lookup_table = lambda table, step: None
    for m in (m1, m2):
        opt = build_optimizer(m, TrainConfig(lr=1e-2))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(batch).logits, batch[planted.schema.label])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (k, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6, msg=k)
