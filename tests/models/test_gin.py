"""GIN (Graph Intention Network): graph buffers, neighbour trees, aggregation, switches, learning."""
from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import assert_padding_invariant

from ctrgraph.config import TrainConfig
from ctrgraph.data.loader import BatchLoader
from ctrgraph.data.schema import Field, Kind, Role, Schema
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.errors import ConfigError
from ctrgraph.registry import build_model
from ctrgraph.models.gin import cooccurrence_neighbours
from ctrgraph.train.trainer import Trainer

FAST = TrainConfig(epochs=10, batch_size=256, lr=1e-2, patience=3, progress=False)


def _spec(data):
    return FeatureSpec(data.schema, data.vocab_sizes)


def _batch(data, n=256, split="train"):
    rows = {k: np.asarray(v[:n]) for k, v in data.split(split).items()}
    return next(iter(BatchLoader(rows, data.schema, n)))


def _brute_table(seqs: list[list[int]], n_items: int, window: int, top_n: int):
    """Loop reference: w[a][b] += 1 for every two positions at distance 1..window holding a != b."""
    w = Counter()
    for s in seqs:
        for i in range(len(s)):
            for j in range(i + 1, min(len(s), i + window + 1)):
                if s[i] != s[j]:
                    w[s[i], s[j]] += 1
                    w[s[j], s[i]] += 1
    idx = np.zeros((n_items, top_n), dtype=np.int64)
    wt = np.zeros((n_items, top_n), dtype=np.float32)
    for a in range(n_items):
        ranked = sorted(((-c, b) for (x, b), c in w.items() if x == a))[:top_n]
        for p, (c, b) in enumerate(ranked):
            idx[a, p], wt[a, p] = b, -c
    return idx, wt


def _ragged(seqs):
    values = np.array([v for s in seqs for v in s], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return values, offsets


SEQS = [[2, 3, 4, 2, 5], [3, 4], [5, 6, 2, 3], [7], [4, 3, 8, 8, 3], [6, 5, 6, 2]]


@pytest.mark.parametrize("window, top_n", [(1, 2), (2, 2), (2, 3), (3, 10)])
def test_neighbour_table_equals_brute_force_counts(window, top_n):
    idx, wt = cooccurrence_neighbours(_ragged(SEQS), 10, window, top_n)
    ref_idx, ref_wt = _brute_table(SEQS, 10, window, top_n)
    assert np.array_equal(idx, ref_idx) and np.array_equal(wt, ref_wt)
    if (window, top_n) == (2, 2):  # hand-checked: 3 meets 8 four times, 2 and 4 three times each
        assert idx[3].tolist() == [8, 2] and wt[3].tolist() == [4.0, 3.0]  # the tie goes to the smaller id


def test_prepare_builds_the_graph_from_train_behaviours_only(planted):
    from ctrgraph.graphs import behaviour_sequences

    model = build_model("gin", _spec(planted), {"top_n": 4, "fanouts": [4, 2]}, dim=4)
    model.prepare(planted)
    values, offsets = behaviour_sequences(planted, "users")  # reconstructed from the train split
    seqs = [values[a:b].tolist() for a, b in pairwise(offsets)]
    ref_idx, ref_wt = _brute_table(seqs, planted.vocab_sizes["item_id"], 2, 4)
    assert np.array_equal(model.nbr_idx.numpy(), ref_idx) and np.array_equal(model.nbr_w.numpy(), ref_wt)
    assert model.nbr_idx[:2].eq(0).all()  # padding and OOV have no neighbours
    # a fresh model loads the graph from a checkpoint without the data set
    other = build_model("gin", _spec(planted), {"top_n": 4, "fanouts": [4, 2]}, dim=4)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.nbr_idx, model.nbr_idx)


