"""Two-stage pretrained item vectors (Res-embedding Table 3's "+Skip-gram" and "+node2vec", EGIN's EGES
baseline): SGNS pairs against brute force, a planted co-occurrence, EGES's side-information
attention, the loaded table and the fine-tune switch."""
import numpy as np
import pytest
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.embeddings.pretrained import train_eges, train_skipgram, window_pairs
from ctrgraph.registry import build_model, build_provider
from ctrgraph.train.trainer import Trainer


def _cos(v):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


def test_window_pairs_match_brute_force():
    values = np.array([5, 6, 7, 8, 9, 10])
    offsets = np.array([0, 4, 6])
    c, x = window_pairs(values, offsets, 2)
    ref = set()
    for a, b in ((0, 4), (4, 6)):  # brute force per sequence
        seq = values[a:b]
        for i in range(len(seq)):
            for j in range(len(seq)):
                if 0 < abs(i - j) <= 2:
                    ref.add((seq[i], seq[j]))
    assert set(zip(c.tolist(), x.tolist())) == ref and len(c) == len(ref)


def test_skipgram_puts_cooccurring_items_closer():
    rng = np.random.default_rng(0)
    groups = [np.arange(2, 22), np.arange(22, 42)]  # planted: a sequence draws from one group only
    seqs = [rng.choice(groups[i % 2], 15) for i in range(400)]
    values = np.concatenate(seqs)
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])]
    vec, counts = train_skipgram(values, offsets, 42, 8, window=3, epochs=5, batch_size=1024, lr=0.02, seed=0)
    g = _cos(vec[2:42])
    same = np.equal.outer(np.arange(40) < 20, np.arange(40) < 20) & ~np.eye(40, dtype=bool)
    intra, inter = g[same].mean(), g[~np.equal.outer(np.arange(40) < 20, np.arange(40) < 20)].mean()
    assert intra > inter + 0.5, (intra, inter)
    assert counts[0] == 0 and counts[2:42].min() > 0


@pytest.mark.parametrize("name", ["skipgram", "node2vec"])
def test_pretrained_table_is_loaded_and_finetune_switch(planted, name):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    prov = build_provider(name, spec, 8, init_std=1e-4, seed=3, epochs=1)
    before = prov.tables["item_id"].weight.detach().clone()
    prov.prepare(planted)
    w = prov.tables["item_id"].weight.detach()
    rows = torch.from_numpy(prov.pretrained_rows)
    assert rows.numel() > 50
    if name == "skipgram":
        from ctrgraph.graphs import behaviour_sequences

        v, o = behaviour_sequences(planted, "users")
        ref, _ = train_skipgram(v, o, spec.vocab_sizes["item_id"], 8, epochs=1, seed=3)
        assert torch.allclose(w[rows], torch.from_numpy(ref)[rows])
    assert w[rows].abs().mean() > 100 * before[rows].abs().mean()  # pretrained scale, not the 1e-4 init
    others = torch.ones(w.shape[0], dtype=torch.bool)
    others[rows] = False
    assert torch.equal(w[others], before[others]) and w[0].abs().sum() == 0
    ends = {}
    for ft in (False, True):
        torch.manual_seed(0)
        m = build_model(f"{name}-din", spec, {}, dim=8, provider_params={"finetune": ft, "seed": 3, "epochs": 1})
        Trainer(TrainConfig(epochs=1, batch_size=512, progress=False)).fit(m, planted)
        ends[ft] = m.embedding.tables["item_id"].weight.detach()
    assert torch.equal(ends[False][rows], w[rows])  # frozen: the pretrained table as loaded
    assert not torch.allclose(ends[True][rows], w[rows])  # fine-tuned: it moved


def test_eges_puts_cooccurring_items_closer_and_uses_side_information():
    rng = np.random.default_rng(0)
    groups = [np.arange(2, 22), np.arange(22, 42)]
    seqs = [rng.choice(groups[i % 2], 15) for i in range(400)]
    values = np.concatenate(seqs)
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])]
    n = 44  # items 42 and 43 never occur: their vectors come from their side information only
    cat = np.zeros(n, dtype=np.int64)
    cat[2:22], cat[22:42], cat[42], cat[43] = 2, 3, 2, 3
    side = np.stack([np.arange(n), cat], 1)
    vec, counts = train_eges(values, offsets, side, [n, 4], 8, window=3, epochs=5, batch_size=1024, lr=0.02,
                             seed=0)
    g = _cos(vec[2:44])
    grp = np.r_[np.arange(40) < 20, True, False]
    same = np.equal.outer(grp, grp) & ~np.eye(42, dtype=bool)
    assert g[:40, :40][same[:40, :40]].mean() > g[:40, :40][~np.equal.outer(grp[:40], grp[:40])].mean() + 0.5
    assert g[40, :20].mean() > g[40, 20:40].mean() and g[41, 20:40].mean() > g[41, :20].mean()  # cold items
    assert counts[42] == 0 and counts[2:42].min() > 0


def test_eges_provider_is_frozen_by_default(planted):
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    prov = build_provider("eges", spec, 8, init_std=1e-4, seed=3, epochs=1, num_walks=2)
    assert not prov.finetune and not prov.tables["item_id"].weight.requires_grad
    before = prov.tables["item_id"].weight.detach().clone()
    prov.prepare(planted)
    rows = torch.from_numpy(prov.pretrained_rows)
    assert rows.numel() > 50 and not torch.allclose(prov.tables["item_id"].weight[rows], before[rows])
