"""Side-by-side throughput against DeepCTR-Torch and FuxiCTR on ml100k-ctr (issue 20, items 1 and 4).

Run (from the repository root; the first run builds the peers' virtual environment, ~1 minute)::

    PYTHONPATH=src python benchmarks/peer_throughput.py --models deepfm,din --epochs 3 --json peers.json

Options: ``--models`` (default: every model both sides have, below), ``--epochs`` measured epochs
after ``--warmup`` (1) warm-up epochs, ``--peers deepctr,fuxictr``, ``--data-dir`` (default
../shared/data/ml-100k), ``--venv`` (default benchmarks/.peers-venv, git-ignored), ``--threads``.

Setup: the peers live in their own virtual environment, never in the project: ``torch==2.13.0``
(the CPU build on this machine's disk) first, then ``deepctr-torch==0.3.0`` and ``fuxictr==2.3.10``
from the package registry with torch pinned beside them. ctrgraph encodes ml100k-ctr once and the
encoded integer arrays of all splits and fields (``genres``, the histories) and their vocabulary
sizes are written to one temporary ``.npz`` (``benchmarks/peers/export.py``); every tool builds its
model from those arrays. Settings for every tool: embedding 16, batch 1024, Adam lr 1e-3, towers
[256, 128] where the model has a DNN, no L2, seed 1, the tool's own initialisation.

What is measured, per model: each tool runs in its own subprocess (``benchmarks/peers/worker.py``,
so peak memory is per tool) and the tools take turns one epoch at a time (the order rotates each
round), so all see the same background load. Training samples/s = train rows / wall seconds of one
full epoch as the tool trains (loader, forward, loss, backward, optimizer step), median over the
measured epochs; the ratio of ours to the faster peer, by wall time and by CPU time (process and
loader workers: steadier than wall time on a shared machine, best with ``--threads 1``); the compute bound: our same network trained
on batches built once before timing (forward + loss + backward + Adam per batch, no loader) and ours
as a fraction of it; peak RSS of each process (FuxiCTR's loader worker processes separately);
scoring samples/s on the test split (each tool's own predict path, batch 1024; median of
repetitions after one discarded). Prints two markdown tables; ``--json`` writes them with the date,
the machine (CPU count, platform, load average before and after) and the torch versions.

Each tool's path: ours = ``BatchLoader`` and the ``Trainer``'s epoch body, as
``train_throughput.py --interleave``; DeepCTR-Torch = ``model.fit(..., epochs=1)`` per epoch (its
TensorDataset/DataLoader, summed BCE on sigmoid outputs); FuxiCTR = ``BaseModel.train_epoch`` over
its ``NpzDataLoader`` (``fit`` minus the validation pass and checkpoint after each epoch; its
gradient clipping at norm 10; ``num_workers=1``, the loader's default).

Where the peers' setups depart from ours (the price of using each tool as shipped):
- FuxiCTR's PyPI package has no model zoo: its models are wired here from the package's own layers
  as the zoo wires them (``benchmarks/peers/fuxictr_side.py``); AutoInt, FiGNN, DIEN and AFM need
  layers that exist only in the zoo and are n/a. DeepCTR-Torch has no FiGNN (n/a); its LR is ``WDL``
  without a DNN and its FM ``DeepFM`` without a DNN; its DCN-M (``cross_parameterization="matrix"``)
  stands for DCNv2 (parallel, 3 layers, as ours).
- DIN: DeepCTR-Torch takes the query from single-valued fields only, so it attends with
  ``item_id`` over ``hist_item_id`` (history lengths as its ``length_name`` input) and mean-pools
  ``hist_genre`` into the DNN; ours and FuxiCTR attend with [item_id, genres] over
  [hist_item_id, hist_genre]. Attention MLP [64] with Dice, no softmax, everywhere.
- DIEN (DeepCTR-Torch only): AUGRU with its MLP attention (ours: the paper's bilinear form), query
  ``item_id`` only and behaviours ``hist_item_id`` only: ours runs with
  ``model.behavior_attributes=false`` here (``SETTINGS["ours_overrides"]``), so both sides' extractor
  GRU, AUGRU and aux net are 16 wide (before 2026-12-07 ours also fed ``hist_genre``: 32 wide);
  ``genres`` not used by its DNN (ours: a field of the DNN), its aux net evaluated on every padded
  position and then masked (ours: the valid pairs only), auxiliary-loss negatives drawn once before
  training (ours: every batch).
- AutoInt: DeepCTR-Torch keeps the embedding size through its layers (2 heads of 8); ours runs with
  ``model.attention_dim=8`` here (``SETTINGS["ours_overrides"]``) so both compute the same network
  (3 layers, 2 heads of 8, residual, ReLU, no scaling, linear Q/K/V without bias); ours defaults to
  the paper's d' = 32 per head elsewhere (before 2026-12-07 the harness ran that, 4x the attention
  width of the peer's). LR/FM/DeepFM/xDeepFM/NFM/AFM/Wide&Deep have a first-order term on
  every side; FuxiCTR's sum-pools sequences in it, ours and DeepCTR-Torch's mean-pool. FuxiCTR's
  first-order ``LogisticRegression`` does not share tables and leaves the history fields' own
  1-d tables at PyTorch's N(0, 1) init (its initialiser skips ``share_embedding`` fields): its
  predictions start far from 0.5; that is the package's behaviour, kept (no effect on speed).
- Loader processes: FuxiCTR's ``NpzDataLoader`` forks a worker each epoch; on a busy machine a tool
  with two runnable processes gets a larger share of the CPUs, so compare wall figures on an idle
  machine, and prefer the CPU-time ratio (which counts the worker) on a shared one.
- Losses: the peers put a sigmoid before BCE (FuxiCTR mean, DeepCTR-Torch sum); ours BCE with
  logits. None of this changes the work per sample by much, but the figures are each tool's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = ("lr", "fm", "deepfm", "pnn", "dcnv2", "autoint", "fignn", "din", "dien", "xdeepfm", "nfm", "afm",
          "widedeep", "dcn")
PEERS = {"deepctr": "DeepCTR-Torch", "fuxictr": "FuxiCTR"}
PINS = ["torch==2.13.0", "deepctr-torch==0.3.0", "fuxictr==2.3.10"]
SETTINGS = {"embedding_dim": 16, "batch_size": 1024, "lr": 1e-3, "hidden": [256, 128], "seed": 1,
            "score_batch": 1024, "score_reps": 5, "fuxictr_workers": 1,
            # our settings that give the peers' network (see the docstring): DeepCTR-Torch's AutoInt splits the
            # embedding size over its heads (2 heads of 8 at embedding 16), ours defaults to the paper's d' = 32
            "ours_overrides": {"autoint": ["model.attention_dim=8"],
                               # DeepCTR-Torch's DIEN sees hist_item_id only: GRUs and aux net 16 wide, not 32
                               "dien": ["model.behavior_attributes=false"]}}


def setup_venv(venv: Path) -> tuple[Path, dict]:
    """The peers' interpreter, installing them first where they are missing; returns (python, versions)."""
    py = venv / "bin" / "python"
    probe = ("import json, torch, deepctr_torch, fuxictr; print(json.dumps({'torch': torch.__version__, "
             "'deepctr-torch': deepctr_torch.__version__, 'fuxictr': fuxictr.__version__}))")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pip = [str(py), "-m", "pip", "install", "-q"]
        print(f"# installing the peers into {venv} ...", file=sys.stderr)
        subprocess.run(pip + [PINS[0]], check=True)  # the CPU build on disk, before anything can pull another
        subprocess.run(pip + PINS, check=True)  # torch pinned again so no requirement replaces it
        out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True)
    found = [line for line in out.stdout.splitlines() if line.startswith("{")]  # deepctr prints on import
    return py, json.loads(found[-1])


