"""Embedding providers: map a batch to embedded fields. Plain tables by default; graph-enhanced
providers (Res-embedding, dual-graph enhanced embedding) override :meth:`EmbeddingProvider.lookup`
or :meth:`EmbeddingProvider.begin` and wrap any model without touching its code."""
from .base import EmbeddedBatch, EmbeddingProvider, FeatureSpec, PROVIDERS, build_provider, register_provider

__all__ = ["EmbeddedBatch", "EmbeddingProvider", "FeatureSpec", "PROVIDERS", "build_provider", "register_provider"]
