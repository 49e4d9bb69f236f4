"""Embedding providers: map a batch to embedded fields. Plain tables by default; graph-enhanced
providers (Res-embedding, dual-graph enhanced embedding, DG-ENN's Table 4 propagators, pretrained
item vectors) override the hooks of :class:`EmbeddingProvider` and wrap any model without touching
its code. The providers are listed by name in :mod:`ctrgraph.registry`."""
from .base import EmbeddedBatch, EmbeddingProvider, Step

__all__ = ["EmbeddedBatch", "EmbeddingProvider", "Step"]
