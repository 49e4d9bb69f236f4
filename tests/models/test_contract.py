"""The stateless provider contract: a provider keeps nothing between calls, so a model that embeds two
views in one step (DemiNet's self-supervised views) gets both views' regularisers and auxiliary
losses into its loss; every registered model hands its embedded batch to ``output``."""
import numpy as np
import pytest
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.models.base import CTRModel, ModelConfig
from ctrgraph.registry import MODELS, build_model, build_provider
from ctrgraph.train.trainer import Trainer


class TwoViews(CTRModel):
    """Logits from view 1 only; view 2 (other item ids) contributes its auxiliary losses only."""

    name = "twoviews"
    Config = ModelConfig

    def __init__(self, spec, cfg, embedding):
        super().__init__(spec, cfg, embedding)
        self.head = torch.nn.Linear(embedding.dim, 1)

    @staticmethod
    def second_view(batch):
        other = dict(batch)
        other["item_id"] = (batch["item_id"] + 7) % 300 + 2
        other["hist_item_id"] = torch.zeros_like(batch["hist_item_id"])
        return other

    def forward(self, batch):
        v1 = self.embedding(batch)
        v2 = self.embedding(self.second_view(batch))
        return self.output(self.head(v1["item_id"]).squeeze(-1), v1, v2)


def _model(planted, lam=1.0):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    emb = build_provider("res", spec, 4, init_std=0.1, g="gcn", lam=lam)
    m = TwoViews(spec, ModelConfig(), emb)
    m.prepare(planted)
    return m


def _batch(planted, n=64):
    tr = planted.split("train")
    return {k: torch.as_tensor(np.asarray(v[:n])) for k, v in tr.items()}


def test_both_views_terms_reach_the_output(planted):
    m = _model(planted)
    b = _batch(planted)
    out = m(b)
    r = m.embedding.residual.weight
    rows1 = torch.unique(torch.cat([b["item_id"], b["hist_item_id"].flatten()]))
    rows2 = torch.unique(torch.cat([TwoViews.second_view(b)["item_id"], torch.zeros(1, dtype=torch.long)]))
    want = r[rows1].pow(2).sum() + r[rows2].pow(2).sum()  # lambda = 1: one L(R) term per view
    torch.testing.assert_close(out.aux["res_l2"], want)
    assert len(out.views) == 2
    torch.testing.assert_close(out.embedding_penalty(), out.views[0].penalty() + out.views[1].penalty())
    # each view carries its own step: the first view's rows are not overwritten by the second's
    assert torch.equal(out.views[0].step["rows"], rows1)


def test_the_second_views_regulariser_trains_rows_only_it_uses(planted):
    """Rows seen only by view 2 get no gradient from the CTR loss: they move in a training step only
    because view 2's L(R) term reaches the trainer's loss."""
    b = _batch(planted, 64)
    seen1 = set(torch.cat([b["item_id"], b["hist_item_id"].flatten()]).tolist())
    only2 = sorted(set(TwoViews.second_view(b)["item_id"].tolist()) - seen1)
    assert len(only2) > 5
    ends = {}
    for lam in (1.0, 0.0):
        m = _model(planted, lam)
        before = m.embedding.residual.weight.detach().clone()
        first = {k: v[:64] for k, v in planted.split("train").items()}
        sub = type(planted)(planted.schema, {k: np.concatenate([first[k], planted.split("valid")[k],
                                                                 planted.split("test")[k]])
                                             for k in planted.arrays}, planted.vocabs,
                            {"train": (0, 64), "valid": (64, 64 + planted.num_rows("valid")),
                             "test": (64 + planted.num_rows("valid"), 64 + planted.num_rows("valid")
                                      + planted.num_rows("test"))}, planted.meta)
        Trainer(TrainConfig(epochs=1, batch_size=64, lr=0.1, progress=False, patience=0)).fit(m, sub)
        ends[lam] = (m.embedding.residual.weight.detach() - before)[only2].abs().sum()
    assert ends[1.0] > 0 and ends[0.0] == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_hands_its_embedded_batch_to_output(planted, name):
    """With the res provider every model (that has embedding vectors) returns res_l2: a forward that
    dropped its embedded batch would lose the provider's terms silently."""
    if not MODELS[name].uses_embedding:
        pytest.skip(f"{name} has no embedding vectors")
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    torch.manual_seed(0)
    params = {"gin": {"top_n": 4, "fanouts": [4, 2]}, "bst": {"position": "index"}}.get(name, {})
    m = build_model(f"res-{name}", spec, params, dim=8, init_std=0.1)
    m.prepare(planted)
    m.train()
    out = m(_batch(planted, 32))
    assert "res_l2" in out.aux and out.aux["res_l2"] > 0 and len(out.views) >= 1
