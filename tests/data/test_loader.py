import numpy as np
import torch

from ctrgraph.data.loader import BatchLoader


def test_epoch_covers_every_row_once_and_is_seeded(planted):
    tr = planted.split("train")
    ld = BatchLoader(tr, planted.schema, batch_size=97, shuffle=True, seed=3)
    ids = torch.cat([b["price"] for b in ld]).numpy()
    assert np.array_equal(np.sort(ids), np.sort(tr["price"]))
    ld2 = BatchLoader(tr, planted.schema, batch_size=97, shuffle=True, seed=3)
    assert np.array_equal(ids, torch.cat([b["price"] for b in ld2]).numpy())
    ld2.set_epoch(1)
    assert not np.array_equal(ids, torch.cat([b["price"] for b in ld2]).numpy())


def test_trimming_keeps_all_valid_positions(planted):
    tr = planted.split("train")
    for b in BatchLoader(tr, planted.schema, batch_size=64):
        L = b["hist_item_id"].shape[1]
        assert b["hist_cat"].shape[1] == L
        assert (b["hist_item_id"] != 0).sum(1).max() == L or L == 1
    total = sum(int((b["hist_item_id"] != 0).sum()) for b in BatchLoader(tr, planted.schema, batch_size=64))
    assert total == int((tr["hist_item_id"] != 0).sum())
