"""Batches by slicing column tensors: no per-row Python, seeded shuffling.

Each epoch draws a permutation from ``numpy.random.default_rng((seed, epoch))``; a batch is
``index_select`` on every column. Sequence groups (and multi-valued fields) are trimmed to the
longest valid length in the batch, which is exact because padding is masked everywhere.

Under data-parallel training (``rank`` of ``world`` processes) ``batch_size`` is the global batch:
every rank draws the same permutation, and rank r takes the r-th of ``world`` contiguous shards of
each global batch (:func:`shard_bounds`); ``batch_scale`` is then ``n_r * world / n`` of the batch just
yielded (the factor that makes DDP's gradient average the global batch's mean). A last global batch
with fewer rows than processes is skipped (every rank must take the same number of steps).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .schema import Kind, Schema


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, end) of shard ``rank`` when ``n`` rows are split into ``world`` contiguous shards
    whose sizes differ by at most one (the first ``n % world`` shards get the extra row)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class BatchLoader:
    def __init__(self, arrays: dict[str, np.ndarray], schema: Schema, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                 trim: bool = True, drop_last: bool = False, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"BatchLoader: rank {rank} outside a world of {world} processes")
        self.schema = schema
        self.rank, self.world = int(rank), int(world)
        self.batch_scale = 1.0
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.n = int(next(iter(arrays.values())).shape[0])
        self.cols: dict[str, torch.Tensor] = {}
        for k, v in arrays.items():
            a = np.asarray(v)
            if not a.flags.writeable or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a).copy()
            self.cols[k] = torch.from_numpy(a)
        self.trim_groups: list[tuple[str, list[str]]] = []
        if trim:
            for main, members in schema.sequence_groups().items():
                if main in self.cols:
                    self.trim_groups.append((main, [m.name for m in members if m.name in self.cols]))
            for f in schema.fields:
                if f.kind == Kind.MULTI_VALUED and f.encoded and f.name in self.cols:
                    self.trim_groups.append((f.name, [f.name]))

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        return full + (0 < tail and not self.drop_last and tail >= self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _trim(self, batch: dict[str, torch.Tensor]) -> None:
        for main, members in self.trim_groups:
            x = batch[main]
            L = int((x != 0).sum(dim=1).max().item()) if x.numel() else 0
            L = max(L, 1)
            if L < x.shape[1]:
                for m in members:
                    batch[m] = batch[m][:, :L]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self.epoch))
            perm = torch.from_numpy(rng.permutation(self.n))
        else:
            perm = None
        for b in range(len(self)):
            s = b * self.batch_size
            e = min(s + self.batch_size, self.n)
            if self.world > 1:
                n_global = e - s
                a, z = shard_bounds(n_global, self.rank, self.world)
                s, e = s + a, s + z
                self.batch_scale = (e - s) * self.world / n_global
            if perm is None:
                batch = {k: v[s:e] for k, v in self.cols.items()}
            else:
                idx = perm[s:e]
                batch = {k: v.index_select(0, idx) for k, v in self.cols.items()}
            self._trim(batch)
            if self.device.type != "cpu":
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch
