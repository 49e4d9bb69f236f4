"""Two-stage pretrained baselines (skip-gram, node2vec), t-SNE, and the res-analysis commands."""
import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.embeddings import FeatureSpec, build_provider
from ctrgraph.embeddings.pretrained import (
    node2vec_walks,
    train_skipgram,
    walks_to_ragged,
    window_pairs,
)
from ctrgraph.errors import ConfigError
from ctrgraph.experiments import res_analysis as ra
from ctrgraph.models import build_model
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


def _ring_with_chords(n=12):
    r = np.arange(1, n)
    rows = np.r_[r, np.roll(r, -1), r[::3]]
    cols = np.r_[np.roll(r, -1), r, (r[::3] + 4 - 1) % (n - 1) + 1]
    a = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64)
    a.setdiag(0)
    a.eliminate_zeros()
    return sp.csr_matrix(a)


def test_node2vec_walks_follow_edges_and_pq_changes_the_walk():
    a = _ring_with_chords()
    starts = np.tile(np.arange(1, 12), 300)
    dense = a.toarray() > 0
    back = {}
    for p, q in ((0.1, 1.0), (10.0, 0.1)):
        w = node2vec_walks(a, starts, 8, p=p, q=q, seed=1)
        assert (w[:, 0] == starts).all() and (w > 0).all()
        assert dense[w[:, :-1], w[:, 1:]].all()  # every step is an edge
        back[p] = (w[:, 2:] == w[:, :-2]).mean()
    assert back[0.1] > 0.6 and back[10.0] < 0.1, back


def test_node2vec_second_step_matches_exact_transition():
    a = _ring_with_chords()
    p, q = 0.5, 2.0
    starts = np.full(60000, 1)
    w = node2vec_walks(a, starts, 3, p=p, q=q, seed=2)
    cur = w[0, 1]
    prev_nb = set(a[1].indices)
    nb = a[cur].indices
    alpha = np.array([1 / p if x == 1 else (1.0 if x in prev_nb else 1 / q) for x in nb])  # reference
    exact = alpha * a[cur].data / (alpha * a[cur].data).sum()
    sel = w[w[:, 1] == cur, 2]
    emp = np.array([(sel == x).mean() for x in nb])
    assert np.abs(emp - exact).max() < 0.02, (emp, exact)


def test_node2vec_rejects_bad_pq():
    with pytest.raises(ConfigError, match="p and q"):
        node2vec_walks(_ring_with_chords(), np.array([1]), 3, p=0.0)


def test_walks_to_ragged_drops_dead_ends():
    v, off = walks_to_ragged(np.array([[3, 4, 0], [5, 0, 0]]))
    assert v.tolist() == [3, 4, 5] and off.tolist() == [0, 2, 3]


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


