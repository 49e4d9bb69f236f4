"""Batches by slicing column tensors: no per-row Python, seeded shuffling.

Each epoch draws a permutation from ``numpy.random.default_rng((seed, epoch))``; a batch is
``index_select`` on every column. Sequence groups (and multi-valued fields) are trimmed to the
longest valid length in the batch, which is exact because padding is masked everywhere.

Under data-parallel training (``rank`` of ``world`` processes) ``batch_size`` is the global batch:
every rank draws the same permutation, and rank r takes the r-th of ``world`` contiguous shards of
each global batch (:func:`shard_bounds`); ``batch_scale`` is then ``n_r * world / n`` of the batch just
yielded (the factor that makes DDP's gradient average the global batch's mean). A last global batch
with fewer rows than processes is skipped (every rank must take the same number of steps).

Memory-mapped columns (a data set encoded out of core, data/stream.py) are never read whole: the
rows are cut into blocks of ``block_rows`` contiguous rows; each epoch visits the blocks in a seeded
random order, ``buffer_rows // block_rows`` blocks at a time, reads them into memory (contiguous
reads) and shuffles the rows of that window (block-wise shuffling: memory is bounded by the window,
not by the data set). Without shuffling the windows are read in row order.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .rows import read_rows
from .schema import Kind, Schema


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, end) of shard ``rank`` when ``n`` rows are split into ``world`` contiguous shards
    whose sizes differ by at most one (the first ``n % world`` shards get the extra row)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _read_blocks(a: np.ndarray, blocks: np.ndarray, R: int, n: int) -> np.ndarray:
    """Blocks ``blocks`` (of ``R`` rows, the last one shorter) of ``a`` read one after the other into one
    array (the rows of ``np.concatenate`` of the blocks, without a second copy of the window)."""
    sizes = [min(n, (b + 1) * R) - b * R for b in blocks]
    out = np.empty((sum(sizes), *a.shape[1:]), dtype=a.dtype)
    at = 0
    for b, m in zip(blocks, sizes):
        out[at:at + m] = read_rows(a, b * R, b * R + m)
        at += m
    return out


class BatchLoader:
    def __init__(self, arrays: dict[str, np.ndarray], schema: Schema, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                 trim: bool = True, drop_last: bool = False, rank: int = 0, world: int = 1,
                 buffer_rows: int = 1 << 19, block_rows: int = 1 << 14):
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
        self.lazy = any(isinstance(v, np.memmap) for v in arrays.values())
        self.block_rows = max(1, min(int(block_rows), int(buffer_rows)))
        self.window_blocks = max(1, int(buffer_rows) // self.block_rows)
        self.arrays = arrays if self.lazy else None
        for k, v in ({} if self.lazy else arrays).items():
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

    def _emit(self, cols: dict[str, torch.Tensor], s: int, e: int, idx: torch.Tensor | None = None):
        """One batch: rows [s, e) of the global order (``idx`` maps them to ``cols`` rows), this rank's shard."""
        if self.world > 1:
            n_global = e - s
            a, z = shard_bounds(n_global, self.rank, self.world)
            s, e = s + a, s + z
            self.batch_scale = (e - s) * self.world / n_global
        if idx is None and self.lazy:  # copies: a batch the caller still holds must not keep a window alive
            batch = {k: v[s:e].clone() for k, v in cols.items()}
        elif idx is None:
            batch = {k: v[s:e] for k, v in cols.items()}
        else:
            rows = idx[s:e]
            batch = {k: v.index_select(0, rows) for k, v in cols.items()}
        self._trim(batch)
        if self.device.type == "cuda":  # page-locked host memory: the copy overlaps with compute
            batch = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        elif self.device.type != "cpu":
            batch = {k: v.to(self.device) for k, v in batch.items()}
        return batch

    def _iter_blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        """Memory-mapped columns, window by window (module docstring)."""
        R, n, bs = self.block_rows, self.n, self.batch_size
        nb = -(-n // R)
        rng = np.random.default_rng((self.seed, self.epoch)) if self.shuffle else None
        blocks = rng.permutation(nb) if rng is not None else np.arange(nb)
        steps, done = len(self), 0
        carry: dict[str, torch.Tensor] | None = None
        cols: dict[str, torch.Tensor] | None = None
        for w in range(0, nb, self.window_blocks):
            wb = np.sort(blocks[w:w + self.window_blocks])  # ascending: sequential reads
            cols = None  # the previous window is released before the next one is read
            cols = {k: torch.from_numpy(_read_blocks(a, wb, R, n)) for k, a in self.arrays.items()}
            if rng is not None:
                perm = torch.from_numpy(rng.permutation(next(iter(cols.values())).shape[0]))
                cols = {k: v.index_select(0, perm) for k, v in cols.items()}
            if carry is not None:
                cols = {k: torch.cat([carry[k], v]) for k, v in cols.items()}
            m = next(iter(cols.values())).shape[0]
            last = w + self.window_blocks >= nb
            full = m if last else m // bs * bs
            for s in range(0, full, bs):
                if done == steps:
                    break
                yield self._emit(cols, s, min(s + bs, m))
                done += 1
            carry = None if last else {k: v[full:].clone() for k, v in cols.items()}  # not a view of the window

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.lazy:
            yield from self._iter_blocks()
            return
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self.epoch))
            perm = torch.from_numpy(rng.permutation(self.n))
        else:
            perm = None
        for b in range(len(self)):
            s = b * self.batch_size
            yield self._emit(self.cols, s, min(s + self.batch_size, self.n), perm)
