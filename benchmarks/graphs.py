"""Graph toolkit benchmark: build time and peak memory of every builder on synthetic behaviour logs.

    PYTHONPATH=src python benchmarks/graphs.py                 # 1M and 10M events
    PYTHONPATH=src python benchmarks/graphs.py --events 50m    # the 50M run (~4 GiB resident)

Logs are generated with numpy (``make_log``): ``events // 100`` users with log-normal activity,
items drawn from a Zipf(``--zipf``) popularity over ``events // 50`` items (so the head items are
shared by many users, the costly case for the user kNN), user attributes age (7), city (Zipf over
2000) and a multi-valued ``tags`` field (up to 3 of 50), item attributes category (100) and brand
(Zipf over 5000). Each size runs in its own subprocess.

Printed per size and builder: wall seconds (best of ``--repeats`` runs, at most 2 above 10M events:
the first run in a fresh process also pays for the first touch of its memory, which on a virtual
machine can cost as much as the build), peak traced memory (numpy/scipy allocations made during the call, tracemalloc) and the output's
non-zeros. The user kNN runs in its own process (its dense blocks are torch tensors): its peak is
the resident-set growth above its inputs. For co-occurrence and transitions also: the ratio
to a straightforward per-row Python implementation of the paper's algorithm on 1M events (timed at
1M only; at other sizes the Python time is extrapolated linearly and marked ``~``), and the ratio
to the floor, the time ``np.sort`` takes to sort once as many random 64-bit keys as there are
position pairs within the window, in wall time and in CPU time (user + system of the process,
best of the same runs: other jobs on a shared machine stretch the first, hardly the second). The
1-minute load average is printed before and after each size. Then: 3 LightGCN layers on a ~1M-edge
user-item graph with a 1024-row gather (forward + backward), against one DIN training step (forward,
backward, Adam) on a 1024-row batch of the ``synthetic`` recipe (max_len 50, embedding 16).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections import defaultdict

import numpy as np


def parse_n(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 10**3, "m": 10**6}.get(s[-1], 1)
    return int(float(s.rstrip("km")) * mult)


def zipf_draw(rng, n: int, s: float, size: int) -> np.ndarray:
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1)


def make_log(events: int, zipf: float, seed: int = 0) -> dict:
    """Per-user time-ordered behaviour sequences (ragged) plus attribute columns; ids start at 2."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, events // 100), max(100, events // 50)
    w = rng.lognormal(0, 1, n_users)
    lens = rng.multinomial(events, w / w.sum()).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    perm = rng.permutation(n_items)  # popularity rank -> item id
    items = (perm[zipf_draw(rng, n_items, zipf, events)] + 2).astype(np.int32)
    users = np.arange(2, n_users + 2)
    tags = rng.integers(0, 52, (n_users, 3))
    tags[tags < 2] = 0
    return {
        "n_users": n_users + 2, "n_items": n_items + 2, "items": items, "offsets": offsets,
        "users": users, "age": rng.integers(2, 9, n_users), "city": zipf_draw(rng, 2000, 1.0, n_users) + 2,
        "tags": tags, "item_ids": np.arange(2, n_items + 2),
        "category": rng.integers(2, 102, n_items), "brand": zipf_draw(rng, 5000, 1.0, n_items) + 2,
    }


# ----- straightforward per-row Python references (the papers' algorithms as written) ---------
def python_cooccurrence(items, offsets, delta: int, k: int):
    z = defaultdict(lambda: defaultdict(int))
    for s in range(len(offsets) - 1):
        b = items[offsets[s]:offsets[s + 1]].tolist()
        m = len(b)
        for c in range(m):
            gc = b[c]
            row = z[gc]
            for w in range(max(0, c - delta), min(c + delta, m - 1) + 1):
                if b[w] != gc:
                    row[b[w]] += 1
    return {i: sorted(r.items(), key=lambda t: (-t[1], t[0]))[:k] for i, r in z.items()}