def export(data_dir: Path, path: Path) -> dict:
    """Encode ml100k-ctr with ctrgraph and write the arrays the workers read; returns the meta."""
    sys.path.insert(0, str(HERE / "peers"))
    from export import export_npz

    from ctrgraph.config import load_config
    from ctrgraph.runs.assemble import dataset_for

    data = dataset_for(load_config(None, ["data.name=ml100k", f"data.data_dir={data_dir}"]))
    return export_npz(data, path)


class Worker:
    """One tool's subprocess; :meth:`ask` sends a command and returns its JSON reply."""

    def __init__(self, tool: str, model: str, python: Path, npz: Path, settings: dict, log: Path):
        env = dict(os.environ)
        if tool in ("ours", "bound"):
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
        else:
            env.pop("PYTHONPATH", None)  # nothing of the project in the peers' interpreter
        self.log = log
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "peers" / "worker.py"), "--tool", tool, "--model", model, "--npz", str(npz),
             "--settings", json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, bufsize=1)
        self.hello = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        tail = self.log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"worker exited ({self.proc.wait()}): {' | '.join(tail)}")

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)


def run_model(model: str, tools: dict[str, Path], npz: Path, settings: dict, epochs: int, warmup: int,
              logdir: Path) -> dict:
    """Interleaved epochs of every tool on ``model``; returns per-tool figures (``{"na": why}`` if absent)."""
    res: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    try:
        for tool, py in tools.items():
            try:
                w = Worker(tool, model, py, npz, settings, logdir / f"{model}-{tool}.log")
            except RuntimeError as e:
                res[tool] = {"na": f"failed: {e}"}
                continue
            if "na" in w.hello:
                res[tool] = {"na": w.hello["na"]}
                w.close()
                continue
            workers[tool] = w
            res[tool] = {"hello": w.hello, "epochs": [], "cpu": [], "loss": []}
        names = list(workers)
        for r in range(warmup + epochs):
            for tool in names[r % len(names):] + names[:r % len(names)]:
                try:
                    rep = workers[tool].ask("train")
                except RuntimeError as e:
                    res[tool] = {"na": f"failed: {e}"}
                    names.remove(tool)
                    continue
                res[tool]["epochs"].append(rep["seconds"])
                res[tool]["cpu"].append(rep["cpu_seconds"])
                res[tool]["loss"].append(rep["loss"])
        for tool in names:
            if tool == "bound":
                continue
            reps = workers[tool].ask("score")["seconds"]
            res[tool]["score_seconds"] = reps
        for tool in names:
            res[tool]["peak_rss_mib"] = workers[tool].ask("stats")["peak_rss_mib"]
    finally:
        for w in workers.values():
            w.close()
    for tool, r in res.items():
        if "na" in r:
            continue
        n_train, n_test = r["hello"]["n_train"], r["hello"]["n_test"]
        measured = r["epochs"][warmup:] or r["epochs"]
        r["train_samples_per_s"] = n_train / statistics.median(measured)
        r["cpu_samples_per_s"] = n_train / statistics.median(r["cpu"][warmup:] or r["cpu"])
        if "score_seconds" in r:
            r["score_samples_per_s"] = n_test / statistics.median(r["score_seconds"][1:] or r["score_seconds"])
    return res


