"""Shared DG-ENN test data and leakage reference (tests/embeddings: the dg provider, its sampled
steps and the Table 4 providers)."""
import copy

import numpy as np
import scipy.sparse as sp
import torch

from ctrgraph.data.raw import RawDataset
from ctrgraph.data.schema import Field, Kind, Role, Schema
from ctrgraph.data.split import leave_last_out
from ctrgraph.graphs import user_sequences
from ctrgraph.graphs.dg import build_graph_data


def tiny_raw(n_users=30, n_events=14, n_items=40, max_len=8, seed=0):
    """Per user a time-ordered stream of events; history = the user's earlier positives (as ml100k-ctr),
    so train targets reappear in later histories and the transition graph holds them."""
    rng = np.random.default_rng(seed)
    ug = rng.integers(0, 3, n_users)
    ig = rng.integers(0, 3, n_items)
    users = np.repeat(np.arange(n_users), n_events)
    items = rng.integers(0, n_items, (n_users, n_events))
    ts = np.tile(np.arange(n_events), n_users) + 1000
    label = (rng.random((n_users, n_events)) < np.where(ig[items] == ug[:, None], 0.8, 0.25)).astype(np.int8)
    hist = np.zeros((n_users, n_events, max_len), dtype=np.int64)
    hts = np.zeros_like(hist)
    lens = np.zeros((n_users, n_events), dtype=np.int64)
    for j in range(1, n_events):  # loop over positions of a fixed-length stream (test data only)
        prev_pos = label[:, :j].astype(bool)
        order = np.argsort(~prev_pos, axis=1, kind="stable")  # positives first, in time order
        cnt = prev_pos.sum(1)
        take = np.minimum(cnt, max_len)
        idx = np.take_along_axis(order, np.clip(cnt[:, None] - take[:, None] + np.arange(max_len), 0, j - 1), 1)
        ok = np.arange(max_len)[None, :] < take[:, None]
        hist[:, j] = np.where(ok, np.take_along_axis(items[:, :j], idx, 1) + 100, 0)
        hts[:, j] = np.where(ok, idx + 1000, 0)
        lens[:, j] = take
    it = items.ravel()
    genres = np.stack([ig[it], (ig[it] + 1 + it % 2) % 5], 1)
    cols = {"user_id": users + 10, "item_id": it + 100, "age": (ug[users] * 2 + users % 2),
            "job": users % 4, "year": it % 6, "genres": genres, "hour": rng.integers(0, 24, users.size),
            "hist_item_id": hist.reshape(users.size, -1), "hist_ts": hts.reshape(users.size, -1),
            "timestamp": ts, "label": label.ravel()}
    fields = (
        Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("age", Kind.CATEGORICAL, Role.USER_ATTR), Field("job", Kind.CATEGORICAL, Role.USER_ATTR),
        Field("year", Kind.CATEGORICAL, Role.ITEM_ATTR), Field("genres", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=2),
        Field("hour", Kind.CATEGORICAL, Role.CONTEXT),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
        Field("hist_ts", Kind.SEQUENCE, Role.BEHAVIOR, max_len=max_len, group="hist_item_id", embed=False),
        Field("timestamp", Kind.NUMERIC, Role.CONTEXT, embed=False), Field("label", Kind.NUMERIC, Role.LABEL),
    )
    lengths = {"hist_item_id": lens.ravel(), "hist_ts": lens.ravel(), "genres": np.full(users.size, 2)}
    split = leave_last_out(users, ts)
    return RawDataset(Schema(fields), cols, lengths, split, meta={"recipe": "tiny-dg"})


def _train_batch(ds, rows):
    tr = ds.split("train")
    return {k: torch.as_tensor(np.asarray(v[rows])) for k, v in tr.items()}


def _graphs_without_targets(ds, batch, knn: bool = False):
    """Brute-force reference: the graphs with the batch positives' uv edges and their users' own
    transitions into and out of the target removed beforehand (``knn``: the uu kNN graph of Eq. 8
    rebuilt from Y without those pairs as well)."""
    from ctrgraph.graphs import builders, drop_edges

    g = build_graph_data(ds)
    pos = batch["label"].numpy() > 0
    u, v = batch["user_id"].numpy()[pos], batch["item_id"].numpy()[pos]
    g.uv = drop_edges(g.uv, u, v)
    if knn:
        y = g.knn_y.tolil()
        for uu, vi in zip(u, v):  # per positive (reference code)
            y[uu, vi] = 0
        g.knn_y = sp.csr_matrix(y)
        g.knn_y.eliminate_zeros()
        g.uu = builders.user_knn_graph(g.knn_y, g.knn_attr, k=10).tocsr()
    tr = ds.split("train")
    vals, offs, uids = user_sequences(tr["user_id"], tr["hist_item_id"], tr["hist_ts"])
    vv = g.vv.tolil()
    n_hit = 0
    for uu, vi in zip(u, v):  # per positive (reference code, a handful of rows)
        k = np.flatnonzero(uids == uu)
        seq = vals[offs[k[0]]: offs[k[0] + 1]] if k.size else np.zeros(0, np.int64)
        at = np.flatnonzero(seq == vi)
        if not at.size:
            continue
        n_hit += 1
        i = at[0]
        for j in (i - 1, i + 1):
            if 0 <= j < seq.size and seq[j] != vi:
                vv[vi, seq[j]] -= 1
                vv[seq[j], vi] -= 1
    g.vv = sp.csr_matrix(vv)
    g.vv.eliminate_zeros()
    return g, n_hit



def check_target_drop(p, tiny, batch, ref_drops: bool = True, knn: bool = False):
    """A training step's embeddings equal those of a copy installed on graphs rebuilt without the
    batch's target edges (``ref_drops=False``: that copy drops nothing itself; ``knn``: the uu kNN
    graph rebuilt too), and differ when the per-step drop is off. Returns the reference copy. Shared by
    the DG and Table 4 leakage tests."""
    p.train()
    out = p(batch)
    ref = copy.deepcopy(p)
    g, n_hit = _graphs_without_targets(tiny, batch, knn)
    assert n_hit > 10  # the vv part of the check is exercised
    ref.install(g)
    if not ref_drops:
        ref.drop_target_edges = False
    ref.train()
    out_ref = ref(batch)
    for f in ("user_id", "item_id", "hist_item_id", "age", "genres"):
        torch.testing.assert_close(out[f], out_ref[f], rtol=1e-5, atol=1e-6)
    # the switch matters: without the per-step drop, the own target edges change the embeddings
    leaky = copy.deepcopy(p)
    leaky.drop_target_edges = False
    out_leaky = leaky(batch)
    assert not torch.allclose(out_leaky["user_id"], out["user_id"], atol=1e-6)
    assert not torch.allclose(out_leaky["item_id"], out["item_id"], atol=1e-6)
    return ref
