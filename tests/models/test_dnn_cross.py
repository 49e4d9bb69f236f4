"""DNN-cross (EGIN's reference baseline): the hashed (history item x target item) ids, sum pooling over
valid positions only, and that the crossed feature is what separates it from the DNN."""
import numpy as np
import torch

from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.registry import build_model


def _batch(data, n=32):
    return next(iter(BatchLoader({k: np.asarray(v[:n]) for k, v in data.split("train").items()}, data.schema, n)))


def test_cross_ids_are_a_fixed_hash_of_the_pair(planted):
    m = build_model("dnn-cross", FeatureSpec(planted.schema, planted.vocab_sizes), {"hash_size": 1000}, dim=8)
    hist, target = torch.tensor([[3, 4, 0]]), torch.tensor([7])
    ids = m.cross_ids(hist, target)
    assert ids.tolist() == [[(3 * 1_000_003 + 7 * 999_983) % 1000, (4 * 1_000_003 + 7 * 999_983) % 1000,
                             (7 * 999_983) % 1000]]


def test_crossed_feature_pools_valid_positions_and_reaches_its_table(planted):
    torch.manual_seed(0)
    m = build_model("dnn-cross", FeatureSpec(planted.schema, planted.vocab_sizes), {"cross_init_std": 0.5}, dim=8)
    m.eval()
    b = _batch(planted)
    out = m(b).logits
    pad = b["hist_item_id"] == 0
    row = int(torch.nonzero(pad.any(1))[0])
    col = int(torch.nonzero(pad[row])[0])
    with torch.no_grad():  # a padded position's bucket never matters
        m.cross.weight[m.cross_ids(b["hist_item_id"], b["item_id"])[row, col]] += 10.0
    torch.testing.assert_close(m(b).logits, out)
    m.train()
    m(b).logits.sum().backward()
    used = torch.unique(m.cross_ids(b["hist_item_id"], b["item_id"])[b["hist_item_id"] > 0])
    g = m.cross.weight.grad.abs().sum(1)
    assert (g[used] > 0).all() and g.sum() == g[used].sum()