def python_transitions(items, offsets):
    edges = set()
    for s in range(len(offsets) - 1):
        b = items[offsets[s]:offsets[s + 1]].tolist()
        for t in range(len(b) - 1):
            if b[t] != b[t + 1]:
                edges.add((b[t], b[t + 1]))
                edges.add((b[t + 1], b[t]))
    return edges


def timed(fn, *a, repeats: int = 1, **kw):
    """(output, best wall seconds and best CPU seconds over ``repeats`` untraced runs, peak traced
    bytes of one traced run). CPU time (user + system of this process) is the steadier figure on
    a shared machine: other jobs stretch the wall clock, not it."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*a, **kw)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        del out
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn(*a, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, best, best_cpu, peak


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def sort_floor(n_keys: int, repeats: int = 1) -> tuple[float, float]:
    """Best wall and CPU seconds of ``np.sort`` (in place) on ``n_keys`` random 64-bit keys."""
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**62, n_keys, dtype=np.int64)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        k = keys.copy()
        t0, c0 = time.perf_counter(), time.process_time()
        k.sort()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu


def knn_inputs(log):
    import ctrgraph.graphs as g

    uid = np.repeat(np.arange(log["offsets"].size - 1) + 2, np.diff(log["offsets"]))
    y = g.user_item_graph(uid, log["items"], log["n_users"], log["n_items"])
    inc = [g.attribute_incidence(log["users"], log[f], log["n_users"], int(np.max(log[f])) + 1)
           for f in ("age", "city", "tags")]
    return y, g.mixed_incidence(inc)[0]


def run_knn(events: int, zipf: float, device: str | None) -> dict:
    """User kNN alone (its dense blocks are torch tensors, invisible to tracemalloc): RSS-based peak."""
    import ctrgraph.graphs as g

    log = make_log(events, zipf)
    y, a = knn_inputs(log)
    del log
    before = current_rss_gib()
    t0 = time.perf_counter()
    knn = g.user_knn_graph(y, a, 10, device=device)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"s": dt, "peak_gib": peak - before, "rss_before_gib": before, "nnz": int(knn.nnz),
            "users": int(y.shape[0] - 2), "interactions": int(y.nnz)}


def run_size(events: int, zipf: float, python_ref: bool, repeats: int) -> dict:
    import ctrgraph.graphs as g
    from ctrgraph.graphs._util import remaining_in_sequence

    log = make_log(events, zipf)
    items, off = log["items"], log["offsets"]
    res: dict = {"events": events, "users": log["n_users"] - 2, "items": log["n_items"] - 2, "builders": {}}
    B = res["builders"]

    def rec(name, fn, *a, **kw):
        out, dt, cpu, peak = timed(fn, *a, repeats=repeats, **kw)
        B[name] = {"s": dt, "cpu_s": cpu, "peak_gib": peak / 2**30,
                   "nnz": int(out[0].nnz if isinstance(out, tuple) else out.nnz)}
        return out

    rec("cooccurrence(d=2,K=8)", g.cooccurrence_graph, (items, off), log["n_items"], 2, 8)
    rec("transitions", g.transition_graph, (items, off), log["n_items"])
    rec("transitions(weighted,directed)", g.transition_graph, (items, off), log["n_items"], True, True)
    uid = np.repeat(np.arange(off.size - 1) + 2, np.diff(off))
    y = rec("user_item", g.user_item_graph, uid, items, log["n_users"], log["n_items"])
    del uid
    inc = [rec(f"attribute[{f}]", g.attribute_incidence, log["users"], log[f], log["n_users"], int(np.max(log[f])) + 1)
           for f in ("age", "city", "tags")]
    for f in ("category", "brand"):
        rec(f"attribute[{f}]", g.attribute_incidence, log["item_ids"], log[f], log["n_items"], int(np.max(log[f])) + 1)
    a = rec("mixed_attribute(user)", g.mixed_incidence, inc)[0]
    rng = np.random.default_rng(2)
    pick = rng.integers(0, y.nnz, 1024)
    rows = np.repeat(np.arange(y.shape[0]), np.diff(y.indptr))[pick]
    rec("drop_edges(1024)", g.drop_edges, y, rows, y.indices[pick])
    rec("sym_norm(user_item bipartite)", g.sym_norm, g.bipartite_adjacency(y))

    # floors: as many keys as there are position pairs at distance 1..window inside a sequence
    # (pairs of equal items included; the builders also key the few pairs across sequence ends)
    rem = remaining_in_sequence(off, items.size)
    n_pairs = {1: int((rem >= 1).sum()), 2: int((rem >= 1).sum() + (rem >= 2).sum())}
    del rem
    fl = {"cooccurrence(d=2,K=8)": sort_floor(n_pairs[2], 3), "transitions": sort_floor(n_pairs[1], 3)}
    res["floor_s"] = {name: f[0] for name, f in fl.items()}
    res["floor_cpu_s"] = {name: f[1] for name, f in fl.items()}
    res["keys"] = {"cooccurrence(d=2,K=8)": n_pairs[2], "transitions": n_pairs[1]}
    if python_ref:
        t0 = time.perf_counter()
        python_cooccurrence(items, off, 2, 8)
        t1 = time.perf_counter()
        python_transitions(items, off)
        t2 = time.perf_counter()
        res["python_s"] = {"cooccurrence(d=2,K=8)": t1 - t0, "transitions": t2 - t1, "events": events}
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def run_propagation(edges: int, batch: int = 1024, dim: int = 16, reps: int = 10) -> dict:
    """3 LightGCN layers on a ~``edges``-edge user-item graph + 1024-row gather vs one DIN step."""
    import torch

    import ctrgraph.graphs as g
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.registry import load_dataset
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model

    rng = np.random.default_rng(0)
    nu, ni = edges // 20, edges // 10
    u = rng.integers(0, nu, int(edges * 1.1))
    v = zipf_draw(rng, ni, 0.8, u.size)
    y = g.user_item_graph(u, v, nu, ni)
    adj = g.to_torch_sparse(g.sym_norm(g.bipartite_adjacency(y)))
    table = torch.nn.Parameter(torch.randn(nu + ni, dim) * 0.01)
    prop = g.LightGCN(3)
    out: dict = {"edges": int(y.nnz), "nodes": nu + ni}

    def prop_step():
        rows = torch.from_numpy(rng.integers(0, nu + ni, batch))
        e = prop(adj, table, rows, adj_t=adj)  # symmetric graph: its own transpose
        e.square().sum().backward()
        table.grad = None

    prop_step()
    t0 = time.perf_counter()
    for _ in range(reps):
        prop_step()
    out["lightgcn3_gather_fwd_bwd_s"] = (time.perf_counter() - t0) / reps

    ds = load_dataset("synthetic", {"n_instances": 20_000, "n_users": 2_000, "max_len": 50}, cache=False)
    model = build_model("din", FeatureSpec(ds.schema, ds.vocab_sizes), dim=dim)
    if hasattr(model, "prepare"):
        model.prepare(ds)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = BatchLoader(ds.split("train"), ds.schema, batch_size=batch, shuffle=True, drop_last=True)
    batches = list(loader)[: reps + 1]
    label = ds.schema.label

    def din_step(b):
        opt.zero_grad()
        logits = model(b).logits.view(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, b[label].float().view(-1))
        loss.backward()
        opt.step()

    din_step(batches[0])
    t0 = time.perf_counter()
    for b in batches[1:]:
        din_step(b)
    out["din_step_s"] = (time.perf_counter() - t0) / (len(batches) - 1)
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", default="1m,10m", help="comma-separated sizes, e.g. 1m,10m,50m")
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--no-knn", action="store_true", help="skip the user kNN builder")
    ap.add_argument("--knn-device", default=None, help="torch device for the kNN dense blocks, e.g. cuda")
    ap.add_argument("--repeats", type=int, default=3, help="timing = best of this many runs (at most 2 above 10M)")
    ap.add_argument("--knn-max-events", default="10m", help="skip the user kNN above this size (its cost grows "
                    "with users^2: 500k users at 50M events)")
    ap.add_argument("--no-propagation", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        if a.child == "prop":
            print(json.dumps(run_propagation(1_000_000)))
        elif a.child.startswith("knn:"):
            print(json.dumps(run_knn(int(a.child[4:]), a.zipf, a.knn_device)))
        else:
            n = int(a.child)
            print(json.dumps(run_size(n, a.zipf, python_ref=(n == 1_000_000),
                                      repeats=a.repeats if n <= 10_000_000 else min(a.repeats, 2))))
        return
    py = None
    print(f"# graph builders on synthetic logs (zipf {a.zipf}), {os.cpu_count()} CPUs; "
          "wall seconds / peak traced GiB / nnz")
    for n in [parse_n(s) for s in a.events.split(",")]:
        cmd = [sys.executable, __file__, "--child", str(n), "--zipf", str(a.zipf), "--repeats", str(a.repeats)]
        load0 = os.getloadavg()[0]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{n:,} events failed: {p.stderr.strip()[-2000:]}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if "python_s" in r:
            py = r["python_s"]
        print(f"\n## {n:,} events: {r['users']:,} users, {r['items']:,} items; process peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
        print(f"{'builder':34s} {'seconds':>9s} {'peak GiB':>9s} {'nnz':>12s}  ratios")
        for name, b in r["builders"].items():
            extra = ""
            if name in r["floor_s"]:
                fl, fc = r["floor_s"][name], r["floor_cpu_s"][name]
                extra = (f"floor {b['s'] / fl:.2f}x wall, {b['cpu_s'] / fc:.2f}x CPU (np.sort of "
                         f"{r['keys'][name]:,} int64 keys: {fl:.3f}s wall, {fc:.3f}s CPU)")
                if py is not None:
                    pys = py[name] * n / py["events"]
                    mark = "" if py["events"] == n else "~"
                    extra += f"; per-row Python {mark}{pys:.1f}s -> {pys / b['s']:.0f}x faster"
            print(f"{name:34s} {b['s']:9.3f} {b['peak_gib']:9.3f} {b['nnz']:12,}  {extra}")
        if not a.no_knn and n > parse_n(a.knn_max_events):
            print(f"user_knn skipped above --knn-max-events {a.knn_max_events}")
        elif not a.no_knn:
            cmd = [sys.executable, __file__, "--child", f"knn:{n}", "--zipf", str(a.zipf)]
            if a.knn_device:
                cmd += ["--knn-device", a.knn_device]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"user_knn failed: {p.stderr.strip()[-2000:]}")
                continue
            k = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"{'user_knn(k=10)':34s} {k['s']:9.2f} {k['peak_gib']:9.3f} {k['nnz']:12,}  "
                  f"{k['users']:,} users x {k['interactions']:,} distinct interactions; peak = RSS above the "
                  f"{k['rss_before_gib']:.2f} GiB of its inputs")
    if not a.no_propagation:
        p = subprocess.run([sys.executable, __file__, "--child", "prop"], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"propagation failed: {p.stderr.strip()[-2000:]}")
            return
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"\n## propagation ({r['threads']} torch threads): {r['edges']:,}-edge user-item graph, {r['nodes']:,} nodes")
        print(f"3 LightGCN layers + 1024-row gather, forward+backward: {r['lightgcn3_gather_fwd_bwd_s'] * 1e3:8.1f} ms")
        print(f"DIN training step, batch 1024 (fwd+bwd+Adam):        {r['din_step_s'] * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
