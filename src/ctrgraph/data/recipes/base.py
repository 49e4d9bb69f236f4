"""A data recipe: one public data set (or a generator) turned into a :class:`~ctrgraph.data.raw.RawDataset`
by a documented protocol, then encoded and cached.

Every recipe module defines a :class:`Recipe` constant; :mod:`ctrgraph.registry` lists them by name
(``registry.load_dataset("ml100k", ...)``). :func:`load_encoded` encodes a recipe's raw data set
and caches the result on disk keyed by the recipe, its parameters and the source files.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ...errors import ConfigError, DataError
from ..dataset import EncodedDataset
from ..encode import cache_key, cache_root, encode
from ..io import file_fingerprint
from ..raw import RawDataset


@dataclass(frozen=True)
class Recipe:
    """``build(params, data_dir) -> RawDataset``; ``sources(params, data_dir)`` lists the files the
    cache key fingerprints; ``download(dest) -> folder`` fetches the official files (online users);
    ``chunks(params, data_dir)``, when given and not None for these parameters, yields the raw data set
    part by part, and :func:`load_encoded` then encodes it out of core (data/stream.py). ``chunks`` may
    return a one-pass iterator (called again for each pass) or a re-iterable object (each ``iter()`` a
    fresh pass over the same parts; its ``close()``, if any, is called when the encoding ends: the
    ``taobao`` recipe prepares a spill once for both passes)."""

    name: str
    description: str
    params: type[BaseModel]
    build: Callable[[BaseModel, Path | None], RawDataset]
    sources: Callable[[BaseModel, Path | None], list[Path]]
    bundled: bool = False
    download: Callable[[Path], Path] | None = None
    chunks: Callable[[BaseModel, Path | None], Iterator[RawDataset] | None] | None = None


def parse_params(recipe: Recipe, params: dict | None) -> BaseModel:
    try:
        return recipe.params(**(params or {}))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"dataset {recipe.name!r} parameters: {errs}") from None


def _build(recipe: Recipe, p: BaseModel, data_dir: Path | None) -> RawDataset:
    raw = recipe.build(p, data_dir)
    raw.meta.setdefault("recipe", recipe.name)
    raw.meta.setdefault("params", p.model_dump())
    return raw


def build_raw(recipe: Recipe, params: dict | None = None, data_dir: str | Path | None = None) -> RawDataset:
    """The recipe's raw (not yet encoded) data set."""
    return _build(recipe, parse_params(recipe, params), Path(data_dir) if data_dir else None)


def load_encoded(recipe: Recipe, params: dict | None = None, data_dir: str | Path | None = None,
                 cache: bool = True, min_count: int = 1, hash_buckets: dict[str, int] | None = None) -> EncodedDataset:
    """Build (or read from the cache) the encoded data set of a recipe (``hash_buckets``: tables
    encoded by a hash, :mod:`ctrgraph.data.hashing`; part of the cache key only when given)."""
    p = parse_params(recipe, params)
    ddir = Path(data_dir) if data_dir else None
    if ddir is not None and not ddir.exists():
        raise DataError(f"dataset {recipe.name!r}: data directory not found: {ddir}")
    fp = file_fingerprint(recipe.sources(p, ddir))
    keyed = dict(p.model_dump(), min_count=min_count)
    if hash_buckets:
        keyed["hash_buckets"] = dict(sorted(hash_buckets.items()))
    key = cache_key(recipe.name, keyed, fp)
    path = cache_root() / "datasets" / key
    parts = recipe.chunks(p, ddir) if recipe.chunks is not None else None
    streamed = parts is not None
    if cache and (path / "meta.json").exists() and os.environ.get("CTRGRAPH_NO_CACHE") != "1":
        return EncodedDataset.load(path, mmap=streamed)
    if streamed:  # out of core: encoded straight into memory-mapped files (the cache, or a temporary folder)
        from ..stream import stream_encode

        if not cache:
            path = Path(tempfile.mkdtemp(prefix=f"ctrgraph-{recipe.name}-"))
        if isinstance(parts, Iterator):  # one pass each: ask the recipe again for each pass
            return stream_encode(lambda: recipe.chunks(p, ddir), path, min_count, f"dataset {recipe.name!r}",
                                 hash_buckets=hash_buckets)
        try:
            return stream_encode(lambda: iter(parts), path, min_count, f"dataset {recipe.name!r}",
                                 hash_buckets=hash_buckets)
        finally:
            if callable(getattr(parts, "close", None)):
                parts.close()
    ds = encode(_build(recipe, p, ddir), min_count=min_count, source=f"dataset {recipe.name!r}", consume=True,
                hash_buckets=hash_buckets)
    if cache:
        try:
            ds.save(path)
        except OSError:
            pass  # a read-only cache is not an error
    return ds
