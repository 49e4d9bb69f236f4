"""Run under ``torchrun --nproc-per-node 2``: every registry model and provider combination trains one
epoch data-parallel on the bundled MovieLens subset; afterwards every rank must hold the same
parameters (DDP keeps replicas equal) and rank 0 writes ``{model: test AUC or error}`` to argv[1]."""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from ctrgraph.config import load_config
from ctrgraph.runs.assemble import run_experiment
from ctrgraph.train import distributed


def checksum(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in model.parameters()] or [torch.zeros((), dtype=torch.float64)])


def main(out: str, names: list[str]) -> None:
    done = {}
    ctx = None
    for name in names:
        extra = ["embedding.params.num_walks=1", "embedding.params.walk_length=5", "embedding.params.epochs=1"] \
            if name.startswith("node2vec-") else ["embedding.params.epochs=1"] if name.startswith("skipgram-") else []
        cfg = load_config(None, [f"model.name={name}", "train.epochs=1", "train.progress=false", "train.num_threads=1",
                                 "data.train_fraction=0.02", "train.batch_size=128", *extra])
        try:
            res = run_experiment(cfg)
            ctx = distributed.current()
            mine = checksum(res["_model"])
            parts = [torch.empty_like(mine) for _ in range(ctx.world)]
            dist.all_gather(parts, mine)
            same = all(torch.allclose(parts[0], p, rtol=0, atol=1e-9) for p in parts)
            done[name] = {"auc": res["test"]["auc"], "same_on_every_rank": same, "processes": res["processes"]}
        except Exception as e:  # noqa: BLE001 - reported per model
            done[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    if ctx is None or ctx.main:
        with open(out, "w") as f:
            json.dump(done, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
