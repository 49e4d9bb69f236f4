"""Does the default thread setup hold up on a busy machine? Trains each model for a few epochs
(`benchmarks/train_throughput.py --child`, one subprocess per setting) on an idle machine and with
``--busy`` competing CPU-bound processes (one per core by default), under

- 1 thread, and PyTorch's default thread count (one per core),
- ``auto`` (``train.num_threads: auto``: the cores other processes leave free, train/threads.py),
- ``OMP_WAIT_POLICY`` unset (libgomp spins a while before sleeping), ``PASSIVE``, or a bounded
  ``GOMP_SPINCOUNT``,

and prints samples/s (the best epoch after the first) of each setting.

    PYTHONPATH=src python benchmarks/thread_default.py --dataset movielens --models din,deepfm \
        [--threads 1,default,auto] [--policies ,PASSIVE,GOMP_SPINCOUNT=10000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(model: str, dataset: str, epochs: int, threads: int | None, policy: str | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # the child imports torch before ctrgraph: this env is what libgomp sees
    env.pop("GOMP_SPINCOUNT", None)
    if policy and policy.startswith("GOMP_SPINCOUNT="):
        env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
    elif policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, str(HERE / "train_throughput.py"), "--child", model, "--dataset", dataset,
           "--epochs", str(epochs)] + (["--threads", str(threads)] if threads else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return max(r["samples_per_s"][1:] or r["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="movielens")
    ap.add_argument("--models", default="din,deepfm")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--busy", type=int, default=os.cpu_count(), help="competing busy-loop processes")
    ap.add_argument("--policies", default=",PASSIVE", help="comma-separated: '' (libgomp's default), PASSIVE, "
                                                          "ACTIVE or GOMP_SPINCOUNT=N")
    ap.add_argument("--threads", default="1,default,auto",
                    help="comma-separated thread counts ('default': one per core; 'auto': train.num_threads auto)")
    a = ap.parse_args()
    print(f"# {a.dataset}, {a.epochs} epochs, best epoch after the first; {os.cpu_count()} cores; busy = "
          f"{a.busy} competing busy-loop processes")
    print(f"{'model':<8s} {'machine':<6s} {'threads':<8s} {'OMP_WAIT_POLICY':<22s} {'samples/s':>10s}")
    for load in ("idle", "busy"):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)] \
            if load == "busy" else []
        try:
            for model in a.models.split(","):
                for threads in [None if t == "default" else t for t in a.threads.split(",")]:
                    for policy in [p or None for p in a.policies.split(",")]:
                        sps = run(model, a.dataset, a.epochs, threads, policy)
                        print(f"{model:<8s} {load:<6s} {threads or 'default':<8} {policy or 'unset (spin)':<22s} "
                              f"{sps:>10,.0f}", flush=True)
        finally:
            for h in hogs:
                h.kill()


if __name__ == "__main__":
    main()
