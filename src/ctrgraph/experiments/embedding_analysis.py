"""Analyses of learned item embeddings (Res-embedding's theorem, measured; EGIN Table 5 style).

:func:`category_cosines` returns the mean cosine similarity of item embeddings within the same
category and across categories; Res-embedding's Proposition 1 predicts that the gap grows when the
embeddings are built as graph-combined central parts plus small residuals.
"""
from __future__ import annotations

import numpy as np
import torch


def item_embedding_matrix(model) -> np.ndarray:
    """The item table of a trained model's provider (E = W C_b + R for ``res-*`` models)."""
    emb = model.embedding
    with torch.no_grad():
        if hasattr(emb, "table_vectors"):
            return emb.table_vectors().cpu().numpy()
        from ..data.schema import Role

        item = emb.spec.schema.first(Role.ITEM)
        return emb.tables[item.table].weight.detach().cpu().numpy()


def category_cosines(emb: np.ndarray, categories: np.ndarray, ids: np.ndarray | None = None,
                     max_items: int = 3000, seed: int = 0) -> dict[str, float]:
    """Mean pairwise cosine within categories vs across (over ``ids``, default all rows >= 2).

    Vectorised on at most ``max_items`` items (a random subset when more): one Gram matrix.
    """
    ids = np.arange(2, emb.shape[0]) if ids is None else np.asarray(ids)
    if ids.size > max_items:
        ids = np.random.default_rng(seed).choice(ids, max_items, replace=False)
    x = emb[ids].astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    c = np.asarray(categories)[ids]
    gram = x @ x.T
    same = c[:, None] == c[None, :]
    off = ~np.eye(ids.size, dtype=bool)
    intra = gram[same & off].mean()
    inter = gram[~same].mean()
    return {"intra": float(intra), "inter": float(inter), "margin": float(intra - inter), "items": int(ids.size)}
