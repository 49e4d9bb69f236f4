"""Data larger than memory: seconds and peak memory of each stage at growing sizes.

``--source synthetic`` (default): the ``synthetic`` recipe with ``chunk_rows=1000000`` (history length
up to 50, n_users = N / 100, 100k items) is generated and encoded out of core in one stage (two
streamed passes into memory-mapped columns, data/stream.py), then DeepFM trains one epoch on the
memory-mapped data (block-wise shuffling, data/loader.py).

Tables: the trained models use **sparse-gradient lookup tables** by default (``--tables sparse``, i.e.
``embedding.sparse: true``): this log's user vocabulary grows with the data (n_users = N / 100: 500k
users at 50M), and dense Adam updates every row of every table each step, so a dense epoch costs
O(N x vocabulary), not O(N). With sparse tables a step updates the rows its batch used (LazyAdam,
train/optim.py: SparseAdam's update by index), so its cost follows the batch. ``--tables dense`` trains
the dense default (Adam over every row) for comparison. Sparse tables are lazy Adam: a row's moments
move only in the steps that use it (docs/large-vocabularies.md); large vocabularies are meant to be
trained that way.

``--source parquet``: a partitioned parquet folder of N instances in the layout a Spark / Hive job
writes (``day=k/`` sub-folders, ``hist`` a list<int32> column of up to 50 of 1M item ids) is written,
then encoded by the ``table`` recipe out of core, then trained on the same way.

``--source taobao``: a headerless ``UserBehavior.csv`` of N events in the official layout and the real
file's proportions (N / 100 users, grouped by user in string order of the id as the original; 4.16 %
of N items (4.16M per 100M), 9,439 categories, 1 % of the rows with another category than their
item's, pv / fav / cart / buy 89.5 / 2.9 / 5.5 / 2.1 %, a 9-day window with 0.035 % of the times
outside it) is written with numpy + pyarrow, then encoded by the ``taobao`` recipe (max_len 50, one
negative) out of core (``stream=true``) and, for N up to ``--taobao-memory-max``, in memory
(``stream=false``) for comparison; no training stage (--train adds one DeepFM epoch on the streamed
encoding). The encoded columns take about 1.46 GB per million events on disk (max_len 50)::

    PYTHONPATH=src python benchmarks/out_of_core.py --source taobao --sizes 5000000,20000000 --out /tmp/ooc

Each stage runs in its own process so its peak RSS is its own::

    PYTHONPATH=src python benchmarks/out_of_core.py --sizes 1000000,10000000,50000000 --out /tmp/ooc

Prints per size: write (parquet only) / generate+encode / epoch seconds, seconds per million
instances (wall; in brackets and in "fit CPU s / M" the CPU seconds of the encode stage and of the
whole fit, graphs, epoch and evaluation: with ``--threads 1`` they do not grow with other jobs' load,
so the linearity check holds on a busy machine too), the load average at the row, peak RSS of each stage (ru_maxrss, which counts the mapped columns' file-backed pages) and
the anonymous part of it (sampled RssAnon: the memory the stage itself holds), and the epoch's test
AUC (planted labels: a sanity check). A second table splits the training stage's RssAnon peak by
phase: model (data set opened, model built and prepared), epoch (the training loop: one shuffle
window of ``train.shuffle_buffer_rows`` rows read, permuted and batched), epoch eval (the epoch's
validation), predict (the best model's valid and test logits, 4 bytes per row) and metrics (AUC,
gAUC, logloss, ECE over every prediction of a split: about 34 bytes per evaluated row).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCHEMA = {
    "label": "click",
    "split": {"method": "column", "column": "part"},
    "fields": [
        {"name": "user", "kind": "categorical", "role": "user"},
        {"name": "item", "kind": "categorical", "role": "item"},
        {"name": "category", "kind": "categorical", "role": "item_attr"},
        {"name": "hour", "kind": "categorical", "role": "context"},
        {"name": "hist", "kind": "sequence", "role": "behavior", "vocab": "item", "target": "item", "max_len": 50},
    ],
}
CHUNK = 1_000_000


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (with one thread: the stage's work whatever else
    runs on the machine, so seconds per million stay comparable across sizes on a busy machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class AnonPeak:
    """Peak anonymous resident memory of this process (``RssAnon`` of /proc/self/status, sampled every
    ``interval`` seconds in a daemon thread): ru_maxrss also counts the file-backed pages of the
    memory-mapped columns, which are reclaimable page cache, not memory the run holds. 0 where
    /proc is not readable."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.peak_kib = 0
        self.phase = "start"  # a stage may name its phases: the peak of each is kept too
        self.phases: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        kib = int(line.split()[1])
                        self.peak_kib = max(self.peak_kib, kib)
                        self.phases[self.phase] = max(self.phases.get(self.phase, 0), kib)
                        return
        except OSError:
            pass

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def gib(self) -> float:
        self._sample()
        return self.peak_kib / 2**20

    def enter(self, phase: str) -> None:
        self._sample()  # the peak so far belongs to the phase that ends
        self.phase = phase
        self._sample()