def summary(model: str, res: dict) -> dict:
    """Ratios of one model's figures."""
    sps = {t: r.get("train_samples_per_s") for t, r in res.items() if "na" not in r}
    peers = [sps[p] for p in PEERS if sps.get(p)]
    ours = sps.get("ours")
    cpu = {t: r.get("cpu_samples_per_s") for t, r in res.items() if "na" not in r}
    cpu_peers = [cpu[p] for p in PEERS if cpu.get(p)]
    return {"ours_over_faster_peer": ours / max(peers) if ours and peers else None,
            "cpu_ours_over_faster_peer": cpu["ours"] / max(cpu_peers) if cpu.get("ours") and cpu_peers else None,
            "ours_over_bound": ours / sps["bound"] if ours and sps.get("bound") else None}


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return fmt.format(x) if x is not None else "n/a"


def tables(results: dict) -> str:
    """The two markdown tables (training, scoring) of ``results['models']``."""
    lines = [("| model | ours samples/s | DeepCTR-Torch | FuxiCTR | ours / faster peer | same, CPU time | "
              "compute bound | ours / bound | peak RSS MiB ours / DeepCTR-Torch / FuxiCTR |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m, entry in results["models"].items():
        res, s = entry["tools"], entry["summary"]

        def sps(t: str, res: dict = res) -> str:
            return _num(res.get(t, {}).get("train_samples_per_s"))

        def rss(t: str, res: dict = res) -> str:
            r = res.get(t, {}).get("peak_rss_mib")
            if not r:
                return "n/a"
            return f"{r['self']:.0f}" + (f" (+{r['children']:.0f} loader)" if r["children"] else "")

        lines.append(f"| {m} | {sps('ours')} | {sps('deepctr')} | {sps('fuxictr')} | "
                     f"{_num(s['ours_over_faster_peer'], '{:.2f}x')} | {_num(s['cpu_ours_over_faster_peer'], '{:.2f}x')} | "
                     f"{sps('bound')} | "
                     f"{_num(s['ours_over_bound'], '{:.0%}')} | {rss('ours')} / {rss('deepctr')} / {rss('fuxictr')} |")
    lines += ["", "| model | scoring samples/s ours | DeepCTR-Torch | FuxiCTR | ours / faster peer |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for m, entry in results["models"].items():
        res = entry["tools"]
        sc = {t: res.get(t, {}).get("score_samples_per_s") for t in ("ours", *PEERS)}
        peers = [sc[p] for p in PEERS if sc[p]]
        ratio = sc["ours"] / max(peers) if sc["ours"] and peers else None
        lines.append(f"| {m} | {_num(sc['ours'])} | {_num(sc['deepctr'])} | {_num(sc['fuxictr'])} | "
                     f"{_num(ratio, '{:.2f}x')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=3, help="measured epochs per tool (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--venv", type=Path, default=HERE / ".peers-venv")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import torch

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {list(PEERS)}")
    peer_py, versions = setup_venv(a.venv) if peers else (None, {})
    settings = dict(SETTINGS, data_dir=str(a.data_dir), threads=a.threads)
    tools = {"ours": Path(sys.executable), "bound": Path(sys.executable)} | {p: peer_py for p in peers}
    results = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "processor": platform.processor() or platform.machine(),
                           "loadavg_start": list(os.getloadavg())},
               "torch": torch.__version__, "peer_versions": versions, "settings": settings,
               "epochs": a.epochs, "warmup": a.warmup, "models": {}}
    with tempfile.TemporaryDirectory(prefix="peer-throughput-") as tmp:
        npz = Path(tmp) / "ml100k-ctr.npz"
        meta = export(a.data_dir, npz)
        results["rows"] = meta["rows"]
        for m in models:
            print(f"# {m} ...", file=sys.stderr, flush=True)
            res = run_model(m, tools, npz, settings, a.epochs, a.warmup, Path(tmp))
            results["models"][m] = {"tools": res, "summary": summary(m, res)}
            if a.json:  # after every model, so that a long run that is cut short keeps what it measured
                a.json.write_text(json.dumps(results, indent=1, default=float))
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    mc = results["machine"]
    print(f"# peer throughput on ml100k-ctr ({results['rows']['train']:,} train / {results['rows']['test']:,} test "
          f"rows), {results['date']}, {mc['cpu_count']} CPUs, {mc['platform']}, torch {results['torch']}, "
          f"peers {', '.join(f'{k} {v}' for k, v in versions.items())}; embedding 16, batch 1024, Adam 1e-3, "
          f"[256, 128]; median of {a.epochs} epochs after {a.warmup} warm-up; load average "
          f"{mc['loadavg_start'][0]:.1f} -> {mc['loadavg_end'][0]:.1f}\n")
    print(tables(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
