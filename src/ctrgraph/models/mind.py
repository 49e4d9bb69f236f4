"""MIND (Li et al., Multi-Interest Network with Dynamic Routing for Recommendation at Tmall, CIKM 2019).

MIND is a retrieval (matching-stage) model: it maps a user's behaviours to K interest vectors and
is trained with a sampled softmax over all items. DemiNet (Wang et al., AAAI 2022) compares with it
as a CTR model without saying how; our adaptation (one of the Group-1 baselines of DemiNet's
Table 2) keeps MIND's interest extraction and replaces the retrieval head by the CTR tower:

1. Behaviour capsules: per behaviour group, e_i = the concatenation of the group's embedded
   sequences that have a ``target`` (e.g. ``hist_item_id`` ‖ ``hist_cat``: item ‖ category, as the
   DIN/DIEN/DMIN/DemiNet convention), size D.
2. B2I dynamic routing (Sec. 3.3.2, Algorithm 1): one shared bilinear matrix S (Eq. 8), routing
   logits b_ij initialised from a Gaussian, ``routing_iterations`` = 3 iterations of
   w_ij = softmax_j b_ij (Eq. 5), z_j = sum_i w_ij S e_i (Eq. 6), u_j = squash(z_j) (Eq. 7),
   b_ij += u_j^T S e_i, padded behaviours masked; ``stop_gradient`` on the routing iterations
   before the last (the authors' code). K'_u = max(1, min(K, floor(log2 |I_u|))) interests per
   user (Eq. 9, ``dynamic_k``). See :class:`ctrgraph.layers.multi_interest.CapsuleInterests`.
3. No per-capsule layer by default. MIND's Fig. 2 concatenates every capsule with the user profile
   and passes it through ReLU "H-layers" to fuse the profile into each retrieval vector; here the
   profile fields reach the CTR tower (itself a ReLU MLP over the readout) directly, so
   ``relu_layer=false`` is the default; ``relu_layer=true`` adds one shared Linear + ReLU per
   capsule (the ComiRec authors' MIND code). On the tiny planted data of the tests it cost test AUC
   (0.756 / 0.671 / 0.679 with it vs 0.765 / 0.765 / 0.791 without, seeds 0-2; docs/zoo-sequence.md).
4. Target-aware readout: the label-aware attention of Eq. 10 with the candidate in the role of the
   label, v = sum_k softmax_k(pow(u_k . e_t, p)) u_k, where e_t is the candidate's vector (the
   concatenation of the sequences' ``target`` fields, multi-valued targets mean-pooled), p =
   ``pow_p`` (pow taken sign-preserving; see ``interest_readout``); ``readout="argmax"`` picks the
   interest with the largest u_k . e_t (p -> inf, the hard readout of the ComiRec authors' MIND code).
   In MIND this attention exists only in training (serving retrieves with every vector); in CTR the
   candidate is known at scoring time, so the same readout serves both.
5. Tower: [the non-sequence fields' embeddings (user, candidate item and its attributes, context),
   the readout v per group, mean-pooled group members without a target] -> MLP -> one logit.

Choices the paper leaves open (config values): the capsule size is D (the behaviour vector size,
so that u_k . e_t is defined; the authors' code uses the embedding size); S starts at N(0, 1/D)
(``bilinear_std``; the std of the Glorot-uniform dense layer of the ComiRec authors' MIND code);
the Gaussian routing logits are drawn once per model and position (``routing_init="fixed"``,
positions counted from the most recent behaviour, ``positions``) so that scoring is deterministic;
``"sampled"`` draws fresh logits in every training forward as the authors' code (the fixed ones at
evaluation); K'_u rounds log2 down; ``pow_p`` = 1 (the value of the ComiRec authors' MIND code).
Preset ``comirec_code``: the ComiRec authors' reimplementation of MIND (hard readout, fixed K,
sampled logits, per-capsule ReLU layer).
Tests: tests/models/test_multi_interest.py.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..layers.multi_interest import CapsuleInterests
from .base import TowerConfig
from .interest_tower import InterestTowerModel


class MINDConfig(TowerConfig):
    interests: int = Field(4, ge=1)  # K
    routing_iterations: int = Field(3, ge=1)
    stop_gradient: bool = True
    routing_init: Literal["fixed", "sampled", "zeros"] = "fixed"
    dynamic_k: bool = True  # Eq. 9
    relu_layer: bool = False
    readout: Literal["attention", "argmax"] = "attention"
    pow_p: float = Field(1.0, ge=0.0)
    positions: Literal["recent", "start"] = "recent"
    bilinear_std: float | None = Field(None, gt=0.0)  # None: 1/sqrt(D)


class MIND(InterestTowerModel):
    name = "mind"
    Config = MINDConfig
    presets = {"comirec_code": {"readout": "argmax", "dynamic_k": False, "routing_init": "sampled",
                                "relu_layer": True}}
    paper = "Li et al., Multi-Interest Network with Dynamic Routing for Recommendation at Tmall, CIKM 2019"

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        d = embedding.dim
        self.build_tower(spec, cfg, d, lambda att: CapsuleInterests(
            len(att) * d, att[0].max_len, cfg.interests, "shared", cfg.routing_init, cfg.routing_iterations,
            cfg.stop_gradient, cfg.positions, cfg.bilinear_std, dynamic_k=cfg.dynamic_k, relu_layer=cfg.relu_layer))
