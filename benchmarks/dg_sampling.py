"""DG-ENN training-step cost: whole-graph propagation vs neighbour sampling (§4.4, ``fanouts``).

    PYTHONPATH=src python benchmarks/dg_sampling.py                       # 200k users, 50k items, 5M events
    PYTHONPATH=src python benchmarks/dg_sampling.py --events 500k --users 20k --items 5k   # quick

The graphs are built directly with numpy (no data set, no encoding): per user a behaviour stream
(log-normal activity, items drawn from a Zipf(``--zipf``) popularity, so head items have huge
degrees), uv = the distinct (user, item) pairs, vv = the undirected transition counts of each
stream (``graphs.transition_graph``), user attributes age (7 values) and city (Zipf over 2000), item
attributes category (100) and brand (Zipf over 5000). uu is a **stand-in** for the Eq. 8 kNN graph:
``--knn`` random other users per user, symmetrised (the same size and degree as the kNN graph; the
kNN build itself is not what is measured here).

One step = the provider's forward for a ``--batch``-row training batch (a random event per row:
its user and item, the user's previous ``--max-len`` items as history, label 1 with p 0.7, so the
positives' own edges are dropped per step) plus the backward of a random linear function of the
looked-up embeddings. Default provider: linear attribute stage, LightGCN, 2 layers, organised,
dim 16. Printed per mode: median forward / backward / step seconds over ``--steps`` batches (after
one warm-up step), the looked-up rows and the nodes / edges of the sampled blocks, and the peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch

from graphs import parse_n, zipf_draw  # benchmarks/graphs.py (this folder is on sys.path when run as a script)


def make_graphs(n_users: int, n_items: int, events: int, zipf: float, knn: int, seed: int = 0):
    """Streams and DG-ENN graphs; ids start at 2 (0 padding, 1 out-of-vocabulary)."""
    from ctrgraph.graphs.dg import DGGraphData, sequence_neighbours
    from ctrgraph.graphs import attribute_incidence, transition_graph, user_item_graph

    rng = np.random.default_rng(seed)
    nu, ni = n_users + 2, n_items + 2
    w = rng.lognormal(0, 1, n_users)
    lens = rng.multinomial(events, w / w.sum()).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    users = np.arange(2, nu, dtype=np.int64)
    items = (rng.permutation(n_items)[zipf_draw(rng, n_items, zipf, events)] + 2).astype(np.int64)
    ev_user = np.repeat(users, lens)
    uv = user_item_graph(ev_user, items, nu, ni).tocsr()
    vv = transition_graph((items, offsets), ni, weighted=True).tocsr()
    r = np.repeat(users, knn)
    c = rng.integers(2, nu, r.size)
    ok = r != c
    a = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (r[ok], c[ok])), shape=(nu, nu))
    uu = ((a + a.T) > 0).astype(np.float32).tocsr()
    uattr = {"age": attribute_incidence(users, rng.integers(2, 9, n_users), nu, 9),
             "city": attribute_incidence(users, zipf_draw(rng, 2000, 1.0, n_users) + 2, nu, 2002)}
    iids = np.arange(2, ni, dtype=np.int64)
    iattr = {"category": attribute_incidence(iids, rng.integers(2, 102, n_items), ni, 102),
             "brand": attribute_incidence(iids, zipf_draw(rng, 5000, 1.0, n_items) + 2, ni, 5002)}
    keys, prev, nxt = sequence_neighbours(items, offsets, users, ni)
    g = DGGraphData(nu, ni, uattr, iattr, uu, vv, uv, keys, prev, nxt)
    vocab = {"user_id": nu, "item_id": ni, "age": 9, "city": 2002, "category": 102, "brand": 5002}
    return g, vocab, (items, offsets, ev_user)


def make_batches(streams, g, n_batches: int, rows: int, max_len: int, seed: int = 1) -> list[dict]:
    items, offsets, ev_user = streams
    rng = np.random.default_rng(seed)
    user_attr = {f: np.asarray(m.argmax(1)).ravel() for f, m in g.user_attr.items()}  # one value per owner
    item_attr = {f: np.asarray(m.argmax(1)).ravel() for f, m in g.item_attr.items()}
    out = []
    for _ in range(n_batches):  # a handful of batches
        j = rng.integers(0, items.size, rows)
        u = ev_user[j]
        start = offsets[u - 2]
        idx = j[:, None] - max_len + np.arange(max_len)[None, :]
        hist = np.where(idx >= start[:, None], items[np.clip(idx, 0, None)], 0)
        b = {"user_id": u, "item_id": items[j], "hist_item_id": hist,
             "label": (rng.random(rows) < 0.7).astype(np.float32)}
        b.update({f: v[u] for f, v in user_attr.items()})
        b.update({f: v[items[j]] for f, v in item_attr.items()})
        out.append({k: torch.as_tensor(v) for k, v in b.items()})
    return out


def make_provider(vocab: dict, dim: int, max_len: int, **params):
    from ctrgraph.data.schema import FeatureSpec, Field, Kind, Role, Schema
    from ctrgraph.registry import build_provider

    fields = (Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
              Field("age", Kind.CATEGORICAL, Role.USER_ATTR), Field("city", Kind.CATEGORICAL, Role.USER_ATTR),
              Field("category", Kind.CATEGORICAL, Role.ITEM_ATTR), Field("brand", Kind.CATEGORICAL, Role.ITEM_ATTR),
              Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
              Field("label", Kind.NUMERIC, Role.LABEL))
    return build_provider("dg", FeatureSpec(Schema(fields), vocab), dim, init_std=0.01, **params)


def time_steps(p, batches: list[dict], weights: dict) -> dict:
    fwd, bwd, stats = [], [], []
    for i, b in enumerate([batches[0]] + batches):  # the first (warm-up) step is not counted
        t0 = time.perf_counter()
        out = p(b)
        t1 = time.perf_counter()
        loss = sum((out[f] * weights[f][: out[f].shape[0]]).sum() for f in weights)
        loss.backward()
        t2 = time.perf_counter()
        p.zero_grad(set_to_none=True)
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            if p.fanouts is not None:
                step = out.step
                bl = [blk for s in step["blocks"].values() for lst in s for blk in lst]
                stats.append((sum(int(x.src.numel()) for x in bl), sum(int(x.adj.values().numel()) for x in bl),
                              int(step["rows"]["user_id"][0].numel()), int(step["rows"]["item_id"][0].numel())))
    res = {"forward_s": statistics.median(fwd), "backward_s": statistics.median(bwd),
           "step_s": statistics.median([a + b for a, b in zip(fwd, bwd)])}
    if stats:
        s = np.median(np.asarray(stats), 0)
        res.update(block_src_nodes=int(s[0]), block_edges=int(s[1]), users_looked_up=int(s[2]),
                   items_looked_up=int(s[3]))
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=parse_n, default=parse_n("200k"))
    ap.add_argument("--items", type=parse_n, default=parse_n("50k"))
    ap.add_argument("--events", type=parse_n, default=parse_n("5m"))
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (medians)")
    ap.add_argument("--fanouts", default="10,5;5,3;20,10", help="';'-separated fan-out lists to time")
    ap.add_argument("--whole", action=argparse.BooleanOptionalAction, default=True, help="also time whole-graph steps")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    g, vocab, streams = make_graphs(a.users, a.items, a.events, a.zipf, a.knn)
    t1 = time.perf_counter()
    print(f"graphs: {a.users:,} users, {a.items:,} items, {a.events:,} events; nnz uv {g.uv.nnz:,}, "
          f"vv {g.vv.nnz:,}, uu {g.uu.nnz:,}; max degree uv (items) {int(np.diff(g.uv.tocsc().indptr).max()):,}; "
          f"built in {t1 - t0:.1f} s")
    batches = make_batches(streams, g, a.steps, a.batch, a.max_len)
    del streams
    t2 = time.perf_counter()
    base = make_provider(vocab, a.dim, a.max_len)
    base.install(g)
    base.train()
    del g
    print(f"provider install (normalised graph structures): {time.perf_counter() - t2:.1f} s; "
          f"batch {a.batch} rows, history <= {a.max_len}, dim {a.dim}, torch threads {a.threads}")
    gen = torch.Generator().manual_seed(2)
    weights = {f: torch.randn((a.batch,) + ((a.max_len,) if f == "hist_item_id" else ()) + (a.dim,), generator=gen)
               for f in ("user_id", "item_id", "hist_item_id")}
    modes = ([None] if a.whole else []) + [[int(x) for x in f.split(",")] for f in a.fanouts.split(";") if f.strip()]
    for fo in modes:
        p = copy.deepcopy(base)  # shares the graph state
        p.fanouts = fo
        t = time.perf_counter()
        r = time_steps(p, batches, weights)
        extra = "" if fo is None else (
            f"  looked-up rows {r['users_looked_up']:,} users + {r['items_looked_up']:,} items; "
            f"blocks: {r['block_src_nodes']:,} input nodes, {r['block_edges']:,} edges")
        name = "whole graph" if fo is None else f"fanouts {fo}"
        print(f"{name:>18}: step {r['step_s']:.3f} s (forward {r['forward_s']:.3f}, backward {r['backward_s']:.3f}; "
              f"median of {a.steps}, {time.perf_counter() - t:.0f} s in all){extra}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
