"""DemiNet's training cost against DIEN's (issue 15: at most 2x DIEN's seconds per epoch at two threads).

Both models train on the same ml100k-ctr batches (embedding 16, batch 1024, Adam 1e-3), interleaved
step by step so that they share the machine's load. DemiNet is first trained for ``--warmup`` steps:
its similarity relation (r_sim, cos >= t of the node features) is sparse at initialisation and
dense after a few steps, and the cost follows its density. Prints per model the median
milliseconds per training step (forward, losses, backward, Adam; DemiNet's three GNN passes
included: the full graph and the two edge-dropout views), the ratio to DIEN, seconds per epoch
(steps x median), the similarity edges per instance, and the activation memory of one batch (bytes
of the tensors autograd saves for the backward, counted with saved-tensor hooks)::

    PYTHONPATH=src python benchmarks/deminet_cost.py --data-dir ../shared/data/ml-100k --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def saved_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for one batch's backward (each storage once)."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
        loss = out.logits.sum() + sum(out.aux.values(), torch.zeros(()))
    loss.backward()
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=30, help="DemiNet training steps before timing")
    a = ap.parse_args()
    import torch

    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.graphs import native
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model, load_dataset

    if a.threads != torch.get_num_threads():  # an unchanged count still slows SDPA (docs/graphfm.md)
        torch.set_num_threads(a.threads)
    ds = load_dataset("ml100k", data_dir=a.data_dir)
    spec = FeatureSpec(ds.schema, ds.vocab_sizes)
    train = ds.split("train")
    batches = list(BatchLoader(train, ds.schema, 1024, shuffle=True, seed=0))
    models = {}
    native_ok = native.kernel() is not None
    rows = [("dien", {}), ("deminet", {}), ("deminet w/o SSL", {"ssl_weight": 0.0})]
    if native_ok:  # the same model with r_sim on the pure-PyTorch path (length-bucketed dense attention)
        rows.append(("deminet torch-path", {}))
    for name, params in rows:
        torch.manual_seed(1)
        m = build_model(name.split()[0], spec, params, dim=16)
        m.prepare(ds)
        m.train()
        models[name] = (m, torch.optim.Adam(m.parameters(), lr=1e-3), [])

    def step(m, opt, b, torch_path: bool = False) -> None:
        os.environ["CTRGRAPH_NATIVE"] = "0" if torch_path else "1"
        out = m(b)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, b["label"].float())
        loss = loss + sum(out.aux.values(), torch.zeros(()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for name in [n for n in models if n != "dien"]:  # reach the steady-state density of r_sim
        m, opt, _ = models[name]
        for k in range(a.warmup):
            step(m, opt, batches[k % len(batches)], "torch-path" in name)
    for k in range(a.steps + 1):  # interleaved: every model trains on the same batch in turn
        b = batches[(a.warmup + k) % len(batches)]
        for name, (m, opt, times) in models.items():
            t0 = time.perf_counter()
            step(m, opt, b, "torch-path" in name)
            if k:  # the first round is a warm-up
                times.append(time.perf_counter() - t0)
    base = statistics.median(models["dien"][2])
    dm = models["deminet"][0]
    with torch.no_grad():
        r = dm.encode(batches[0])
    sim = float(r["graph"].sim.sum()) / batches[0]["label"].shape[0] if r["graph"].sim is not None else 0.0
    print(f"# r_sim attention: {'native fused CPU kernel (ctrgraph.graphs.native)' if native_ok else 'PyTorch path'}"
          + ("; 'torch-path' = the same model on the length-bucketed PyTorch path" if native_ok else ""))
    print(f"# ml100k-ctr, batch 1024, {len(batches)} steps per epoch, {a.threads} threads, "
          f"{a.steps} interleaved steps after {a.warmup} DemiNet warm-up steps")
    print(f"# DemiNet r_sim edges per instance now: {sim:.1f} (valid positions per instance: "
          f"{float(r['mask'].sum()) / r['mask'].shape[0]:.1f})")
    for name, (m, _, times) in models.items():
        med = statistics.median(times)
        os.environ["CTRGRAPH_NATIVE"] = "0" if "torch-path" in name else "1"
        mem = saved_bytes(m, batches[0]) / 2**20
        print(f"{name:>16s}: {1000 * med:7.1f} ms/step  ratio to dien {med / base:5.2f}x  "
              f"{med * len(batches):6.1f} s/epoch  activations per batch {mem:7.1f} MiB")


if __name__ == "__main__":
    main()