def write(n: int, out: Path, seed: int = 0) -> dict:
    """N rows in parts of 1M: users 10M-scale ids, 1M items in 1000 categories, planted clicks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    n_items, n_cat = 1_000_000, 1000
    for k, s in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, k])
        m = min(CHUNK, n - s)
        item = rng.integers(0, n_items, m).astype(np.int32)
        cat = (item % n_cat).astype(np.int16)
        lens = rng.integers(0, 51, m)
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        # histories: half their items from the user's favourite category, which is the candidate's half the time
        fav = np.where(rng.random(m) < 0.5, cat, rng.integers(0, n_cat, m)).astype(np.int64)
        owner = np.repeat(np.arange(m), lens)
        pick = rng.random(off[-1]) < 0.5
        hv = np.where(pick, rng.integers(0, n_items // n_cat, off[-1]) * n_cat + fav[owner],
                      rng.integers(0, n_items, off[-1])).astype(np.int32)
        share = np.bincount(owner, weights=(hv % n_cat == cat[owner]), minlength=m) / np.maximum(lens, 1)
        logit = 4 * share + 1.5 * (cat % 4 == 0) + 0.05 * (item % 7) - 2.5  # history share, category, item
        click = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        part = np.array(["train", "valid", "test"])[rng.choice(3, m, p=[0.8, 0.1, 0.1])]
        t = pa.table({"user": rng.integers(0, 10_000_000, m), "item": item, "category": cat,
                      "hour": rng.integers(0, 24, m).astype(np.int8),
                      "hist": pa.ListArray.from_arrays(pa.array(off), pa.array(hv)), "click": click, "part": part})
        d = out / f"day={k % 7}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"part-{k:05d}.parquet")
    return {"seconds": time.perf_counter() - t0, "peak_gib": peak_gib()}


def write_taobao(n: int, path: Path, seed: int = 0) -> dict:
    """The headerless UserBehavior layout (see the module doc), written user block by user block."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    n_users, n_items, n_cat = max(1, n // 100), max(1000, round(n * 0.0416)), 9439
    users = rng.choice(np.arange(1, int(n_users * 1.03) + 2), n_users, replace=False)
    users = users[np.argsort(users.astype(str), kind="stable")]  # string order, as the original file
    counts = rng.multinomial(n, (w := rng.lognormal(0.0, 0.8, n_users)) / w.sum())
    item_ids = rng.choice(5_163_070, n_items, replace=False) + 1
    cat_ids = rng.choice(5_162_429, n_cat, replace=False) + 1
    item_cat = cat_ids[rng.integers(0, n_cat, n_items)]
    btags = pa.array(["pv", "fav", "cart", "buy"])
    path.parent.mkdir(parents=True, exist_ok=True)
    cum = np.cumsum(counts)
    edges = np.unique(np.concatenate([[0], np.searchsorted(cum, np.arange(2_000_000, n, 2_000_000)) + 1,
                                      [n_users]]))
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                        ("behavior_type", pa.string()), ("timestamp", pa.int64())])
    with pcsv.CSVWriter(str(path), schema, write_options=pcsv.WriteOptions(include_header=False)) as out:
        for b, (a, z) in enumerate(itertools.pairwise(edges)):
            r = np.random.default_rng([seed, 1, b])
            user = np.repeat(users[a:z], counts[a:z])
            m = user.size
            item = np.minimum((n_items * r.random(m) ** 2.5).astype(np.int64), n_items - 1)  # long tail
            cat = np.where(r.random(m) < 0.01, cat_ids[r.integers(0, n_cat, m)], item_cat[item])
            bt = r.choice(4, m, p=[0.895, 0.029, 0.055, 0.021])
            ts = 1511539200 + r.integers(0, 9 * 86400, m)
            out_ = r.random(m) < 0.00035
            ts[out_] -= r.integers(86400 * 9, 86400 * 90, int(out_.sum()))
            out.write_table(pa.table({"user_id": user, "item_id": item_ids[item], "category_id": cat,
                                      "behavior_type": btags.take(pa.array(bt)), "timestamp": ts}, schema=schema))
    return {"seconds": time.perf_counter() - t0, "peak_gib": peak_gib(), "bytes": path.stat().st_size}


