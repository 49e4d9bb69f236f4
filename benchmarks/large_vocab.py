"""Large vocabularies: training speed and memory of DeepFM with dense tables + Adam (the default),
hashed item/user ids (``data.hash_buckets``), sparse-gradient tables + SparseAdam
(``embedding.sparse``), and both, on a generated log with millions of distinct item ids.

Each configuration runs in its own process (so that peak RSS is its own): generate the log (same seed
for all), encode it, build the model, train ``--epochs`` epochs with the library's Trainer. Printed per
configuration: encode seconds, embedding-table rows, training samples/s (mean over epochs, from the
trainer's own log), RSS after encoding, peak RSS while training (the high-water mark is reset after
encoding where the kernel allows it) and over the whole process, and test AUC.

The log: ``--items`` item ids (large random integers, as real ids are) drawn with a power-law
popularity, ``--users`` users with a preferred category each, ``--max-len`` recent items per
instance with their categories (half of them from the user's preferred category); a click is likely
when the candidate's category is the user's and when the item's own quality (one N(0, 1) draw per
item) is high, so the item id carries signal that hashing collisions blur. ``--repeat`` runs the
configurations in rounds (dense, hash, ... , dense, hash, ...), which shows how much a shared
machine's load moves the figures.

    python benchmarks/large_vocab.py                     # 2M items, 600k instances, 4 configurations
    python benchmarks/large_vocab.py --items 5000000 --instances 1000000 --buckets 500000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {"dense": ({}, False), "hash": ("buckets", False), "sparse": ({}, True), "hash+sparse": ("buckets", True)}


def _rss_mib(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def generate(n: int, n_users: int, n_items: int, n_cat: int, max_len: int, seed: int = 0):
    """The raw log (see the module docstring), vectorised."""
    from ctrgraph.data.raw import RawDataset
    from ctrgraph.data.schema import Field, Kind, Role, Schema
    from ctrgraph.data.split import random_split

    rng = np.random.default_rng(seed)
    raw_ids = rng.choice(np.int64(10) ** 12, size=n_items, replace=False) if n_items < 5e7 else \
        np.arange(n_items, dtype=np.int64) * 7919 + 10**9
    cat = rng.integers(0, n_cat, n_items)
    quality = rng.normal(0, 1, n_items)
    pref = rng.integers(0, n_cat, n_users)
    by_cat = np.argsort(cat, kind="stable")
    start = np.searchsorted(cat[by_cat], np.arange(n_cat))
    count = np.bincount(cat, minlength=n_cat)

    def popular(size):  # power-law popularity over a random order of the items
        return np.minimum((rng.random(size) ** 3 * n_items).astype(np.int64), n_items - 1)

    user = rng.integers(0, n_users, n)
    item = popular(n)
    hist = popular((n, max_len))
    own = rng.random((n, max_len)) < 0.5  # half of the history from the user's preferred category
    c = np.broadcast_to(pref[user][:, None], hist.shape)[own]
    hist[own] = by_cat[start[c] + (rng.random(c.size) * count[c]).astype(np.int64)]
    lens = rng.integers(1, max_len + 1, n)
    logit = -1.0 + 2.0 * (cat[item] == pref[user]) + 1.0 * quality[item] + rng.normal(0, 0.5, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    fields = (Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
              Field("category", Kind.CATEGORICAL, Role.ITEM_ATTR),
              Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
              Field("hist_category", Kind.SEQUENCE, Role.BEHAVIOR, vocab="category", max_len=max_len,
                    target="category", group="hist_item_id"),
              Field("label", Kind.NUMERIC, Role.LABEL))
    cols = {"user_id": user.astype(np.int64) * 31 + 7, "item_id": raw_ids[item], "category": cat[item],
            "hist_item_id": raw_ids[hist], "hist_category": cat[hist], "label": label}
    return RawDataset(Schema(fields), cols, {"hist_item_id": lens, "hist_category": lens}, random_split(n, 0.1, 0.1, seed=seed),
                      meta={"recipe": "large-vocab"})


def run_one(name: str, a) -> dict:
    """One configuration in this process; returns its figures."""
    import torch

    from ctrgraph.config import TrainConfig
    from ctrgraph.data.encode import encode
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model
    from ctrgraph.train.trainer import Trainer

    hashing, sparse = CONFIGS[name]
    buckets = {"item_id": a.buckets, "user_id": a.user_buckets} if hashing else {}
    raw = generate(a.instances, a.users, a.items, a.categories, a.max_len, a.seed)
    t0 = time.perf_counter()
    data = encode(raw, hash_buckets=buckets, consume=True)
    encode_s = time.perf_counter() - t0
    del raw
    rss_data = _rss_mib()
    reset = _reset_peak()
    torch.manual_seed(a.seed)
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    model = build_model("deepfm", spec, {"hidden": [64, 32]}, dim=a.dim, init_std=1e-2, sparse=sparse)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=0, progress=False,
                      eval_batch_size=8192, seed=a.seed)
    r = Trainer(cfg).fit(model, data)
    sps = [h["samples_per_s"] for h in r["history"]]
    return {"config": name, "item_rows": data.vocab_sizes["item_id"], "user_rows": data.vocab_sizes["user_id"],
            "encode_s": encode_s, "train_rows": data.num_rows("train"), "samples_per_s": float(np.mean(sps)),
            "samples_per_s_epochs": sps, "rss_data_mib": rss_data,
            "peak_train_mib": _rss_mib("VmHWM") if reset else float("nan"),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "test_auc": r["test"]["auc"], "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--instances", type=int, default=600_000)
    ap.add_argument("--categories", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--buckets", type=int, default=262_144, help="hash buckets of the item table")
    ap.add_argument("--user-buckets", type=int, default=65_536, help="hash buckets of the user table")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of all configurations")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a)))
        return
    names = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    args = list(sys.argv[1:])
    head = ("round", "config", "item rows", "user rows", "encode s", "samples/s", "RSS data MiB", "peak train MiB",
            "peak MiB", "test AUC")
    print(f"items {a.items:,}, users {a.users:,}, instances {a.instances:,}, history <= {a.max_len}, "
          f"DeepFM dim {a.dim}, batch {a.batch_size}, lr {a.lr:g}, {a.epochs} epoch(s)", flush=True)
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    for rnd, name in [(r, n) for r in range(1, a.repeat + 1) for n in names]:
        out = subprocess.run([sys.executable, __file__, *args, "--one", name], check=False, capture_output=True,
                             text=True, env=dict(os.environ, CTRGRAPH_PROGRESS_SECONDS="1e9"))
        if out.returncode != 0:
            sys.exit(f"{name}: failed\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {rnd} | {r['config']} | {r['item_rows']:,} | {r['user_rows']:,} | {r['encode_s']:.1f} | "
              f"{r['samples_per_s']:,.0f} | {r['rss_data_mib']:,.0f} | {r['peak_train_mib']:,.0f} | "
              f"{r['peak_mib']:,.0f} | {r['test_auc']:.4f} |", flush=True)
    print(f"(train rows {r['train_rows']:,}; {r['threads']} torch threads)")


if __name__ == "__main__":
    main()
