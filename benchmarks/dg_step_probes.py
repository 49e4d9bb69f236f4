"""Where a ``dg-pnn`` training step goes on the issue-19 synthetic set (20k users, 12k items, 400k
instances), and what two ways of cutting its propagation would buy (docs/dg-enn.md, "At a realistic
vocabulary size")::

    PYTHONPATH=src python benchmarks/dg_step_probes.py [--parts 2,4,8] [--steps 10] [--rounds 5]

One thread. All variants train in one process on the same 1024-row batches, taking turns in blocks of
``--steps`` steps for ``--rounds`` rounds (the same background load for each); prints the median CPU ms
per step of each and its ratio to ``pnn``:

- ``pnn`` and ``dg-pnn`` as they are (whole-graph steps, exact), with the in-model wall ms per call of
  the fused LightGCN stage (``_LightGCNStage``, forward and backward; two calls each per step: the uu + vv
  stage and the uv stage);
- ``dg-pnn without the uu+vv stage``: Eqs. 16-18 replaced by the identity (what the rest of the step
  costs without that stage's four products; not a model, a probe);
- ``dg-pnn, 1/K of the edges`` (``--parts``): a **timing probe**: the graphs' K edge parts of the
  ``edge_parts`` option (``DropGraph.edge_parts``), one part drawn per step and stage (the same part
  for both layers, unlike the option) and scaled by K, the step's dropped edges ignored. It says how
  much of the step the products' non-zeros are; the option itself (per-layer draws, drops kept,
  unbiased) is measured with its AUC by ``dg_cost.py --dg-variant embedding.params.edge_parts=K``.

Every figure is CPU time of this process (``time.process_time``), so other jobs on the machine move it
less than wall time, but they still move it (caches, memory bandwidth): compare rows of one run only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="2,4,8", help="K of the edge-part probes (comma-separated; empty: none)")
    ap.add_argument("--steps", type=int, default=10, help="steps per block")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)

    import ctrgraph.graphs as graphs
    import ctrgraph.graphs.propagate as propagate
    from ctrgraph.graphs.dg import DropGraph
    from ctrgraph.graphs.propagate import ScaledAdjacency
    # benchmarks/dg_step_profile.py (this folder is on sys.path when run as a script)
    from dg_step_profile import SIZE, setup, train_step

    ov = ["data.name=synthetic"] + SIZE
    data, models, batches = setup(ov, ["pnn", "dg-pnn"], 3 + a.steps * a.rounds)
    label = data.schema.label
    ks = [int(k) for k in a.parts.split(",") if k.strip()]
    state = {"k": 1, "identity_cf1": False}

    real_scaled, real_layers = DropGraph.scaled, graphs.lightgcn_layers

    def scaled(self, *args):  # the probe's operator: one of K parts, scaled by K (drops ignored)
        op = real_scaled(self, *args)
        k = state["k"]
        if k == 1:
            return op
        crow, col = self.edge_parts(k)[int(torch.randint(k, (1,)))]  # the option's parts (DropGraph.edge_parts)
        part = torch.sparse_csr_tensor(crow, col, torch.ones(col.numel()), size=self.a01.shape, check_invariants=False)
        return ScaledAdjacency(part, op.s * k ** 0.5, op.diag, None, None, has_diag=False)

    def layers(adj, x, n_layers, combine="mean"):  # the uu + vv stage (embeddings/dg.py) looks it up here
        return x * 1.0 if state["identity_cf1"] else real_layers(adj, x, n_layers, combine)

    DropGraph.scaled = scaled
    graphs.lightgcn_layers = layers
    clock = {"fwd": 0.0, "bwd": 0.0, "nf": 0, "nb": 0}

    def timed(fn, key: str):  # the stage's forward / backward, wall time per call summed into ``clock``
        def run(ctx, *args):
            t = time.perf_counter()
            out = fn(ctx, *args)
            clock[key] += time.perf_counter() - t
            clock["n" + key[0]] += 1
            return out
        return staticmethod(run)

    fwd = timed(propagate._LightGCNStage.forward, "fwd")
    bwd = timed(propagate._LightGCNStage.backward, "bwd")
    propagate._LightGCNStage.forward, propagate._LightGCNStage.backward = fwd, bwd

    variants = [("pnn", "pnn", 1, False), ("dg-pnn", "dg-pnn", 1, False),
                ("dg-pnn without the uu+vv stage", "dg-pnn", 1, True)]
    variants += [(f"dg-pnn, 1/{k} of the edges", "dg-pnn", k, False) for k in ks]

    def step(m, opt, b):
        train_step(m, opt, b, label)

    for m, opt in models.values():
        m.train()
        for b in batches[:3]:
            step(m, opt, b)
    for _, model, k, ident in variants:  # one untimed step each (builds the K-part structures once)
        state.update(k=k, identity_cf1=ident)
        step(*models[model], batches[0])
    cpu = {v[0]: [] for v in variants}
    stage = {}
    for r in range(a.rounds):
        for label_, model, k, ident in variants:
            state.update(k=k, identity_cf1=ident)
            clock.update(fwd=0.0, bwd=0.0, nf=0, nb=0)
            m, opt = models[model]
            c0 = time.process_time()
            for b in batches[3 + a.steps * r: 3 + a.steps * (r + 1)]:
                step(m, opt, b)
            cpu[label_].append((time.process_time() - c0) / a.steps * 1e3)
            if clock["nf"]:
                stage.setdefault(label_, []).append((clock["fwd"] / clock["nf"] * 1e3, clock["bwd"] / clock["nb"] * 1e3))
    base = statistics.median(cpu["pnn"])
    print(f"# synthetic {' '.join(SIZE)}: CPU ms per training step, 1 thread, {a.rounds} rounds of {a.steps} steps, "
          f"variants taking turns")
    for label_, *_ in variants:
        med = statistics.median(cpu[label_])
        extra = ""
        if label_ in stage:
            f = statistics.median(s[0] for s in stage[label_])
            g = statistics.median(s[1] for s in stage[label_])
            extra = f"   LightGCN stage wall ms per call: forward {f:.2f}, backward {g:.2f}"
        print(f"{label_:>34s} {med:6.1f} ms  {med / base:.2f}x{extra}")


if __name__ == "__main__":
    main()
