"""One process vs N processes (torchrun + DDP, gloo on CPU) on the same runs: test AUC per seed,
mean ± std, and whether the N-process mean lies within one standard deviation of the 1-process one::

    PYTHONPATH=src python benchmarks/ddp_parity.py --data-dir ../shared/data/ml-100k \\
        --models deepfm,dg-pnn --seeds 1,2,3 --nproc 2 --out /tmp/ddp_parity

Each run is ``ctrgraph train`` (``--nproc N`` for the data-parallel one) with the ml100k-ctr defaults
(embedding 16, global batch 1024, Adam 1e-3, early stopping on validation AUC, patience 2);
``train.batch_size`` is the global batch, so both columns optimise the same objective. Finished runs
in ``--out`` are reused. Also prints seconds per epoch of each (on a 2-core machine N = 2 processes
share the cores with one thread each: the point here is equal numbers, not speed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run(model: str, seed: int, nproc: int, args) -> dict:
    out = Path(args.out) / f"{model}-seed{seed}-np{nproc}"
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "ctrgraph", "train", "--dataset", args.dataset, "--data-dir", args.data_dir,
               "--model", model, "--seed", str(seed), "--out", str(out), "--set", "train.progress=false",
               "--set", f"train.num_threads={args.threads}"]
        if out.exists():
            cmd.append("--resume")
        if nproc > 1:
            cmd += ["--nproc", str(nproc)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml100k")
    ap.add_argument("--data-dir", default="../shared/data/ml-100k")
    ap.add_argument("--models", default="deepfm,dg-pnn")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--out", default="/tmp/ctrgraph_ddp_parity")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| model | processes | test AUC per seed | mean ± std | s/epoch | within 1 std of 1 process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model in args.models.split(","):
        ref = None
        for nproc in (1, args.nproc):
            res = [run(model, s, nproc, args) for s in seeds]
            aucs = [r["test"]["auc"] for r in res]
            mean, std = statistics.mean(aucs), statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            secs = statistics.mean(r["seconds_per_epoch"] for r in res)
            if ref is None:
                ref, verdict = (mean, std), "-"
            else:
                verdict = "yes" if abs(mean - ref[0]) <= ref[1] else "NO"
                verdict += f" (|Δ| = {abs(mean - ref[0]):.4f}, std {ref[1]:.4f})"
            print(f"| {model} | {nproc} | {', '.join(f'{a:.4f}' for a in aucs)} | {mean:.4f} ± {std:.4f} | "
                  f"{secs:.2f} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
