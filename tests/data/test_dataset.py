"""EncodedDataset.subsample_train (``data.train_fraction``): nested subsets, valid / test unchanged."""
import numpy as np
import pytest

from ctrgraph.data.dataset import EncodedDataset
from ctrgraph.errors import DataError


def test_subsample_train_keeps_valid_test_and_nests(planted):
    tagged = EncodedDataset(planted.schema, {**planted.arrays, "_row": np.arange(len(planted))}, planted.vocabs,
                            planted.bounds, planted.meta)
    half = tagged.subsample_train(0.5, seed=0)
    tenth = tagged.subsample_train(0.1, seed=0)
    n = planted.num_rows("train")
    assert half.num_rows("train") == round(0.5 * n) and tenth.num_rows("train") == round(0.1 * n)
    for s in ("valid", "test"):
        for k in tagged.arrays:
            assert np.array_equal(half.split(s)[k], tagged.split(s)[k])
    r10, r50 = tenth.split("train")["_row"], half.split("train")["_row"]
    assert set(r10) <= set(r50) and r50.max() < n and len(set(r50)) == r50.size
    assert tagged.subsample_train(1.0) is tagged
    assert not np.array_equal(tagged.subsample_train(0.5, seed=1).split("train")["_row"], r50)
    with pytest.raises(DataError, match="fraction"):
        planted.subsample_train(0.0)
