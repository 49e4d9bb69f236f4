"""Data larger than memory: seconds and peak memory of each stage at growing sizes.

For each size N it (1) writes a partitioned parquet folder of N synthetic instances in the layout a
Spark / Hive job writes (``day=k/`` sub-folders; ``hist`` a list<int32> column of up to 50 item ids),
(2) encodes it with the ``table`` recipe out of core (two streamed passes into memory-mapped columns,
data/stream.py), (3) trains DeepFM for one epoch on the memory-mapped data (block-wise shuffling,
data/loader.py). Each stage runs in its own process so its peak RSS is its own::

    PYTHONPATH=src python benchmarks/out_of_core.py --sizes 1000000,10000000 --out /tmp/ooc

Prints per size: write / encode / epoch seconds, seconds per million instances, and peak RSS of each
stage. The labels are planted (the candidate's category, its share in the history, the item), so the
epoch's test AUC is printed too as a sanity check. The generator here is this script's own (the
``synthetic`` recipe builds its data in memory); see docs/distributed.md for the measured figures.
"""
from __future__ import annotations

import argparse
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


def encode(folder: Path) -> dict:
    from ctrgraph.registry import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset("table", {"path": str(folder), "schema": SCHEMA}, cache=True)
    return {"seconds": time.perf_counter() - t0, "peak_gib": peak_gib(), "rows": len(ds)}


def train(folder: Path, threads: int) -> dict:
    import torch

    from ctrgraph.config import TrainConfig
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model, load_dataset
    from ctrgraph.train.trainer import Trainer

    ds = load_dataset("table", {"path": str(folder), "schema": SCHEMA}, cache=True)
    torch.manual_seed(0)
    model = build_model("deepfm", FeatureSpec(ds.schema, ds.vocab_sizes), {}, dim=16)
    cfg = TrainConfig(epochs=1, batch_size=4096, lr=1e-3, progress=True, num_threads=threads)
    t0 = time.perf_counter()
    res = Trainer(cfg).fit(model, ds)
    return {"seconds": time.perf_counter() - t0, "epoch_seconds": res["seconds_per_epoch"],
            "peak_gib": peak_gib(), "test_auc": res["test"]["auc"]}


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
    ap.add_argument("--keep", action="store_true", help="keep the parquet folders and the cache")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage:
        folder = Path(a.arg)
        r = (write(int(os.environ["OOC_N"]), folder) if a.stage == "write" else encode(folder)
             if a.stage == "encode" else train(folder, a.threads))
        print(json.dumps(r))
        return
    print("| instances | write s | encode s | encode s / M | epoch s | epoch s / M | peak GiB write / encode / train | test AUC |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(x) for x in a.sizes.split(",")):
        root = Path(a.out) / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        os.environ.update(OOC_N=str(n), CTRGRAPH_CACHE=str(root / "cache"))
        w = stage("write", "--arg", str(root / "parquet"))
        e = stage("encode", "--arg", str(root / "parquet"))
        t = stage("train", "--arg", str(root / "parquet"), "--threads", str(a.threads))
        m = n / 1e6
        print(f"| {n:,} | {w['seconds']:.1f} | {e['seconds']:.1f} | {e['seconds'] / m:.2f} | {t['epoch_seconds']:.1f} | "
              f"{t['epoch_seconds'] / m:.2f} | {w['peak_gib']:.2f} / {e['peak_gib']:.2f} / {t['peak_gib']:.2f} | "
              f"{t['test_auc']:.4f} |", flush=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
