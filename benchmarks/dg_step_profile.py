"""One training step of ``dg-<base>`` against ``<base>`` on the issue-19 synthetic set, for finding
where the graph overhead goes (docs/dg-enn.md, "At a realistic vocabulary size")::

    PYTHONPATH=src python benchmarks/dg_step_profile.py --base pnn [--profile] [--set KEY=VALUE ...]

Both models train on the same 1024-row batches in one process, alternating blocks of steps (the same
background load for both); prints CPU ms per step of each and their ratio, then the provider's own
cost on one batch (this step's target drops, the attribute stage forward + backward, Eq. 22's tables
forward without and with backward; best of 4 rounds, CPU time). ``--profile`` adds torch.profiler's
table (self CPU time, grouped by input shape) of five dg steps. ``CTRGRAPH_NATIVE=0`` gives the
PyTorch path of the sparse products for comparison. Run with one thread (set here).
"""
from __future__ import annotations

import argparse
import time

import torch

SIZE = ["data.params.n_users=20000", "data.params.n_items=12000", "data.params.n_instances=400000"]


def setup(ov: list[str], names: list[str], n_batches: int):
    """The data set of the overrides ``ov``, ``{name: (model, Adam)}`` for each model (seed 1, prepared,
    prior bias as the trainer sets it) and the first ``n_batches`` 1024-row training batches (seed 0)."""
    from ctrgraph.config import load_config
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.runs.assemble import dataset_for, model_for
    from ctrgraph.train.trainer import init_prior_bias

    data = dataset_for(load_config(None, ov))
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    runs = {}
    for name in names:
        torch.manual_seed(1)
        m = model_for(load_config(None, ov + [f"model.name={name}"]), spec)
        m.prepare(data)
        if m.wants_prior_bias():
            init_prior_bias(m, data)
        runs[name] = (m, torch.optim.Adam(m.parameters(), lr=1e-3))
    batches = []
    for b in BatchLoader(data.split("train"), data.schema, 1024, shuffle=True, seed=0):
        batches.append(b)
        if len(batches) >= n_batches:
            break
    return data, runs, batches


def train_step(m, opt, b, label: str) -> None:
    """One training step: forward, BCE + the model's auxiliary losses, backward, Adam."""
    out = m(b)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, b[label].float())
    loss = loss + sum(out.aux.values(), torch.zeros(()))
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="pnn")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (both models)")
    ap.add_argument("--blocks", type=int, default=6, help="alternating blocks of 9 steps per model")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from ctrgraph.embeddings.dg import DualGraphEmbedding

    ov = [f"data.name={a.dataset}"] + (SIZE if a.dataset == "synthetic" else []) + a.set
    names = [a.base, f"dg-{a.base}"]
    data, runs, batches = setup(ov, names, 3 + 9 * a.blocks + 5)

    def step(m, opt, b):
        train_step(m, opt, b, data.schema.label)

    cpu = dict.fromkeys(names, 0.0)
    for m, opt in runs.values():
        m.train()
        for b in batches[:3]:
            step(m, opt, b)
    for k in range(a.blocks):
        for name, (m, opt) in runs.items():
            c0 = time.process_time()
            for b in batches[3 + 9 * k: 12 + 9 * k]:
                step(m, opt, b)
            cpu[name] += time.process_time() - c0
    n = 9 * a.blocks
    print(f"# {a.dataset} {' '.join(ov[1:])}: CPU ms per training step (1 thread, {n} steps each, alternating)")
    for name in names:
        print(f"{name:>12s} {cpu[name] / n * 1e3:7.1f} ms  {cpu[name] / cpu[names[0]]:.2f}x")

    m, opt = runs[names[1]]
    emb = next(x for x in m.modules() if isinstance(x, DualGraphEmbedding))
    b = batches[3]
    du, dv = emb.target_drops(b)
    probe = {k: torch.randn_like(v) for k, v in emb.enhanced_tables(du, dv).items()}

    def attr():
        z_u, z_v = emb._attribute_stage({})
        if z_u.requires_grad:
            (z_u.sum() + z_v.sum()).backward()

    def fwd():
        with torch.no_grad():
            emb.enhanced_tables(du, dv)

    def fwd_bwd():
        out = emb.enhanced_tables(du, dv)
        sum((out[k] * probe[k]).sum() for k in out).backward()

    def best(f, k=5):
        t = 1e9
        for _ in range(4):
            f()
            c0 = time.process_time()
            for _ in range(k):
                f()
            t = min(t, (time.process_time() - c0) / k)
        return t * 1e3

    print(f"# {names[1]} provider, one batch (best of 4, CPU ms): target drops {best(lambda: emb.target_drops(b)):.2f}, "
          f"attribute stage fwd+bwd {best(attr):.2f}, Eq. 22 tables fwd {best(fwd):.2f}, fwd+bwd {best(fwd_bwd):.2f}")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
            for b in batches[-5:]:
                step(m, opt, b)
        print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30,
                                                              max_name_column_width=32, max_shapes_column_width=60))


if __name__ == "__main__":
    main()
