import numpy as np
import pytest

from ctrgraph.data.schema import Field, Kind, Role, Schema
from ctrgraph.data.vocab import OOV, PAD, Vocab
from ctrgraph.errors import ConfigError


@pytest.mark.parametrize("values", [np.array([5, 3, 3, 9]), np.array(["b", "a", "a", "z"]),
                                    np.array([10**12, 7, 7, 3])])
def test_vocab_maps_train_values_and_oov(values):
    v = Vocab.build("f", [values])
    ids = v.encode(values)
    assert ids.min() >= 2 and len(v) == 2 + np.unique(values).size
    assert (ids[1] == ids[2])  # equal values -> equal ids
    unseen = np.array([values[0]]).astype(values.dtype)
    unseen[0] = 11 if values.dtype.kind in "iu" else "unseen"
    assert v.encode(unseen)[0] == OOV
    assert (v.decode(ids) == values).all()


def test_vocab_min_count_and_ordering():
    v = Vocab.build("f", [np.array([4, 4, 2, 8])], min_count=2)
    assert v.encode(np.array([4, 2, 8])).tolist() == [2, OOV, OOV]
    assert PAD == 0


def test_int_vocab_encodes_strings_at_predict_time():
    v = Vocab.build("f", [np.array([1, 2, 30])])
    assert v.encode(np.array(["30", "2", "x"], dtype=object)).tolist() == [4, 3, OOV]


def test_schema_rejects_bad_definitions():
    lab = Field("label", Kind.NUMERIC, Role.LABEL)
    with pytest.raises(ConfigError, match="duplicate"):
        Schema((Field("a", Kind.CATEGORICAL, Role.USER), Field("a", Kind.CATEGORICAL, Role.ITEM), lab))
    with pytest.raises(ConfigError, match="max_len"):
        Schema((Field("s", Kind.SEQUENCE, Role.BEHAVIOR), lab))
    with pytest.raises(ConfigError, match="label"):
        Schema((Field("a", Kind.CATEGORICAL, Role.USER),))
    with pytest.raises(ConfigError, match="kind"):
        Field.from_dict({"name": "x", "kind": "categoric", "role": "user"})
    with pytest.raises(ConfigError, match="unknown key"):
        Field.from_dict({"name": "x", "kind": "categorical", "role": "user", "colour": 1})


def test_schema_json_roundtrip_and_groups():
    s = Schema((Field("item_id", Kind.CATEGORICAL, Role.ITEM),
                Field("h", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=3, target="item_id"),
                Field("hc", Kind.SEQUENCE, Role.BEHAVIOR, vocab="c", max_len=3, group="h"),
                Field("label", Kind.NUMERIC, Role.LABEL)))
    assert Schema.from_json(s.to_json()) == s
    assert [f.name for f in s.sequence_groups()["h"]] == ["h", "hc"]
    assert s.tables == ["item_id", "c"]
