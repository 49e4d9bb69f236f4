"""The encoded, columnar data set: one array per field, rows ordered train | valid | test.

Rows are reordered so that each split is a contiguous slice, so ``split("train")`` returns
zero-copy views. Arrays are saved as ``.npy`` files (memory-mappable) next to ``schema.json``,
``meta.json`` and one ``vocab_<table>.npy`` per vocabulary (none for a hashed table: ``schema.json``'s
``meta.hashed`` records its bucket count).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .hashing import HashedVocab, load_vocabs
from .schema import Kind, Role, Schema
from .vocab import Vocab

FORMAT_VERSION = 1


@dataclass
class EncodedDataset:
    """Encoded arrays of all splits plus the vocabularies needed to encode new data."""

    schema: Schema
    arrays: dict[str, np.ndarray]
    vocabs: dict[str, Vocab]
    bounds: dict[str, tuple[int, int]]  # split name -> [start, stop)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.arrays[self.schema.label].shape[0])

    def split(self, name: str) -> dict[str, np.ndarray]:
        """Column views of one split (``train``, ``valid`` or ``test``)."""
        if name not in self.bounds:
            raise DataError(f"unknown split {name!r}; known: {sorted(self.bounds)}")
        a, b = self.bounds[name]
        return {k: v[a:b] for k, v in self.arrays.items()}

    def num_rows(self, name: str) -> int:
        a, b = self.bounds[name]
        return b - a

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.vocabs.items()}

    def summary(self) -> dict:
        """Rows, positives and positive rate per split; distinct users and items (train / all);
        vocabulary sizes; the recipe's own statistics (its ``meta``: events, dropped negatives ...)."""
        lab = self.arrays[self.schema.label]
        out = {"instances": len(self), "positives": int(lab.sum())}
        out.update({f"{k}_rows": self.num_rows(k) for k in self.bounds})
        out["splits"] = {}
        for k, (a, b) in self.bounds.items():
            y = lab[a:b]
            out["splits"][k] = {"rows": int(b - a), "positives": int(y.sum()),
                                "positive_rate": float(y.mean()) if b > a else None}
        for role in (Role.USER, Role.ITEM):
            f = self.schema.by_role(role)
            if f:
                col, (a, b) = self.arrays[f[0].name], self.bounds.get("train", (0, 0))
                out[f"{role.value}s"] = {"train": _distinct(col[a:b]), "all": _distinct(col)}
        out["vocab_sizes"] = self.vocab_sizes
        recipe = {k: v for k, v in self.meta.items() if k not in ("bounds", "format_version")}
        if recipe:
            out["recipe"] = recipe
        return out

    def describe(self) -> str:
        """The summary as a few lines for a terminal or a log."""
        s = self.summary()
        parts = [f"{k} {v['rows']:,} rows ({v['positive_rate']:.1%} positive)" for k, v in s["splits"].items()
                 if v["rows"]]
        lines = [f"data: {s['instances']:,} instances; " + ", ".join(parts)]
        who = [f"{r} {s[r]['train']:,} in train / {s[r]['all']:,} in all" for r in ("users", "items") if r in s]
        if who:
            lines.append("      " + "; ".join(who))
        extra = {k: v for k, v in s.get("recipe", {}).items() if isinstance(v, (int, float, str))
                 and k not in ("source", "instances", "positives")}
        if extra:
            lines.append("      recipe: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                                      for k, v in extra.items()))
        return "\n".join(lines)

    def check_trainable(self, source: str = "data set") -> None:
        """A clear :class:`DataError` unless train, valid and test each have rows and both label
        classes (a single-class split has no AUC; an empty one nothing to stop on or report)."""
        lab = self.arrays[self.schema.label]
        sizes = {k: self.num_rows(k) for k in ("train", "valid", "test") if k in self.bounds}
        empty = [k for k in ("train", "valid", "test") if sizes.get(k, 0) == 0]
        if empty:
            raise DataError(f"{source}: split(s) {empty} have no rows (train / valid / test = "
                            f"{'/'.join(str(sizes.get(k, 0)) for k in ('train', 'valid', 'test'))} rows); "
                            f"give more rows or another split rule")
        for k in ("train", "valid", "test"):
            a, b = self.bounds[k]
            classes = np.unique([lab[a:b].min(), lab[a:b].max()])  # no sorted copy of a large split
            if classes.size < 2:
                raise DataError(f"{source}: the {k} split's label {self.schema.label!r} has a single class "
                                f"({classes[0]:g} in all {b - a} rows): AUC and early stopping need both 0 and 1")

    def subsample_train(self, fraction: float, seed: int = 0) -> EncodedDataset:
        """A copy whose train split is a random ``fraction`` of this one (valid / test unchanged).

        Subsets of one permutation are nested (10% is inside 20%...). Vocabularies are kept as they
        are (built on the full train split), so ids and table sizes match across fractions; graph
        providers see only the subset, since they build their graphs from the train split.
        """
        if not 0 < fraction <= 1:
            raise DataError(f"train fraction must be in (0, 1], got {fraction}")
        if fraction == 1:
            return self
        a, b = self.bounds["train"]
        if a != 0:
            raise DataError("subsample_train expects the train split first (rows ordered train / valid / test)")
        n = b - a
        keep = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))])
        idx = np.concatenate([keep, np.arange(b, len(self))])
        arrays = {k: np.ascontiguousarray(v[idx]) for k, v in self.arrays.items()}
        shift = n - keep.size
        bounds = {s: ((0, keep.size) if s == "train" else (lo - shift, hi - shift)) for s, (lo, hi) in self.bounds.items()}
        meta = dict(self.meta, train_fraction=fraction, train_fraction_seed=seed)
        return EncodedDataset(self.schema, arrays, self.vocabs, bounds, meta)

    # ----- persistence --------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write atomically: into a temporary sibling directory, then rename."""

        def arrays(tmp: Path) -> None:
            for k, v in self.arrays.items():
                np.save(tmp / f"{k}.npy", v, allow_pickle=False)

        return write_encoded_dir(path, arrays, self.schema, self.vocabs, self.bounds, self.meta)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> EncodedDataset:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise DataError(f"{path}: not an encoded data set (no meta.json)")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path}: encoded with format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        schema = Schema.from_json((path / "schema.json").read_text())
        mode = "r" if mmap else None
        arrays = {f.name: np.load(path / f"{f.name}.npy", mmap_mode=mode, allow_pickle=False) for f in schema.fields}
        vocabs = load_vocabs(schema, lambda t: Vocab.load(t, path / f"vocab_{t}.npy"))
        bounds = {k: tuple(v) for k, v in meta.pop("bounds").items()}
        return cls(schema, arrays, vocabs, bounds, meta)