def _small_model(planted, **params):
    torch.manual_seed(0)
    p = {"top_n": 3, "fanouts": [3, 2], "hops": 2, **params}
    model = build_model("gin", _spec(planted), p, dim=4, init_std=0.5)
    n = planted.vocab_sizes["item_id"]
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(2, n, (n, 3), generator=g)
    w = torch.randint(1, 5, (n, 3), generator=g).float()
    empty = torch.rand(n, 3, generator=g) < 0.3  # some missing slots, moved to the end of each row
    idx[empty], w[empty] = 0, 0.0
    order = torch.argsort((idx == 0).to(torch.int64), dim=1, stable=True)
    idx, w = idx.gather(1, order), w.gather(1, order)
    idx[:2], w[:2] = 0, 0.0
    model.set_graph(idx, w)
    with torch.no_grad():
        for q in model.hop_query:
            q.add_(torch.randn_like(q) * 0.5)
    return model.eval()


def _ref_h(model, x: int, depth: int, excl: int) -> torch.Tensor:
    """Recursive loop reference of the module docstring's item 3 (the tree of x, candidate excluded)."""
    cfg = model.cfg
    table = model.embedding.tables["item_id"].weight
    e = table[x]
    if depth == cfg.hops or x == 0:
        return e if x != 0 else torch.zeros_like(e)
    kids = [int(c) for c in model.nbr_idx[x, :cfg.fanouts[depth]] if int(c) != 0 and int(c) != excl]
    if not kids:
        return e
    hs = torch.stack([_ref_h(model, c, depth + 1, excl) for c in kids])
    if cfg.aggregation == "attention":
        s = torch.stack([e @ model.hop_query[depth] @ h for h in hs]) / math.sqrt(e.numel())
        a = torch.softmax(s, 0)
    else:
        a = torch.full((len(kids),), 1.0 / len(kids))
    return e + (a[:, None] * hs).sum(0)


def test_tree_gather_equals_loop_reference(planted):
    model = _small_model(planted)
    roots = torch.tensor([0, 2, 5, 7, 11, 40])
    levels = model.tree(roots)
    assert [lv.shape[1] for lv in levels] == [1, 3, 6]
    for r, root in enumerate(roots.tolist()):
        kids = model.nbr_idx[root, :3].tolist()
        grand = [c for k in kids for c in model.nbr_idx[k, :2].tolist()]  # row 0 is all zeros
        assert levels[1][r].tolist() == kids and levels[2][r].tolist() == grand


@pytest.mark.parametrize("params", [{}, {"aggregation": "mean"}, {"exclude_target": False}, {"hops": 1}])
def test_enriched_behaviours_equal_recursive_reference(planted, params):
    model = _small_model(planted, **params)
    b = _batch(planted, 40)
    with torch.no_grad():
        got = model.enrich(b["hist_item_id"], b["item_id"], model.embedding(b))
        hist, cand = b["hist_item_id"].tolist(), b["item_id"].tolist()
        ref = torch.stack([torch.stack([
            _ref_h(model, x, 0, cand[i] if model.cfg.exclude_target else -1) for x in row]) for i, row in enumerate(hist)])
    assert torch.allclose(got, ref, atol=1e-5)


def test_candidate_is_masked_out_of_the_neighbour_trees(planted):
    model = _small_model(planted)
    b = _batch(planted, 64)
    levels = model.tree(b["hist_item_id"].reshape(-1))
    deep = torch.cat(levels[1:], 1).view(64, -1, 9)
    hit = (deep == b["item_id"].view(-1, 1, 1)).any(-1) & (b["hist_item_id"] > 0)
    assert hit.any()  # the random graph puts some candidates into their behaviours' trees
    with torch.no_grad():
        on = model.enrich(b["hist_item_id"], b["item_id"], model.embedding(b))
        model.cfg.exclude_target = False
        off = model.enrich(b["hist_item_id"], b["item_id"], model.embedding(b))
    differs = (on - off).abs().sum(-1) > 1e-6
    assert torch.equal(differs, hit)  # exactly the positions whose tree holds the candidate


