"""A run's identity: the part of its resolved configuration that determines its numbers.

Two configurations with the same identity are the same run, whoever asked for it (a table of one
paper, a figure of another, ``ctrgraph compare``), so they share one run directory
``<root>/<run_key>-seed<k>``. The identity is normalised so that equal runs spelled differently
compare equal: ``model.name: dg-pnn`` and ``model.name: pnn, embedding.provider: dg`` are one run;
a model or provider preset and the values it sets are one run; recipe, model and provider parameters that equal
their defaults are dropped (so a new parameter with a default keeps every old key); a model whose defaults
changed pins the old ones as ``identity_base`` (GraphFM), so its earlier runs keep their keys. Left out, as
properties of the machine or the place rather than of the run: the seed (in the directory name),
``train.progress``, ``train.num_threads``, ``train.device``, ``data.data_dir`` and ``data.cache``.
"""
from __future__ import annotations

import hashlib
import json

from ..config import RunConfig
from ..data.recipes import parse_params
from ..errors import ConfigError
from ..registry import (
    MODELS,
    PROVIDERS,
    get_recipe,
    model_config,
    provider_defaults,
    provider_params,
    resolve_model_name,
)

#: config entries that do not change what a run computes (``data.params`` and ``embedding.params``
#: are compared against the recipe's and the provider's own defaults instead)
ENVIRONMENT = {("train", "seed"), ("train", "progress"), ("train", "num_threads"), ("train", "device"),
               ("train", "time_limit_minutes"), ("train", "ddp_find_unused_parameters"), ("train", "compile"),
               ("data", "data_dir"), ("data", "cache")}


def _diff(values: dict, defaults: dict) -> dict:
    return {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}


def run_identity(cfg: RunConfig) -> dict:
    """The normalised identity of a run (a JSON-able dict; see the module docstring)."""
    prov, base = resolve_model_name(cfg.model.name, cfg.embedding.provider)
    out: dict = {"model": base, "provider": prov}
    # against the model's defaults, or the historical ones it pins (``identity_base``: a changed default
    # leaves every earlier run's key as it was)
    ref_model = MODELS[base].Config(**getattr(MODELS[base], "identity_base", {})).model_dump()
    model = _diff(model_config(base, cfg.model.params).model_dump(), ref_model)
    if model:
        out["model_params"] = model
    defaults = provider_defaults(prov)
    params = provider_params(prov, cfg.embedding.params)  # a provider preset and the values it sets are one run
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(f"embedding provider {prov!r}: unknown parameter(s) {unknown} (embedding.params); "
                          f"known: {list(defaults)}")
    provider = _diff(params, defaults)
    if provider:
        out["provider_params"] = provider
    recipe = get_recipe(cfg.data.name)
    data = _diff(parse_params(recipe, cfg.data.params).model_dump(), recipe.params().model_dump())
    if data:
        out["data_params"] = data
    d, ref = cfg.model_dump(), RunConfig().model_dump()
    # train.prior_bias: "auto" is the model's / provider's default; an explicit value equal to it is the same run
    default_prior = bool(MODELS[base].prior_bias_default or PROVIDERS[prov].prior_bias_default)
    if d["train"]["prior_bias"] == default_prior:
        d["train"]["prior_bias"] = ref["train"]["prior_bias"]
    for sec in ("data", "embedding", "train"):
        for k, v in d[sec].items():
            if (sec, k) in ENVIRONMENT or k == "params" or (sec == "embedding" and k == "provider"):
                continue
            if sec == "data" and k == "name" or v != ref[sec][k]:
                out[f"{sec}.{k}"] = v
    return out


def run_key(cfg: RunConfig) -> str:
    """``<provider>-<model>-<8 hex>`` (``<model>-<8 hex>`` for plain tables) of the run's identity."""
    ident = run_identity(cfg)
    h = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = ident["model"] if ident["provider"] == "plain" else f"{ident['provider']}-{ident['model']}"
    return f"{name}-{h}"


def run_dir_name(cfg: RunConfig) -> str:
    return f"{run_key(cfg)}-seed{cfg.train.seed}"
