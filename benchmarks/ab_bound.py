"""Before/after CPU time of the same models' compute (issue 20): two source trees, side by side.

    PYTHONPATH=src python benchmarks/ab_bound.py --base $(git merge-base main HEAD) --models xdeepfm,dien \
        --rounds 4 --threads 1 [--set autoint:model.attention_dim=8]

``--base`` (a git revision: the branch point, not a ``main`` that has moved on) is written to a temporary directory with ``git archive``; for every
model, one worker process per tree (``benchmarks/peers/worker.py --tool bound``: the model built
with seed 1, the ml100k-ctr training batches built once before timing, then forward + loss +
auxiliary losses + backward + Adam per batch, no loader) and the two take turns one full epoch at
a time for ``--rounds`` rounds after one warm-up round (the order alternating each round), so both
see the same background load. Prints per model the CPU seconds per epoch of each tree (median of
the measured rounds; with ``--threads 1`` CPU time is the epoch's compute whatever else runs), the
ratio base / new, and the last batch's training loss of every round of each tree (same seed, same
batches: equal losses say both trees compute the same numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from peer_throughput import SETTINGS, Worker, export


class TreeWorker(Worker):
    """A ``bound`` worker importing ctrgraph from ``src`` (``Worker`` always uses this tree's)."""

    def __init__(self, src: Path, model: str, npz: Path, settings: dict, log: Path, tree: str):
        # one extension cache per tree: both trees' kernels have the same names, and a shared cache would
        # rebuild them in turn (one worker can end up timing the other tree's build)
        ext = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")) / f"ab_bound-{tree}"
        env = dict(os.environ, PYTHONPATH=str(src), TORCH_EXTENSIONS_DIR=str(ext))
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peers" / "worker.py"), "--tool", "bound", "--model", model,
             "--npz", str(npz), "--settings", json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, bufsize=1)
        self.hello = self._read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--models", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                    help="a config override for one model in both trees, e.g. autoint:model.attention_dim=8")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    overrides: dict[str, list[str]] = {}
    for item in a.set:
        model, kv = item.split(":", 1)
        overrides.setdefault(model, []).append(kv)
    # the peer harness's own overrides are not applied: both trees must accept every key
    settings = dict(SETTINGS, data_dir=a.data_dir, threads=a.threads, ours_overrides=overrides)
    load0 = os.getloadavg()[0]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        arch = subprocess.run(["git", "-C", str(REPO), "archive", a.base, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(base)], input=arch.stdout, check=True)
        npz = tmp / "ml100k-ctr.npz"
        export(Path(a.data_dir), npz)
        trees = {"base": base / "src", "new": REPO / "src"}
        print(f"# base {a.base} vs working tree; threads {a.threads}; 1 warm-up + {a.rounds} rounds; "
              f"overrides {overrides or 'none'}; load average {load0:.2f}", flush=True)
        print("| model | base CPU s/epoch | new CPU s/epoch | base / new | last-batch loss base | new |")
        print("| --- | ---: | ---: | ---: | --- | --- |", flush=True)
        for model in a.models.split(","):
            ws = {k: TreeWorker(src, model, npz, settings, tmp / f"{model}-{k}.log", k) for k, src in trees.items()}
            cpu = {k: [] for k in ws}
            loss = {k: [] for k in ws}
            try:
                names = list(ws)
                for r in range(1 + a.rounds):
                    for k in (names if r % 2 == 0 else names[::-1]):
                        rep = ws[k].ask("train")
                        if r:
                            cpu[k].append(rep["cpu_seconds"])
                        loss[k].append(rep["loss"])
            finally:
                for w in ws.values():
                    w.close()
            med = {k: statistics.median(v) for k, v in cpu.items()}
            out[model] = {"cpu": cpu, "median": med, "loss": loss}
            fmt = lambda v: " ".join(f"{x:.6f}" for x in v)
            print(f"| {model} | {med['base']:.2f} | {med['new']:.2f} | {med['base'] / med['new']:.2f}x | "
                  f"{fmt(loss['base'])} | {fmt(loss['new'])} |", flush=True)
    print(f"# load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"base": a.base, "threads": a.threads, "models": out}, indent=1))


if __name__ == "__main__":
    main()
