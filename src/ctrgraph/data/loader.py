"""Batches by slicing column tensors: no per-row Python, seeded shuffling.

Each epoch draws a permutation from ``numpy.random.default_rng((seed, epoch))``; a batch is
``index_select`` on every column. Sequence groups (and multi-valued fields) are trimmed to the
longest valid length in the batch, which is exact because padding is masked everywhere.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .schema import Kind, Schema


class BatchLoader:
    def __init__(self, arrays: dict[str, np.ndarray], schema: Schema, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                 trim: bool = True, drop_last: bool = False):
        self.schema = schema
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
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

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
        stop = len(self) * self.batch_size if self.drop_last else self.n
        for s in range(0, stop, self.batch_size):
            e = min(s + self.batch_size, self.n)
            if perm is None:
                batch = {k: v[s:e] for k, v in self.cols.items()}
            else:
                idx = perm[s:e]
                batch = {k: v.index_select(0, idx) for k, v in self.cols.items()}
            self._trim(batch)
            if self.device.type != "cpu":
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch
