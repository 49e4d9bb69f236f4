"""Model contract and registry.

A model is a plain ``nn.Module``: ``forward(batch) -> ModelOutput(logits [B], aux {name: loss})``.
It receives its embedding provider (injected, so graph-enhanced providers wrap any model) and a
validated pydantic config. Models are registered by lowercase name; ``<provider>-<model>``
(e.g. ``res-din``, ``dg-pnn``) selects a registered embedding provider for a registered model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from ..embeddings import EmbeddingProvider, FeatureSpec, PROVIDERS, build_provider
from ..errors import ConfigError


class ModelConfig(BaseModel):
    """Base of every model's config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class TowerConfig(ModelConfig):
    """Fields shared by models that end in an MLP tower (DG-ENN Eq. 5-6)."""

    hidden: list[int] = [256, 128]
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False


def tower(cfg: TowerConfig, in_dim: int):
    """The MLP tower of a :class:`TowerConfig` with one output logit."""
    from ..layers.mlp import MLP

    return MLP(in_dim, cfg.hidden, cfg.activation, cfg.dropout, cfg.batch_norm)


@dataclass
class ModelOutput:
    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class CTRModel(nn.Module):
    """Base class: subclasses set ``Config``, ``paper`` and optional ``presets``."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    presets: ClassVar[dict[str, dict]] = {}
    paper: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __init__(self, spec: FeatureSpec, cfg: ModelConfig, embedding: EmbeddingProvider):
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        self.embedding = embedding

    def prepare(self, data) -> None:
        """Called by the trainer once, before training, with the encoded data set. Models and
        providers build data-derived state here (graphs, item -> attribute tables) from the
        **train split only**. Such state must live in buffers registered in ``__init__`` with
        shapes known from ``spec.vocab_sizes``, so that checkpoints load without the data set."""
        self.embedding.prepare(data)

    #: initialise the output bias to the train log-odds by default (``train.prior_bias: auto``);
    #: on for the shallow models (LR, FM), whose feature weights otherwise first absorb the base
    #: rate, which makes validation AUC dip and stops them early; off for deep models, where it was
    #: measured to speed up over-fitting on ml100k-ctr (PNN 0.8313 vs 0.8366 mean test AUC, seeds 1-3).
    #: An embedding provider may ask for it too (the ``dg`` provider does: docs/dg-enn.md).
    prior_bias_default: ClassVar[bool] = False
    #: False for models without embedding vectors (LR: 1-dimensional weights only), which a graph
    #: provider (``dg-``, ``res-``, ...) could not enhance: such names are a ConfigError
    uses_embedding: ClassVar[bool] = True

    def output_bias(self) -> torch.nn.Parameter | None:
        """The scalar bias added to every logit, or None. Default: the last Linear of ``self.mlp``."""
        mlp = getattr(self, "mlp", None)
        if mlp is not None:
            last = [m for m in mlp.modules() if isinstance(m, nn.Linear)][-1]
            if last.out_features == 1:
                return last.bias
        return None

    def output(self, logits: torch.Tensor, aux: dict[str, torch.Tensor] | None = None) -> ModelOutput:
        aux = dict(aux or {})
        aux.update(self.embedding.aux_losses())
        return ModelOutput(logits, aux)


MODELS: dict[str, type[CTRModel]] = {}


def register_model(name: str):
    def deco(cls: type[CTRModel]) -> type[CTRModel]:
        cls.name = name
        MODELS[name] = cls
        return cls
    return deco


def _import_all() -> None:
    import importlib
    import pkgutil

    from .. import models as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in ("base",):
            importlib.import_module(f"{pkg.__name__}.{m.name}")
    from .. import embeddings as emb

    for m in pkgutil.iter_modules(emb.__path__):
        importlib.import_module(f"{emb.__name__}.{m.name}")


def parse_model_name(name: str) -> tuple[str | None, str]:
    """``'res-din'`` -> (``'res'``, ``'din'``); ``'din'`` -> (None, ``'din'``)."""
    _import_all()
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


def build_model(name: str, spec: FeatureSpec, params: dict | None = None, dim: int = 16, init_std: float = 1e-4,
                provider: str = "plain", provider_params: dict | None = None) -> CTRModel:
    """Build a registered model (``name`` may carry a provider prefix) with its embedding provider."""
    prov, base = parse_model_name(name)
    if (prov or provider) != "plain" and not MODELS[base].uses_embedding:
        raise ConfigError(f"model {name!r}: {base} has no embedding vectors for the {prov or provider!r} provider to "
                          f"enhance (its weights are 1-dimensional); use {base} or another base model")
    cfg = model_config(base, params)
    emb = build_provider(prov or provider, spec, dim, init_std=init_std, **(provider_params or {}))
    return MODELS[base](spec, cfg, emb)
