"""Embedding providers: map a batch to embedded fields. Plain tables by default; graph-enhanced
providers (Res-embedding, dual-graph enhanced embedding) override :meth:`EmbeddingProvider.lookup`
or :meth:`EmbeddingProvider.begin` and wrap any model without touching its code."""
from .base import EmbeddedBatch, EmbeddingProvider, FeatureSpec, PROVIDERS, build_provider, register_provider
from . import dg  # noqa: F401  (registers the "dg" provider)

__all__ = ["EmbeddedBatch", "EmbeddingProvider", "FeatureSpec", "PROVIDERS", "build_provider", "register_provider"]
from . import pretrained  # noqa: E402,F401  (registers the skipgram and node2vec providers)
