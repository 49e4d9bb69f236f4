"""Feature-interaction operators on a field matrix E of shape [B, F, d]."""
from __future__ import annotations

import numpy as np
import torch


def upper_pairs(F: int, device: torch.device | None = None) -> torch.Tensor:
    """Index pairs (i, j), i < j, of F fields in row-major order -> [2, F(F-1)/2] (long).

    The same values as ``torch.triu_indices(F, F, 1)``, built from numpy so that a traced or
    ONNX-exported model holds them as a constant (ONNX has no ``triu_indices``)."""
    return torch.from_numpy(np.stack(np.triu_indices(int(F), 1))).to(device)


def fm_pairwise(E: torch.Tensor) -> torch.Tensor:
    """Second-order FM term sum_{i<j} <e_i, e_j> = 0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2) -> [B]."""
    s = E.sum(dim=1)
    return 0.5 * (s.pow(2) - E.pow(2).sum(dim=1)).sum(dim=1)


def inner_products(E: torch.Tensor) -> torch.Tensor:
    """All pairwise inner products <e_i, e_j>, i < j (upper triangle, row-major) -> [B, F(F-1)/2]."""
    F = E.shape[1]
    gram = torch.bmm(E, E.transpose(1, 2))
    iu = upper_pairs(F, E.device)
    return gram[:, iu[0], iu[1]]