def dataset(source: str, folder: Path):
    from ctrgraph.registry import load_dataset

    if source == "taobao":
        return load_dataset("taobao", {"path": str(folder), "stream": os.environ["OOC_TAOBAO_STREAM"] == "1"},
                            cache=True)
    if source == "synthetic":
        n = int(os.environ["OOC_N"])
        return load_dataset("synthetic", {"n_instances": n, "n_users": max(1000, n // 100), "n_items": 100_000,
                                          "n_categories": 500, "chunk_rows": CHUNK}, cache=True)
    return load_dataset("table", {"path": str(folder), "schema": SCHEMA}, cache=True)


def encode(source: str, folder: Path) -> dict:
    t0, c0 = time.perf_counter(), cpu_seconds()
    ds = dataset(source, folder)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0, "peak_gib": peak_gib(),
            "rows": len(ds)}


PHASES = ("model", "epoch", "epoch eval", "predict", "metrics")


def train(source: str, folder: Path, threads: int, model_name: str = "deepfm", tables: str = "sparse",
          anon: AnonPeak | None = None) -> dict:
    """One epoch of ``model_name`` with ``tables`` lookup tables (sparse: ``embedding.sparse: true``);
    ``anon`` gets the phases (model: data + model + prepare; epoch: the training loop; epoch eval: the
    epoch's validation; predict: the best model's valid and test logits; metrics: their metrics)."""
    import torch

    from ctrgraph.config import TrainConfig
    from ctrgraph.data import loader
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model
    from ctrgraph.train import trainer
    from ctrgraph.train.trainer import Trainer

    if anon is not None:  # phase marks around the trainer's own steps
        anon.enter("model")

        def marked(f, phase):
            def g(*a, **k):
                before = anon.phase
                if before != "epoch eval":  # the epoch's validation keeps its own phase throughout
                    anon.enter(phase)
                try:
                    return f(*a, **k)
                finally:
                    anon.enter(before)
            return g

        init = loader.BatchLoader.__init__

        def loader_init(self, *a, **k):
            init(self, *a, **k)
            if k.get("shuffle"):
                anon.enter("epoch")

        loader.BatchLoader.__init__ = loader_init
        trainer.evaluate_split = marked(trainer.evaluate_split, "epoch eval")
        trainer.predict_logits = marked(trainer.predict_logits, "predict")
        trainer.split_metrics = marked(trainer.split_metrics, "metrics")
    ds = dataset(source, folder)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(model_name, FeatureSpec(ds.schema, ds.vocab_sizes), {}, dim=16, sparse=tables == "sparse")
    cfg = TrainConfig(epochs=1, batch_size=4096, lr=1e-3, progress=True, num_threads=threads)
    t1, c1 = time.perf_counter(), cpu_seconds()
    res = Trainer(cfg).fit(model, ds)  # prepare() (graphs from the memory-mapped train split) included
    out = {"seconds": time.perf_counter() - t0, "epoch_seconds": res["seconds_per_epoch"],
           "fit_cpu_seconds": cpu_seconds() - c1,
           "prepare_seconds": time.perf_counter() - t1 - res["seconds_per_epoch"],
           "peak_gib": peak_gib(), "test_auc": res["test"]["auc"], "model": model_name}
    if anon is not None:
        anon.enter("end")
        out["anon_phases_gib"] = {k: v / 2**20 for k, v in anon.phases.items()}
    return out


