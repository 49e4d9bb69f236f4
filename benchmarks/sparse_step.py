"""CPU milliseconds of one DeepFM training step (forward, backward, optimizer step; batch 4096, one
thread) against the size of the user table: dense Adam (the native step) vs sparse-gradient tables
(``embedding.sparse``) three ways: ``sparse before`` (``nn.Embedding(sparse=True)`` lookups, torch's
``SparseAdam``: the path before LazyAdam), ``sparse torch SparseAdam`` (today's row-sparse lookups,
torch's step) and ``sparse LazyAdam`` (today's path, :class:`ctrgraph.train.optim.LazyAdam`).

Batches are rows of the ``synthetic`` recipe (100k items, histories up to 50) with user ids drawn
uniformly from the table, as the out-of-core benchmark's log (n_users = N / 100) has them::

    PYTHONPATH=src python benchmarks/sparse_step.py --users 100000,500000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="100000,500000")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    from ctrgraph.data.schema import FeatureSpec
    from ctrgraph.registry import build_model, load_dataset
    from ctrgraph.train.optim import LazyAdam, SparseDenseAdam, build_optimizer
    from ctrgraph.config import TrainConfig

    torch.set_num_threads(1)
    ds = load_dataset("synthetic", {"n_instances": 60000, "n_users": 1000, "n_items": 100_000, "n_categories": 500})
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ds.split("train").items()}
    n = next(iter(arrays.values())).shape[0]
    label = ds.schema.label
    print("| user rows | config | CPU ms / step |")
    print("| --- | --- | --- |")
    for users in (int(u) for u in a.users.split(",")):
        vocab = dict(ds.vocab_sizes, user_id=users)
        rng = np.random.default_rng(0)
        batches = []
        for _ in range(a.warmup + a.steps):
            rows = torch.from_numpy(rng.integers(0, n, 4096))
            b = {k: v.index_select(0, rows) for k, v in arrays.items()}
            b["user_id"] = torch.from_numpy(rng.integers(1, users, 4096).astype(np.int32))
            batches.append(b)
        for _round in range(a.rounds):
            for config in ("dense", "sparse before", "sparse torch SparseAdam", "sparse LazyAdam"):
                torch.manual_seed(0)
                model = build_model("deepfm", FeatureSpec(ds.schema, vocab), {}, dim=16, sparse=config != "dense")
                opt = build_optimizer(model, TrainConfig(lr=1e-3))
                if config == "sparse before":  # torch's own sparse lookups, no lazy pooling
                    from ctrgraph.embeddings.base import EmbeddingProvider

                    for mod in model.modules():
                        if isinstance(mod, EmbeddingProvider):
                            mod.lookup = lambda table, ids, step, mod=mod: mod.tables[table](ids)
                            mod.lookup_table = lambda table, step: None
                if config in ("sparse before", "sparse torch SparseAdam"):
                    assert isinstance(opt, SparseDenseAdam) and isinstance(opt._sparse, LazyAdam)
                    plain = torch.optim.SparseAdam.step
                    opt._sparse.step = lambda closure=None, o=opt._sparse: plain(o, closure)
                model.train()
                for i, b in enumerate(batches):
                    if i == a.warmup:
                        c0 = time.process_time()
                    out = model(b)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), b[label])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                ms = (time.process_time() - c0) / a.steps * 1e3
                print(f"| {users:,} | {config} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
