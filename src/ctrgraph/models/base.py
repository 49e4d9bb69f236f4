"""The model contract.

A model is a plain ``nn.Module``: ``forward(batch) -> ModelOutput(logits [B], aux {name: loss})``.
It receives its embedding provider (injected, so graph-enhanced providers wrap any model) and a
validated pydantic config. :meth:`CTRModel.output` collects the auxiliary losses of every embedded
view the forward passes to it (a model that embeds two views per step passes both), so nothing is
kept between calls. The trainer talks to a model only through this class: :meth:`prepare`,
:meth:`wants_prior_bias`, :meth:`output_bias`, :meth:`diagnostics` and the returned
:class:`ModelOutput`. Models are listed by name in :mod:`ctrgraph.registry`; ``<provider>-<model>``
(e.g. ``res-din``, ``dg-pnn``) selects a provider for a model there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..data.schema import FeatureSpec
from ..embeddings import EmbeddedBatch, EmbeddingProvider


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
    """``logits`` [B]; ``aux``: named auxiliary losses (the model's and its embedded views', summed by
    name); ``views``: the embedded batches of this forward (for the embedding L2 penalty)."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    views: tuple[EmbeddedBatch, ...] = ()

    def embedding_penalty(self) -> torch.Tensor:
        """Sum of squares of the embedding vectors of every view (mini-batch-aware L2,
        ``train.embedding_l2``); zero for a model without embedded views."""
        if not self.views:
            return self.logits.new_zeros(())
        return sum(v.penalty() for v in self.views)


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

    def wants_prior_bias(self) -> bool:
        """The default of ``train.prior_bias: auto``: the model's own, or its provider's (dg asks for it)."""
        return bool(self.prior_bias_default or self.embedding.prior_bias_default)

    def diagnostics(self) -> dict[str, float]:
        """Figures the trainer logs once per epoch (the provider's, e.g. Res-embedding's residual scale)."""
        return self.embedding.diagnostics()

    def output(self, logits: torch.Tensor, *views: EmbeddedBatch,
               aux: dict[str, torch.Tensor] | None = None) -> ModelOutput:
        """The forward's result: ``logits`` [B], the model's own ``aux`` losses, and every embedded
        ``view`` of this forward, whose auxiliary losses are added by name (two views' ``res_l2``
        terms are summed, both reach the loss)."""
        total = dict(aux or {})
        for v in views:
            for k, loss in v.aux_losses().items():
                total[k] = total[k] + loss if k in total else loss
        return ModelOutput(logits, total, tuple(views))