def test_switches_change_the_output_and_hops0_is_din(planted):
    b = _batch(planted, 128)
    base = _small_model(planted)
    with torch.no_grad():
        ref = base(b).logits
        for change in ({"hops": 0}, {"hops": 1}, {"aggregation": "mean"}, {"exclude_target": False}):
            other = _small_model(planted, **change)
            other.load_state_dict(base.state_dict(), strict=False)
            assert not torch.allclose(other(b).logits, ref, atol=1e-6), change
        # hops=0 is DIN with the same parameters
        off = _small_model(planted, hops=0)
        din = build_model("din", _spec(planted), {}, dim=4)
        din.load_state_dict({k: v for k, v in off.state_dict().items() if not k.startswith(("nbr_", "hop_"))})
        assert torch.allclose(din.eval()(b).logits, off(b).logits, atol=1e-6)


def test_sampled_neighbours_come_from_the_table_and_eval_is_deterministic(planted):
    model = _small_model(planted, sample=True, fanouts=[2, 1])
    roots = torch.arange(2, planted.vocab_sizes["item_id"])
    model.train()
    torch.manual_seed(3)
    a = model.tree(roots)[1]
    b = model.tree(roots)[1]
    table = model.nbr_idx[roots]
    assert ((a.unsqueeze(-1) == table.unsqueeze(1)).any(-1) | (a == 0)).all()  # drawn from the row
    valid = (a > 0).sum(1)
    assert torch.equal(valid, (table > 0).sum(1).clamp(max=2))  # as many as exist, up to the fan-out
    assert (a[:, 0] != a[:, 1]).logical_or(a[:, 1] == 0).all()  # without replacement
    assert not torch.equal(a, b)  # a new draw per step
    model.eval()
    assert torch.equal(model.tree(roots)[1], table[:, :2])  # evaluation: the heaviest, in order


def test_gin_learns_planted_signal(planted):
    torch.manual_seed(0)
    model = build_model("gin", _spec(planted), {}, dim=8, init_std=0.01)
    res = Trainer(FAST).fit(model, planted)
    assert res["test"]["auc"] > 0.7, res["test"]
    assert (model.nbr_w > 0).any()  # prepare ran inside fit


@pytest.mark.parametrize("params", [{}, {"aggregation": "mean", "hops": 1}])
def test_padding_never_changes_a_prediction(planted, params):
    torch.manual_seed(0)
    model = build_model("gin", _spec(planted), params, dim=8)
    model.prepare(planted)
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model(_batch(planted))  # move Dice's BatchNorm statistics
    assert_padding_invariant(model, planted)


@pytest.mark.parametrize("params, msg", [
    ({"hops": 3}, "hops=3 needs 3 fanouts"),
    ({"fanouts": [10, 11]}, "1..top_n=10"),
    ({"top_n": 4}, "1..top_n=4"),
    ({"window": 0}, "window"),
    ({"aggregation": "max"}, "aggregation"),
    ({"fan_out": [3]}, "fan_out"),
])
def test_config_errors_are_clear(planted, params, msg):
    with pytest.raises(ConfigError, match=msg):
        build_model("gin", _spec(planted), params, dim=4)


def test_needs_a_behaviour_sequence_of_items():
    schema = Schema((Field("user_id", Kind.CATEGORICAL, Role.USER), Field("item_id", Kind.CATEGORICAL, Role.ITEM),
                     Field("hist_cat", Kind.SEQUENCE, Role.BEHAVIOR, vocab="cat", max_len=3, target="cat"),
                     Field("cat", Kind.CATEGORICAL, Role.ITEM_ATTR), Field("label", Kind.NUMERIC, Role.LABEL)))
    spec = FeatureSpec(schema, {"user_id": 5, "item_id": 5, "cat": 4})
    with pytest.raises(ConfigError, match="target is the item field"):
        build_model("gin", spec, {}, dim=4)
