"""EGIN's "light-weight" claim (issue 16: at most 1.3x the same network without the graph losses).

On the same batches of each data set, interleaved step by step so that they share the machine's
load, trains: EGIN as the paper sets it (every edge, 100 negatives), EGIN with ``max_pairs`` edges per
relation and batch (a labelled non-paper option), and the same network without the graph losses
(α = β = γ = 0: the same SimExtract features and MLP, the graph tables left alone). Prints the
median milliseconds per training step (forward, losses, backward, Adam), wall and CPU time (with one
thread the CPU time is the steadier figure on a shared machine), the ratios to the network without
graph losses, and the directed edges per batch of each relation (the loss takes each undirected pair
once, both directions in one pass)::

    PYTHONPATH=src python benchmarks/egin_cost.py --datasets synthetic_search,movielens --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="synthetic_search,movielens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=10, help="embedding size (the paper: 10)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-pairs", type=int, default=4096)
    a = ap.parse_args()
    import torch

    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.graphs.search_pairs import (
        query_sessions,
        session_pairs,
        span_pairs,
        window_pairs,
    )
    from ctrgraph.registry import build_model, load_dataset

    torch.set_num_threads(a.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {a.threads} thread(s), embedding {a.dim}, batch {a.batch}; "
          f"ms per training step (median of {a.steps})")
    for name in a.datasets.split(","):
        ds = load_dataset(name)
        spec = FeatureSpec(ds.schema, ds.vocab_sizes)
        batches = list(BatchLoader(ds.split("train"), ds.schema, a.batch, shuffle=True, seed=0))
        variants = {"EGIN (paper)": {}, f"EGIN max_pairs={a.max_pairs}": {"max_pairs": a.max_pairs},
                    "no graph losses": {"alpha": 0.0, "beta": 0.0, "gamma": 0.0}}
        models, opts, times, cpu = {}, {}, {k: [] for k in variants}, {k: [] for k in variants}
        for label, params in variants.items():
            torch.manual_seed(0)
            m = build_model("egin", spec, params, dim=a.dim)
            m.train()
            models[label], opts[label] = m, torch.optim.Adam(m.parameters(), 1e-3)
        m0 = models["EGIN (paper)"]
        for i in range(a.warmup + a.steps):
            b = batches[i % len(batches)]
            for label, m in models.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = m(b)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, b["label"].float())
                loss = loss + sum(out.aux.values(), torch.zeros(()))
                opts[label].zero_grad()
                loss.backward()
                opts[label].step()
                if i >= a.warmup:
                    times[label].append(time.perf_counter() - t0)
                    cpu[label].append(time.process_time() - c0)
        b = batches[0]
        mask = b[m0.click.name] > 0
        edges = {"i2i": len(window_pairs(mask, m0.cfg.window))}
        if m0.query_mode:
            qm = b[m0.qhist.name] > 0
            qts, qcat = b[m0.qhist_ts.name], b[m0.qhist_cat.name].long()
            edges["q2q"] = len(session_pairs(query_sessions(qts, qm, m0.cfg.session_gap, cats=qcat), qm))
            edges["q2i"] = len(span_pairs(qts, qm, qcat, b[m0.click_ts.name], mask, b[m0.click_cat.name].long(),
                                          m0.cfg.span))
        base = statistics.median(times["no graph losses"])
        cbase = statistics.median(cpu["no graph losses"])
        print(f"{name}: directed edges per batch {edges}")
        print(f"  {'':24s} {'wall':>8s}  {'ratio':>6s} {'CPU':>8s}  {'ratio':>6s}")
        for label, ts in times.items():
            med, cmed = statistics.median(ts), statistics.median(cpu[label])
            print(f"  {label:24s} {med * 1e3:5.1f} ms  {med / base:5.2f}x {cmed * 1e3:5.1f} ms  {cmed / cbase:5.2f}x")


if __name__ == "__main__":
    main()
