"""The one explicit registry: every data recipe, embedding provider and model of ctrgraph, by name.

Nothing registers itself as a side effect of being imported: a new recipe, provider or model is
added to the lists below (and nowhere else). ``import ctrgraph`` imports this module, so
``ctrgraph.registry.MODELS`` / ``PROVIDERS`` / ``RECIPES`` are complete after it. The functions
here resolve names: ``<provider>-<model>`` (``dg-pnn``, ``res-din``) wraps a model with a provider.

Layer: above data, embeddings and models (it lists them), below train, runs, experiments and cli.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .data.dataset import EncodedDataset
from .data.raw import RawDataset
from .data.recipes import (
    alimama,
    amazon_books,
    amazon_electronics,
    avazu,
    criteo,
    custom,
    jdsearch,
    load_encoded,
    ml1m,
    ml20m,
    ml100k,
    ml100k_dgenn,
    movielens,
    retailrocket,
    search_log,
    synthetic,
    synthetic_search,
    taobao,
    tmall,
)
from .data.recipes import build_raw as _build_raw
from .data.recipes.base import Recipe
from .data.schema import FeatureSpec
from .embeddings.base import EmbeddingProvider, use_sparse_gradients
from .embeddings.dg import DualGraphEmbedding
from .embeddings.gcn import GCNGraphEmbedding
from .embeddings.hgat import HGATEmbedding
from .embeddings.kgat import KGATEmbedding
from .embeddings.pretrained import (
    EGESEmbedding,
    Node2VecEmbedding,
    SiameseEmbedding,
    SkipGramEmbedding,
)
from .embeddings.res import ResEmbedding
from .errors import ConfigError
from .models.afm import AFM
from .models.afn import AFN, AFNPlus
from .models.autoint import AutoInt, AutoIntPlus
from .models.base import CTRModel, ModelConfig
from .models.bst import BST
from .models.comirec_dr import ComiRecDR
from .models.comirec_sa import ComiRecSA
from .models.dcn import DCN, CrossNetwork
from .models.dcnv2 import DCNV2
from .models.deepcrossing import DeepCrossing
from .models.deepfm import DeepFM
from .models.deminet import DemiNet
from .models.dien import DIEN
from .models.din import DIN
from .models.dmin import DMIN
from .models.dnn import DNN
from .models.dnn_cross import DNNCross
from .models.egin import EGIN
from .models.fignn import FiGNN
from .models.fm import FM
from .models.fmfm import FmFM
from .models.gin import GIN
from .models.graphfm import GraphFM
from .models.hofm import HOFM
from .models.interhat import InterHAt
from .models.lr import LR
from .models.mind import MIND
from .models.nfm import NFM
from .models.pnn import PNN
from .models.widedeep import WideDeep
from .models.xdeepfm import XDeepFM


def _by_name(items: list, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if it.name in out:
            raise RuntimeError(f"registry: two {what} named {it.name!r}")
        out[it.name] = it
    return out


#: data recipes (``--dataset``)
RECIPES: dict[str, Recipe] = _by_name([
    movielens.RECIPE, ml100k.RECIPE, ml100k_dgenn.RECIPE, ml1m.RECIPE, taobao.RECIPE,
    custom.TABLE_RECIPE, custom.LOG_RECIPE, synthetic.RECIPE, synthetic_search.RECIPE, search_log.RECIPE, jdsearch.RECIPE,
    amazon_books.RECIPE, retailrocket.RECIPE,
    criteo.RECIPE, avazu.RECIPE, alimama.RECIPE, tmall.RECIPE, amazon_electronics.RECIPE, ml20m.RECIPE,
], "recipes")

#: embedding providers (``embedding.provider`` or the ``<provider>-`` prefix of a model name)
PROVIDERS: dict[str, type[EmbeddingProvider]] = _by_name([
    EmbeddingProvider, ResEmbedding, DualGraphEmbedding, GCNGraphEmbedding, KGATEmbedding, HGATEmbedding,
    SkipGramEmbedding, Node2VecEmbedding, EGESEmbedding, SiameseEmbedding,
], "providers")

#: models (``--model``)
MODELS: dict[str, type[CTRModel]] = _by_name([
    LR, FM, AFM, HOFM, FmFM, NFM, WideDeep, DeepFM, DNN, PNN, DeepCrossing, CrossNetwork, DCN, DCNV2, XDeepFM,
    AFN, AFNPlus, AutoInt, AutoIntPlus, InterHAt, FiGNN, GraphFM, DIN, DIEN, BST, GIN, DemiNet,
    MIND, ComiRecSA, ComiRecDR, DMIN, EGIN, DNNCross,
], "models")


# ----- data ---------------------------------------------------------------------------------------
def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


def build_raw(name: str, params: dict | None = None, data_dir: str | Path | None = None) -> RawDataset:
    """The raw (not yet encoded) data set of recipe ``name``."""
    return _build_raw(get_recipe(name), params, data_dir)


def load_dataset(name: str, params: dict | None = None, data_dir: str | Path | None = None,
                 cache: bool = True, min_count: int = 1, hash_buckets: dict[str, int] | None = None) -> EncodedDataset:
    """The encoded data set of recipe ``name`` (read from the cache when it holds it)."""
    return load_encoded(get_recipe(name), params, data_dir, cache=cache, min_count=min_count,
                        hash_buckets=hash_buckets)


# ----- models and providers -----------------------------------------------------------------------
def parse_model_name(name: str) -> tuple[str | None, str]:
    """``'res-din'`` -> (``'res'``, ``'din'``); ``'din'`` -> (None, ``'din'``)."""
    key = name.lower()
    if key in MODELS:
        return None, key
    if "-" in key:
        prov, base = key.split("-", 1)
        if base in MODELS:
            if prov not in PROVIDERS:
                raise ConfigError(f"unknown embedding provider {prov!r} in model name {name!r}; known: {sorted(PROVIDERS)}")
            return prov, base
    raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))} "
                      f"(graph variants: <provider>-<model>, providers: {', '.join(sorted(PROVIDERS))})")


def model_config(base: str, params: dict | None) -> ModelConfig:
    """Validated config: the model's defaults < its preset (``preset: paper``) < ``params``."""
    cls = MODELS[base]
    params = dict(params or {})
    preset = params.pop("preset", None)
    merged: dict = {}
    if preset is not None:
        if preset not in cls.presets:
            raise ConfigError(f"model {base!r} has no preset {preset!r}; presets: {sorted(cls.presets) or 'none'}")
        merged.update(cls.presets[preset])
    merged.update(params)
    try:
        return cls.Config(**merged)
    except ValidationError as e:
        errs = "; ".join(f"model.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"model {base!r} config: {errs}") from None


def provider_defaults(name: str) -> dict[str, Any]:
    """The keyword parameters of provider ``name`` (``embedding.params``) and their defaults."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown embedding provider {name!r}; known: {sorted(PROVIDERS)}")
    sig = inspect.signature(PROVIDERS[name].__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "spec", "dim", "init_std", "fields")}


def provider_params(name: str, params: dict | None) -> dict[str, Any]:
    """``embedding.params`` with a ``preset`` expanded: the provider's preset < the given ``params``."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown embedding provider {name!r}; known: {sorted(PROVIDERS)}")
    params = dict(params or {})
    preset = params.pop("preset", None)
    if preset is None:
        return params
    presets = PROVIDERS[name].presets
    if preset not in presets:
        raise ConfigError(f"embedding provider {name!r} has no preset {preset!r}; presets: {sorted(presets) or 'none'}")
    return {**presets[preset], **params}


def build_provider(name: str, spec: FeatureSpec, dim: int, init_std: float = 1e-4, **params) -> EmbeddingProvider:
    params = provider_params(name, params)
    known = provider_defaults(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"embedding provider {name!r}: unknown parameter(s) {unknown} "
                          f"(embedding.params); known: {list(known)}")
    return PROVIDERS[name](spec, dim, init_std=init_std, **params)


def resolve_model_name(name: str, provider: str = "plain") -> tuple[str, str]:
    """(provider, base model) of a model name and ``embedding.provider``: the name's prefix wins."""
    prov, base = parse_model_name(name)
    prov = prov or provider
    if prov not in PROVIDERS:
        raise ConfigError(f"unknown embedding provider {prov!r}; known: {sorted(PROVIDERS)}")
    if prov != "plain" and not MODELS[base].uses_embedding:
        raise ConfigError(f"model {name!r}: {base} has no embedding vectors for the {prov!r} provider to "
                          f"enhance (its weights are 1-dimensional); use {base} or another base model")
    return prov, base


def build_model(name: str, spec: FeatureSpec, params: dict | None = None, dim: int = 16, init_std: float = 1e-4,
                provider: str = "plain", provider_params: dict | None = None, sparse: bool = False) -> CTRModel:
    """Build a registered model (``name`` may carry a provider prefix) with its embedding provider;
    ``sparse``: sparse-gradient lookup tables (``embedding.sparse``, plain provider only)."""
    prov, base = resolve_model_name(name, provider)
    if sparse and prov != "plain":
        raise ConfigError(f"embedding.sparse: model {name!r} uses the {prov!r} provider, which reads whole tables "
                          f"(dense gradients); sparse gradients work with the plain provider only")
    cfg = model_config(base, params)
    emb = build_provider(prov, spec, dim, init_std=init_std, **(provider_params or {}))
    model = MODELS[base](spec, cfg, emb)
    if sparse:
        use_sparse_gradients(model)
    return model
