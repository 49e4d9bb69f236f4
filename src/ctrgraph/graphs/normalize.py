"""Adjacency normalisations (scipy CSR on the host, edge lists in torch for per-step graphs).

Degrees are weighted row sums ``d_h = sum_i A[h, i]`` (the neighbour count ``|N_h|`` on the 0/1
graphs of DG-ENN; Res-embedding Eq. 7's ``D = row sums of Z``, also for the asymmetric top-K Z).
A node of degree 0 gets an all-zero row in every normalisation except where stated.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def _deg(a: sp.csr_matrix) -> np.ndarray:
    return np.asarray(a.sum(axis=1), dtype=np.float64).ravel()


def _inv(x: np.ndarray, p: float) -> np.ndarray:
    out = np.zeros_like(x)
    nz = x > 0
    out[nz] = x[nz] ** -p
    return out


def sym_norm(a: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` (Res-embedding g_GCN Eq. 7; DG-ENN's ``d(h, i) = 1/sqrt(|N_h||N_i|)``, Eqs. 10-11).

    D = row sums, used on both sides (for an asymmetric A this is Eq. 7 as written).
    """
    a = sp.csr_matrix(a, dtype=np.float64)
    s = _inv(_deg(a), 0.5)
    out = sp.diags(s) @ a @ sp.diags(s)
    return sp.csr_matrix(out, dtype=np.float32)


def row_norm(a: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1 A``: each row averages its neighbours weighted by edge value (row-stochastic)."""
    a = sp.csr_matrix(a, dtype=np.float64)
    return sp.csr_matrix(sp.diags(_inv(_deg(a), 1.0)) @ a, dtype=np.float32)


def avg_norm(a: sp.spmatrix) -> sp.csr_matrix:
    """Res-embedding g_AVG (Eq. 6): every non-zero of row i becomes ``1 / nnz(row i)`` (weights ignored)."""
    a = sp.csr_matrix(a, copy=True)
    a.eliminate_zeros()
    nnz = np.diff(a.indptr)
    data = np.repeat(_inv(nnz.astype(np.float64), 1.0), nnz)
    return sp.csr_matrix((data.astype(np.float32), a.indices, a.indptr), shape=a.shape)


def gcn_literal_norm(a: sp.spmatrix, isolated_self: float = 1.0) -> sp.csr_matrix:
    """DG-ENN Eq. 9 taken literally: sum over ``{h} U N_h`` with ``d(h, i) = 1/sqrt(|N_h||N_i|)``.

    Neighbours get ``D^-1/2 A D^-1/2``; the centre term ``d(h, h) = 1/|N_h|`` (research notes
    2.2 #4). Eq. 9 leaves ``d(h, h)`` undefined for ``|N_h| = 0``; such nodes get
    ``isolated_self`` (default 1: the node keeps its own embedding; 0 zeroes it).
    """
    a = sp.csr_matrix(a, dtype=np.float64)
    a.setdiag(0)
    a.eliminate_zeros()
    d = _deg(a)
    s = _inv(d, 0.5)
    self_w = np.where(d > 0, _inv(d, 1.0), isolated_self)
    out = sp.diags(s) @ a @ sp.diags(s) + sp.diags(self_w)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.eliminate_zeros()
    return out


def kipf_norm(a: sp.spmatrix) -> sp.csr_matrix:
    """Kipf & Welling's renormalisation ``D~^-1/2 (A + I) D~^-1/2`` with ``D~`` = row sums of ``A + I``."""
    a = sp.csr_matrix(a, dtype=np.float64)
    a = a + sp.identity(a.shape[0], format="csr")
    return sym_norm(a)


NORMALIZATIONS = {"sym": sym_norm, "row": row_norm, "avg": avg_norm, "gcn": gcn_literal_norm, "kipf": kipf_norm}


def normalize(a: sp.spmatrix, kind: str) -> sp.csr_matrix:
    """Dispatch by name: ``sym``, ``row``, ``avg``, ``gcn`` (literal Eq. 9) or ``kipf``."""
    try:
        return NORMALIZATIONS[kind](a)
    except KeyError:
        raise ValueError(f"unknown normalisation {kind!r}; known: {sorted(NORMALIZATIONS)}") from None


def sym_norm_edges(rows: torch.Tensor, cols: torch.Tensor, n: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Edge values of ``D^-1/2 A D^-1/2`` for a square graph given as an edge list (torch, any device).

    For graphs rebuilt every step (the uv graph minus the batch's target edges): degrees are
    weighted row sums over the given edges.
    """
    w = torch.ones(rows.shape[0], dtype=torch.float32, device=rows.device) if weight is None else weight.float()
    deg = torch.zeros(n, dtype=torch.float32, device=rows.device).index_add_(0, rows, w)
    s = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
    return s[rows] * w * s[cols]