def test_tsne_preserves_two_planted_clusters():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (60, 10)), rng.normal(6, 1, (60, 10))]
    lab = np.r_[np.zeros(60), np.ones(60)]
    y = ra.tsne(x, perplexity=15, iters=300, seed=0)
    d = np.linalg.norm(y[:, None] - y[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (lab[d.argmin(1)] == lab).all()  # nearest neighbour in the map has the same cluster
    c0, c1 = y[lab == 0].mean(0), y[lab == 1].mean(0)
    spread = max(np.linalg.norm(y[lab == 0] - c0, axis=1).mean(), np.linalg.norm(y[lab == 1] - c1, axis=1).mean())
    assert np.linalg.norm(c0 - c1) > 2 * spread
    with pytest.raises(ConfigError, match="perplexity"):
        ra.tsne(x[:10], perplexity=30)


def test_subsample_train_keeps_valid_test_and_nests(planted):
    from ctrgraph.data.dataset import EncodedDataset

    tagged = EncodedDataset(planted.schema, {**planted.arrays, "_row": np.arange(len(planted))}, planted.vocabs,
                            planted.bounds, planted.meta)
    half = ra.subsample_train(tagged, 0.5, seed=0)
    tenth = ra.subsample_train(tagged, 0.1, seed=0)
    n = planted.num_rows("train")
    assert half.num_rows("train") == round(0.5 * n) and tenth.num_rows("train") == round(0.1 * n)
    for s in ("valid", "test"):
        for k in tagged.arrays:
            assert np.array_equal(half.split(s)[k], tagged.split(s)[k])
    r10, r50 = tenth.split("train")["_row"], half.split("train")["_row"]
    assert set(r10) <= set(r50) and r50.max() < n and len(set(r50)) == r50.size
    with pytest.raises(ConfigError, match="fraction"):
        ra.subsample_train(planted, 0.0)


def test_run_key_ignores_seed_and_threads_only():
    st = ra.Setting(None, ["data.name=synthetic"])
    k = ra.run_key(st.cfg("din", []))
    assert k == ra.run_key(st.cfg("din", ["train.seed=7", "train.num_threads=1", "train.progress=false"]))
    assert k != ra.run_key(st.cfg("din", ["embedding.dim=8"])) and k.startswith("din-")
    with pytest.raises(ConfigError, match="variant"):
        ra.table3(st, Path("/nonexistent"), variants=["GCNN"])


TINY = ["--dataset", "synthetic", "--set", "data.params.n_instances=2000", "--set", "data.params.n_users=60",
        "--set", "data.params.n_items=120", "--set", "data.params.n_categories=4", "--set", "train.epochs=1",
        "--set", "train.progress=false", "--set", "train.num_threads=1", "--set", "embedding.dim=4",
        "--set", "data.cache=false"]


def _csv(p):
    with open(p) as f:
        return list(csv.DictReader(f))


def test_every_command_runs_end_to_end(tmp_path):
    from ctrgraph.cli import main

    out = tmp_path / "ra"
    a = ["res-analysis"]
    assert main(a + ["table3"] + TINY + ["--out", str(out), "--models", "DIN,MLP",
                                          "--variants", "plain,+R,GCN,+Skip-gram,+node2vec"]) == 0
    t3 = _csv(out / "table3.csv")
    assert [r["method"] for r in t3[:5]] == ["DIN", "DIN+R", "DIN+GCN", "DIN+Skip-gram", "DIN+node2vec"]
    assert len(t3) == 10 and (out / "table3.md").read_text().count("\n") == 12
    n_runs = len(list((out / "runs").iterdir()))
    assert main(a + ["tsne"] + TINY + ["--out", str(out), "--n-items", "60", "--tsne-iters", "50"]) == 0
    assert len(list((out / "runs").iterdir())) == n_runs  # plain DIN and DIN+GCN reused from table3
    assert (out / "tsne.png").stat().st_size > 1000 and len(_csv(out / "tsne.csv")) == 2
    assert main(a + ["table4"] + TINY + ["--out", str(out), "--dims", "4,6", "--variants", "plain,ATT"]) == 0
    assert [(r["method"], r["dim"]) for r in _csv(out / "table4.csv")] == [("DIN", "4"), ("DIN", "6"),
                                                                          ("DIN+ATT", "4"), ("DIN+ATT", "6")]
    assert main(a + ["fraction"] + TINY + ["--out", str(out), "--fractions", "0.5,1.0"]) == 0
    fr = _csv(out / "fraction.csv")
    assert len(fr) == 4 and int(fr[0]["train_rows"]) < int(fr[2]["train_rows"])
    assert (out / "fraction.png").stat().st_size > 1000
    assert main(a + ["lambda"] + TINY + ["--out", str(out), "--lams", "0,0.1"]) == 0
    lam = _csv(out / "lambda.csv")
    assert [float(r["lam"]) for r in lam] == [0.0, 0.1] and all(float(r["res_ratio_mean"]) > 0 for r in lam)
    assert (out / "lambda.png").stat().st_size > 1000
    assert main(a + ["table3"] + TINY + ["--out", str(out), "--variants", "nope"]) == 2