def stage(name: str, *args: str) -> dict:
    env = dict(os.environ, CTRGRAPH_PROGRESS_SECONDS="120")
    p = subprocess.run([sys.executable, __file__, "--stage", name, *args], check=True, env=env,
                       stdout=subprocess.PIPE, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--out", default="/tmp/ctrgraph_ooc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", choices=["synthetic", "parquet", "taobao"], default="synthetic")
    ap.add_argument("--taobao-memory-max", type=int, default=5_000_000,
                    help="taobao: also encode in memory up to this many events")
    ap.add_argument("--train", action="store_true", help="taobao: also one DeepFM epoch on the streamed encoding")
    ap.add_argument("--keep", action="store_true", help="keep the parquet folders and the cache")
    ap.add_argument("--models", default="deepfm", help="models trained one epoch each (e.g. deepfm,dg-din,res-din: "
                                                       "the graph models build their graphs from the mapped train split)")
    ap.add_argument("--tables", choices=["sparse", "dense"], default="sparse",
                    help="lookup tables of the trained models: sparse (embedding.sparse: true; the table rows a "
                         "batch uses are updated, by LazyAdam: the step's cost follows the batch, not the "
                         "vocabulary, which grows with N here) or dense (Adam over every row each step)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage:
        folder = Path(a.arg)
        anon = AnonPeak()
        r = (write(int(os.environ["OOC_N"]), folder) if a.stage == "write" else
             write_taobao(int(os.environ["OOC_N"]), folder) if a.stage == "write-taobao" else
             encode(a.source, folder) if a.stage == "encode" else
             train(a.source, folder, a.threads, a.models, a.tables, anon))
        r["anon_peak_gib"] = anon.gib()
        print(json.dumps(r))
        return
    if a.source == "taobao":
        taobao(a)
        return
    print("| instances | model | write s | encode s | encode s / M (CPU) | epoch s | epoch s / M | fit CPU s / M "
          "| peak GiB write / encode / train | of it anonymous (RssAnon) | test AUC | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    phases = []
    for n in (int(x) for x in a.sizes.split(",")):
        root = Path(a.out) / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        os.environ.update(OOC_N=str(n), CTRGRAPH_CACHE=str(root / "cache"))
        src = ["--arg", str(root / "parquet"), "--source", a.source]
        w = stage("write", *src) if a.source == "parquet" else {"seconds": 0.0, "peak_gib": 0.0, "anon_peak_gib": 0.0}
        e = stage("encode", *src)
        m = n / 1e6
        for model_name in a.models.split(","):
            t = stage("train", *src, "--threads", str(a.threads), "--models", model_name, "--tables", a.tables)
            phases.append((n, model_name, t["anon_phases_gib"]))
            print(f"| {n:,} | {model_name} ({a.tables}) | {w['seconds']:.1f} | {e['seconds']:.1f} | {e['seconds'] / m:.2f} "
                  f"({e['cpu_seconds'] / m:.2f}) | {t['epoch_seconds']:.1f} | {t['epoch_seconds'] / m:.2f} | "
                  f"{t['fit_cpu_seconds'] / m:.2f} | {w['peak_gib']:.2f} / {e['peak_gib']:.2f} / "
                  f"{t['peak_gib']:.2f} | {w['anon_peak_gib']:.2f} / {e['anon_peak_gib']:.2f} / {t['anon_peak_gib']:.2f} | "
                  f"{t['test_auc']:.4f} | {os.getloadavg()[0]:.1f} |", flush=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\ntraining stage, peak anonymous GiB (RssAnon) by phase; tables: {a.tables}")
    print("| instances | model | " + " | ".join(PHASES) + " |")
    print("| --- | --- |" + " --- |" * len(PHASES))
    for n, model_name, ph in phases:
        print(f"| {n:,} | {model_name} | " + " | ".join(f"{ph.get(p, 0.0):.2f}" for p in PHASES) + " |")


def taobao(a) -> None:
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print("| events | file MB | write s | path | encode s | encode s / M events | peak RSS GiB | rows | epoch s | "
          "epoch peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(x) for x in a.sizes.split(",")):
        root = Path(a.out) / f"taobao{n}"
        shutil.rmtree(root, ignore_errors=True)
        csv = root / "UserBehavior.csv"
        os.environ.update(OOC_N=str(n), TMPDIR=str(root))
        w = stage("write-taobao", "--arg", str(csv))
        for stream in ("1", "0"):
            if stream == "0" and n > a.taobao_memory_max:
                continue
            os.environ.update(OOC_TAOBAO_STREAM=stream, CTRGRAPH_CACHE=str(root / f"cache{stream}"))
            e = stage("encode", "--arg", str(csv), "--source", "taobao")
            t = stage("train", "--arg", str(csv), "--source", "taobao", "--threads", str(a.threads),
                      "--tables", a.tables) \
                if a.train and stream == "1" else None
            path = "streamed" if stream == "1" else "in memory"
            epoch = f"{t['epoch_seconds']:.1f} | {t['peak_gib']:.2f}" if t else "- | -"
            print(f"| {n:,} | {w['bytes'] / 1e6:.0f} | {w['seconds']:.1f} | {path} | {e['seconds']:.1f} | "
                  f"{e['seconds'] / (n / 1e6):.2f} | {e['peak_gib']:.2f} | {e['rows']:,} | {epoch} |", flush=True)
            shutil.rmtree(root / f"cache{stream}", ignore_errors=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
