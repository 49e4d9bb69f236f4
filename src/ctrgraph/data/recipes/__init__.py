"""Recipe registry: one module per data set or generator.

A recipe turns raw files (or a generator) into a :class:`~ctrgraph.data.raw.RawDataset` by a
documented protocol; :func:`load_dataset` encodes it and caches the result on disk keyed by the
recipe, its parameters and the source files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError

from ...errors import ConfigError, DataError
from ..dataset import EncodedDataset
from ..encode import cache_key, cache_root, encode
from ..raw import RawDataset


@dataclass
class Recipe:
    name: str
    description: str
    params: type[BaseModel]
    build: Callable[[BaseModel, Path | None], RawDataset]
    sources: Callable[[BaseModel, Path | None], list[Path]]
    bundled: bool = False
    download: Callable[[Path], Path] | None = None


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, params: type[BaseModel], description: str, sources, bundled: bool = False,
                    download=None):
    def deco(fn):
        RECIPES[name] = Recipe(name, description, params, fn, sources, bundled, download)
        return fn
    return deco


def get_recipe(name: str) -> Recipe:
    _import_all()
    if name not in RECIPES:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


def parse_params(recipe: Recipe, params: dict | None) -> BaseModel:
    try:
        return recipe.params(**(params or {}))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"dataset {recipe.name!r} parameters: {errs}") from None


def build_raw(name: str, params: dict | None = None, data_dir: str | Path | None = None) -> RawDataset:
    recipe = get_recipe(name)
    p = parse_params(recipe, params)
    raw = recipe.build(p, Path(data_dir) if data_dir else None)
    raw.meta.setdefault("recipe", name)
    raw.meta.setdefault("params", p.model_dump())
    return raw


def load_dataset(name: str, params: dict | None = None, data_dir: str | Path | None = None,
                 cache: bool = True, min_count: int = 1) -> EncodedDataset:
    """Build (or read from the cache) the encoded data set of a recipe."""
    recipe = get_recipe(name)
    p = parse_params(recipe, params)
    ddir = Path(data_dir) if data_dir else None
    if ddir is not None and not ddir.exists():
        raise DataError(f"dataset {name!r}: data directory not found: {ddir}")
    from ..io import file_fingerprint

    fp = file_fingerprint(recipe.sources(p, ddir))
    key = cache_key(name, dict(p.model_dump(), min_count=min_count), fp)
    path = cache_root() / "datasets" / key
    if cache and (path / "meta.json").exists() and os.environ.get("CTRGRAPH_NO_CACHE") != "1":
        return EncodedDataset.load(path)
    raw = recipe.build(p, ddir)
    raw.meta.setdefault("recipe", name)
    raw.meta.setdefault("params", p.model_dump())
    ds = encode(raw, min_count=min_count, source=f"dataset {name!r}", consume=True)
    if cache:
        try:
            ds.save(path)
        except OSError:
            pass  # a read-only cache is not an error
    return ds


def _import_all() -> None:
    from . import ml100k, movielens  # noqa: F401
    for mod in ("ml1m", "taobao", "custom", "synthetic", "ml100k_dgenn"):
        try:
            __import__(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # modules land incrementally
            if e.name != f"{__name__}.{mod}":
                raise
