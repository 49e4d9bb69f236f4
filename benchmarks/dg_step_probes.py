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
- ``dg-pnn, 1/K of the edges`` (``--parts``): a **timing probe of a sampler that is not built**: the
  0/1 structure of each graph split into K disjoint symmetric parts by a hash of the pair, one part
  drawn per step and stage (the same part for both layers) and scaled by K, the step's dropped edges
  ignored. It says how much of the step the products' non-zeros are; its gradients are not an
  unbiased estimator (one draw for both layers) and its AUC is not measured.

Every figure is CPU time of this process (``time.process_time``), so other jobs on the machine move it
less than wall time, but they still move it (caches, memory bandwidth): compare rows of one run only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

SIZE = ["data.params.n_users=20000", "data.params.n_items=12000", "data.params.n_instances=400000"]


def edge_parts(a01: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The 0/1 CSR ``a01`` split into ``k`` disjoint symmetric parts by a hash of the unordered pair."""
    crow = a01.crow_indices().numpy().astype(np.int64)
    col = a01.col_indices().numpy().astype(np.int64)
    n = crow.size - 1
    row = np.repeat(np.arange(n), np.diff(crow))
    key = (np.minimum(row, col) * n + np.maximum(row, col)).astype(np.uint64)
    part = ((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) % np.uint64(k)
    out = []
    for p in range(k):
        m = part == p
        cr = np.concatenate([[0], np.cumsum(np.bincount(row[m], minlength=n))]).astype(np.int32)
        out.append(torch.sparse_csr_tensor(torch.from_numpy(cr), torch.from_numpy(col[m].astype(np.int32)),
                                           torch.ones(int(m.sum())), size=(n, n), check_invariants=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="2,4,8", help="K of the edge-part probes (comma-separated; empty: none)")
    ap.add_argument("--steps", type=int, default=10, help="steps per block")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)

    import ctrgraph.graphs as graphs
    import ctrgraph.graphs.propagate as propagate
    from ctrgraph.config import load_config
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.graphs.dg import DropGraph
    from ctrgraph.graphs.propagate import ScaledAdjacency
    from ctrgraph.runs.assemble import dataset_for, model_for
    from ctrgraph.train.trainer import init_prior_bias

    ov = ["data.name=synthetic"] + SIZE
    data = dataset_for(load_config(None, ov))
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    label = data.schema.label
    ks = [int(k) for k in a.parts.split(",") if k.strip()]
    state = {"k": 1, "identity_cf1": False}

    real_scaled, real_layers = DropGraph.scaled, graphs.lightgcn_layers

    def scaled(self, *args):  # the probe's operator: one of K parts, scaled by K (drops ignored)
        op = real_scaled(self, *args)
        k = state["k"]
        if k == 1:
            return op
        cache = self.__dict__.setdefault("_probe_parts", {})
        if k not in cache:
            cache[k] = edge_parts(self.a01, k)
        part = cache[k][int(torch.randint(k, (1,)))]
        return ScaledAdjacency(part, op.s * k ** 0.5, op.diag, None, None, has_diag=False)

    def layers(adj, x, n_layers, combine="mean"):  # the uu + vv stage (embeddings/dg.py) looks it up here
        return x * 1.0 if state["identity_cf1"] else real_layers(adj, x, n_layers, combine)

    DropGraph.scaled = scaled
    graphs.lightgcn_layers = layers
    clock = {"fwd": 0.0, "bwd": 0.0, "nf": 0, "nb": 0}
    fwd0, bwd0 = propagate._LightGCNStage.forward, propagate._LightGCNStage.backward

    def fwd(ctx, *args):
        t = time.perf_counter()
        out = fwd0(ctx, *args)
        clock["fwd"] += time.perf_counter() - t
        clock["nf"] += 1
        return out

    def bwd(ctx, *args):
        t = time.perf_counter()
        out = bwd0(ctx, *args)
        clock["bwd"] += time.perf_counter() - t
        clock["nb"] += 1
        return out

    propagate._LightGCNStage.forward, propagate._LightGCNStage.backward = staticmethod(fwd), staticmethod(bwd)

    variants = [("pnn", "pnn", 1, False), ("dg-pnn", "dg-pnn", 1, False),
                ("dg-pnn without the uu+vv stage", "dg-pnn", 1, True)]
    variants += [(f"dg-pnn, 1/{k} of the edges", "dg-pnn", k, False) for k in ks]
    models = {}
    for name in ("pnn", "dg-pnn"):
        torch.manual_seed(1)
        m = model_for(load_config(None, ov + [f"model.name={name}"]), spec)
        m.prepare(data)
        if m.wants_prior_bias():
            init_prior_bias(m, data)
        models[name] = (m, torch.optim.Adam(m.parameters(), lr=1e-3))
    batches = []
    for b in BatchLoader(data.split("train"), data.schema, 1024, shuffle=True, seed=0):
        batches.append(b)
        if len(batches) >= 3 + a.steps * a.rounds:
            break

    def step(m, opt, b):
        out = m(b)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, b[label].float())
        loss = loss + sum(out.aux.values(), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for m, opt in models.values():
        m.train()
        for b in batches[:3]:
            step(m, opt, b)
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
