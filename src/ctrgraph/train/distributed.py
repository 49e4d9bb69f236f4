"""Data-parallel training on PyTorch's own engine: ``torchrun`` + ``torch.distributed`` + DDP.

``torchrun --nproc-per-node N -m ctrgraph train ...`` (or ``ctrgraph train --nproc N``) starts N
processes; each joins the process group here (gloo on CPU, NCCL on CUDA, one GPU per local rank).
The rules every rank follows (docs/distributed.md):

- ``train.batch_size`` is the *global* batch: each epoch's seeded permutation is the same on every
  rank, each global batch of it is split into N contiguous shards (:func:`shard_bounds`), and rank r
  trains on shard r. The loss of a shard is scaled by ``n_r * N / n`` so that DDP's gradient average
  equals the gradient of the global batch's mean loss exactly, whatever N; a result therefore does not
  depend on the number of processes (up to float summation order), and a run resumes with another N.
- Evaluation: each rank scores a contiguous shard of the split and the logits are gathered in input
  order (:func:`gather_rows`); AUC, logloss and gAUC are computed once on all predictions, never
  averaged per rank.
- Decisions (early stopping, the time limit) are rank 0's, broadcast (:func:`broadcast_flag`);
  checkpoints and every run file are written by rank 0 only (atomically, as without DDP).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..data.loader import shard_bounds


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> DistContext:
    """The job this process belongs to (a one-process context when no process group is up)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group that torchrun's environment describes (``WORLD_SIZE`` > 1); a no-op in a
    single process or when the group is already up. NCCL when the run trains on CUDA, else gloo."""
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return current()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where collective tensors live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if current().active:
        dist.barrier()


def agree(ok: bool) -> bool:
    """True on every rank when ``ok`` is true on every rank (so that one rank's failure before a
    collective step stops the others instead of leaving them waiting)."""
    if not current().active:
        return ok
    t = torch.tensor([1.0 if ok else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def broadcast_flag(value: bool) -> bool:
    """Rank 0's ``value`` on every rank (a decision taken once for the job)."""
    if not current().active:
        return value
    t = torch.tensor([1.0 if value else 0.0], device=_device())
    dist.broadcast(t, 0)
    return bool(t.item() > 0)


def broadcast_float(value: float) -> float:
    if not current().active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.broadcast(t, 0)
    return float(t.item())


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64)."""
    if not current().active or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_rows(local: np.ndarray, n_total: int) -> np.ndarray:
    """Concatenate every rank's rows in rank order (rank r holds the :func:`shard_bounds` slice r of
    ``n_total`` rows): the full array, on every rank."""
    ctx = current()
    if not ctx.active:
        return local
    most = -(-n_total // ctx.world)
    buf = torch.zeros((most, *local.shape[1:]), dtype=torch.from_numpy(local[:0]).dtype, device=_device())
    buf[: len(local)] = torch.from_numpy(np.ascontiguousarray(local)).to(buf.device)
    parts = [torch.empty_like(buf) for _ in range(ctx.world)]
    dist.all_gather(parts, buf)
    out = [p[: e - s] for p, (s, e) in zip(parts, (shard_bounds(n_total, r, ctx.world) for r in range(ctx.world)))]
    return torch.cat(out).cpu().numpy()


__all__ = ["DistContext", "agree", "all_sum", "barrier", "broadcast_flag", "broadcast_float", "current",
           "gather_rows", "init_from_env", "launched_by_torchrun", "shard_bounds", "shutdown"]
