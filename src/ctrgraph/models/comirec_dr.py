"""ComiRec-DR (Cen et al., Controllable Multi-Interest Framework for Recommendation, KDD 2020),
the dynamic-routing variant of ComiRec's multi-interest extraction module (Sec. 3.3).

ComiRec is a retrieval model (sampled softmax over all items; the aggregation module of Sec. 3.5
only serves retrieval). DemiNet (Wang et al., AAAI 2022) compares with it as a CTR model without
saying how; our adaptation keeps the interest extraction and replaces the retrieval head by the
CTR tower:

1. Behaviour vectors e_i: per behaviour group, the concatenation of the group's embedded sequences
   that have a ``target`` (item ‖ category), size D.
2. Dynamic routing (Eq. 1-4, Algorithm 1): ê_{j|i} = W_ij e_i with one D x D matrix per behaviour
   position i and interest j (Eq. 1; the authors' code's "bilinear type 2"), routing logits
   starting at 0 (authors' code), ``routing_iterations`` = 3 iterations of c_ij = softmax_j b_ij
   (Eq. 4), s_j = sum_i c_ij ê_{j|i} (Eq. 2), v_j = squash(s_j) (Eq. 3), b_ij += v_j . ê_{j|i};
   padded behaviours masked; ``stop_gradient`` on the iterations before the last (authors' code).
   See :class:`ctrgraph.layers.multi_interest.CapsuleInterests`.
3. Target-aware readout: ``readout="argmax"`` (default) = ComiRec's training readout (Eq. 8),
   v_u = V_u[:, argmax_k(V_u^T e_t)], with the candidate's vector e_t (concatenation of the
   sequences' ``target`` fields) in the role of the target item; ``"attention"`` =
   softmax_k(pow(V_u^T e_t, p)) weighting (MIND's label-aware attention; ComiRec's code computes
   the same weights with p = 1 before taking the argmax).
4. Tower: [non-sequence fields' embeddings (user, candidate, attributes, context), v_u per group,
   mean-pooled group members without a target] -> MLP -> one logit.

Choices the paper leaves open (config values): the interest size is D (so that V_u^T e_t is
defined); positions i count back from the most recent behaviour (``positions="recent"``, 0 = most
recent, independent of the padding; ``"start"`` = column index as the authors' code on its
post-padded sequences), one W per position up to the field's ``max_len``; W starts at N(0, 1) as
the authors' code (``bilinear_std``; ``null`` = N(0, 1/D), which keeps the embedding scale but left the
squashed capsules tiny at the start: test AUC 0.654 / 0.716 / 0.701 vs 0.743 / 0.732 / 0.715 on the
planted test data, seeds 0-2; docs/zoo-sequence.md). ComiRec's diversity-controlled aggregation
(Eq. 11-13) is a retrieval step and has no CTR counterpart.
Tests: tests/models/test_multi_interest.py.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..layers.multi_interest import CapsuleInterests
from .base import TowerConfig
from .interest_tower import InterestTowerModel


class ComiRecDRConfig(TowerConfig):
    interests: int = Field(4, ge=1)  # K
    routing_iterations: int = Field(3, ge=1)
    stop_gradient: bool = True
    routing_init: Literal["zeros", "fixed", "sampled"] = "zeros"
    readout: Literal["argmax", "attention"] = "argmax"
    pow_p: float = Field(1.0, ge=0.0)
    positions: Literal["recent", "start"] = "recent"
    bilinear_std: float | None = Field(1.0, gt=0.0)  # authors' code: N(0, 1); None: 1/sqrt(D)


class ComiRecDR(InterestTowerModel):
    name = "comirec-dr"
    Config = ComiRecDRConfig
    presets = {}
    paper = "Cen et al., Controllable Multi-Interest Framework for Recommendation, KDD 2020 (ComiRec-DR)"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.build_tower(spec, cfg, d, lambda att: CapsuleInterests(
            len(att) * d, att[0].max_len, cfg.interests, "per_position", cfg.routing_init, cfg.routing_iterations,
            cfg.stop_gradient, cfg.positions, cfg.bilinear_std))
