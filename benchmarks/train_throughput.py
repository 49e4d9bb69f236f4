"""Training throughput (samples/s over full epochs, loading and batching included) and peak memory.

Settings of the ml100k-ctr comparisons: embedding 16, batch 1024, Adam 1e-3, towers [256, 128].
Each model runs in its own subprocess so that peak RSS figures do not mix::

    PYTHONPATH=src python benchmarks/train_throughput.py --dataset ml100k --data-dir ../shared/data/ml-100k \
        --models deepfm,din --epochs 3

Prints one row per model: samples/s of each epoch (the first includes warm-up), the best epoch's
samples/s, and peak resident memory of the process.

``--interleave`` measures cost ratios on a shared machine: all models live in one process and take
turns, one full training epoch each (forward, loss + auxiliary losses, backward, Adam), for
``--epochs`` rounds, so every model sees the same background load; prints seconds per epoch of
each round and the ratio of the median to the first model's (e.g. ``--models autoint,graphfm``), and the
same for the process's CPU seconds (with ``--threads 1`` CPU time is the epoch's compute whatever
else runs on the machine; wall time is the figure on an idle one).

``--pairs`` gives the graph methods' cost ratios (issue 20) in one interleaved run, each graph model to
its own base (wall and CPU medians)::

    PYTHONPATH=src python benchmarks/train_throughput.py --data-dir ../shared/data/ml-100k --threads 1 \
        --epochs 5 --pairs pnn:dg-pnn,autoint:graphfm,din:res-din
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def _threads(threads) -> int | None:
    """A thread count from --threads: a number, ``auto`` (train.num_threads: auto) or nothing."""
    import torch

    if threads == "auto":
        from ctrgraph.train.threads import auto_threads

        return auto_threads(torch.get_num_threads())
    return int(threads) if threads else None


def one(model: str, dataset: str, data_dir: str | None, epochs: int, threads: int | None) -> dict:
    import torch

    from ctrgraph.config import load_config
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.runs.assemble import dataset_for, model_for
    from ctrgraph.train.trainer import Trainer

    threads = _threads(threads)
    if threads and threads != torch.get_num_threads():  # an unchanged count still slows SDPA (docs/graphfm.md)
        torch.set_num_threads(threads)
    ov = [f"data.name={dataset}", f"model.name={model}", f"train.epochs={epochs}", "train.patience=0",
          "train.progress=false"]
    if data_dir:
        ov.append(f"data.data_dir={data_dir}")
    cfg = load_config(None, ov)
    data = dataset_for(cfg)
    m = model_for(cfg, FeatureSpec(data.schema, data.vocab_sizes))
    t0 = time.perf_counter()
    res = Trainer(cfg.train).fit(m, data)
    rates = [h["samples_per_s"] for h in res["history"]]
    return {"model": model, "samples_per_s": rates, "best": max(rates), "mean_after_first": sum(rates[1:]) / max(1, len(rates) - 1),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "train_rows": data.num_rows("train"), "wall_s": time.perf_counter() - t0,
            "threads": torch.get_num_threads()}


def interleaved(models: list[str], dataset: str, data_dir: str | None, rounds: int, threads: int | None,
                overrides: list[str] | None = None) -> dict:
    """Train ``models`` in one process, one epoch each in turn, for ``rounds`` rounds (a name
    ``model@key=value[@key=value ...]`` is ``model`` with those overrides of its own); print and return
    ``{"data": the data set, "models": {name: model}, "seconds": {name: [...]}, "cpu": {name: [...]}}``."""
    import statistics

    import torch

    from ctrgraph.config import load_config
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.runs.assemble import dataset_for, model_for
    from ctrgraph.train.trainer import init_prior_bias

    threads = _threads(threads)
    if threads and threads != torch.get_num_threads():  # an unchanged count still slows SDPA (docs/graphfm.md)
        torch.set_num_threads(threads)
    ov = [f"data.name={dataset}"] + ([f"data.data_dir={data_dir}"] if data_dir else []) + list(overrides or [])
    cfg = load_config(None, ov)
    data = dataset_for(cfg)
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    runs = []
    for name in models:  # "model@key=value@...": a model with its own overrides (a labelled variant)
        model, *extra = name.split("@")
        c = load_config(None, ov + [f"model.name={model}"] + extra)
        torch.manual_seed(1)
        m = model_for(c, spec)
        m.prepare(data)
        if m.wants_prior_bias():
            init_prior_bias(m, data)  # as the trainer does (train.prior_bias: auto)
        runs.append((name, m, torch.optim.Adam(m.parameters(), lr=1e-3), [], []))
    train = data.split("train")
    for r in range(rounds):
        for name, m, opt, times, cpu in runs:
            m.train()
            t0, c0 = time.perf_counter(), time.process_time()
            for batch in BatchLoader(train, data.schema, 1024, shuffle=True, seed=r):
                out = m(batch)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch[data.schema.label].float())
                loss = loss + sum(out.aux.values(), torch.zeros(()))
                opt.zero_grad()
                loss.backward()
                opt.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    base, cbase = statistics.median(runs[0][3]), statistics.median(runs[0][4])
    print(f"# interleaved epochs on {dataset} ({data.num_rows('train'):,} train rows, batch 1024, "
          f"{torch.get_num_threads()} threads, {rounds} rounds)")
    for name, _, _, times, cpu in runs:
        med, cmed = statistics.median(times), statistics.median(cpu)
        print(f"{name:>12s} s/epoch {' '.join(f'{t:.2f}' for t in times)}  median {med:.2f}  "
              f"ratio to {runs[0][0]} {med / base:.2f}x | CPU s/epoch median {cmed:.2f}  ratio {cmed / cbase:.2f}x")
    return {"data": data, "models": {r[0]: r[1] for r in runs}, "seconds": {r[0]: r[3] for r in runs},
            "cpu": {r[0]: r[4] for r in runs}}


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """``"pnn:dg-pnn,din:res-din"`` -> ``[("pnn", "dg-pnn"), ("din", "res-din")]``."""
    pairs = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        base, sep, other = item.partition(":")
        if not sep or not base or not other:
            raise SystemExit(f"--pairs: expected BASE:OTHER, got {item!r}")
        pairs.append((base, other))
    return pairs


def pairs_ratios(spec: str, dataset: str, data_dir: str | None, rounds: int, threads) -> dict[tuple[str, str], dict]:
    """One interleaved run (:func:`interleaved`) of every model of ``spec``; prints and returns the ratio
    of each pair's medians, seconds and CPU seconds per epoch."""
    import statistics

    pairs = parse_pairs(spec)
    names = list(dict.fromkeys(n for p in pairs for n in p))
    res = interleaved(names, dataset, data_dir, rounds, threads)
    out = {}
    print("# cost ratios (median epoch of each model, same run)")
    for base, other in pairs:
        r = {k: statistics.median(res[k][other]) / statistics.median(res[k][base]) for k in ("seconds", "cpu")}
        out[(base, other)] = r
        print(f"{other + ' / ' + base:>22s}  wall {r['seconds']:.2f}x  CPU {r['cpu']:.2f}x")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml100k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", default="deepfm,din")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", default=None, help="a count, or auto (train.num_threads: auto)")
    ap.add_argument("--interleave", action="store_true", help="one process, models take turns per epoch")
    ap.add_argument("--pairs", default=None, metavar="BASE:OTHER,...",
                    help="interleaved run of every model named; prints OTHER / BASE per pair (wall and CPU)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.pairs:
        pairs_ratios(a.pairs, a.dataset, a.data_dir, a.epochs, a.threads)
        return
    if a.interleave:
        interleaved(a.models.split(","), a.dataset, a.data_dir, a.epochs, a.threads)
        return
    if a.child:
        print(json.dumps(one(a.child, a.dataset, a.data_dir, a.epochs, a.threads)))
        return
    print(f"# training throughput on {a.dataset}: {platform.processor() or platform.machine()}, "
          f"batch 1024, embedding 16, {a.epochs} epochs per model")
    print(f"{'model':>10s} {'samples/s per epoch':>36s} {'best':>9s} {'mean(2..)':>10s} {'peak RSS':>9s}")
    for m in a.models.split(","):
        cmd = [sys.executable, __file__, "--child", m, "--dataset", a.dataset, "--epochs", str(a.epochs)]
        if a.data_dir:
            cmd += ["--data-dir", a.data_dir]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{m:>10s} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per = " ".join(f"{x:,.0f}" for x in r["samples_per_s"])
        print(f"{m:>10s} {per:>36s} {r['best']:>9,.0f} {r['mean_after_first']:>10,.0f} {r['peak_rss_gib']:>7.2f}Gi")


if __name__ == "__main__":
    main()