def write_encoded_dir(path: str | Path, write_arrays, schema: Schema, vocabs: dict[str, Vocab],
                      bounds: dict[str, tuple[int, int]], meta: dict) -> Path:
    """The on-disk format of an encoded data set, written atomically (a temporary sibling directory,
    then one rename): ``write_arrays(tmp)`` writes the ``<field>.npy`` columns, then the vocabularies
    (none for hashed tables: schema.json's ``meta.hashed``), ``schema.json`` and ``meta.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    try:
        write_arrays(tmp)
        for k, v in vocabs.items():
            if not isinstance(v, HashedVocab):  # a hashed table lives in schema.json (meta.hashed)
                v.save(tmp / f"vocab_{k}.npy")
        (tmp / "schema.json").write_text(schema.to_json())
        (tmp / "meta.json").write_text(json.dumps(dict(meta, bounds=bounds, format_version=FORMAT_VERSION),
                                                  indent=1, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _distinct(col: np.ndarray, chunk: int = 1 << 22) -> int:
    """Number of distinct values of a column; encoded ids (small non-negative integers) by a bitmap,
    chunk by chunk, so a memory-mapped column is never read whole."""
    if col.dtype.kind not in "iu" or col.size == 0 or int(col.min()) < 0:
        return int(np.unique(col).size)
    seen = np.zeros(int(col.max()) + 1, dtype=bool)
    for s in range(0, col.shape[0], chunk):
        seen[np.asarray(col[s:s + chunk])] = True
    return int(seen.sum())


def sequence_lengths(ids: np.ndarray) -> np.ndarray:
    """True lengths of post-padded id sequences ([N, L] -> [N])."""
    return (np.asarray(ids) != 0).sum(axis=1)


def is_padded_after(schema: Schema, arrays: dict[str, np.ndarray]) -> bool:
    """Check the post-padding invariant of every encoded sequence field (used by tests)."""
    for f in schema.fields:
        if f.encoded and f.kind in (Kind.MULTI_VALUED, Kind.SEQUENCE):
            a = np.asarray(arrays[f.name]) != 0
            if (a[:, 1:] & ~a[:, :-1]).any():
                return False
    return True
