"""Two-stage pretrained item embeddings: the "+Skip-gram" and "+node2vec" baselines of
Res-embedding's Table 3 (Zhou et al. 2019, Sec. 5.3; Mikolov et al. 2013; Grover & Leskovec 2016).

Stage 1 (:meth:`PretrainedItemEmbedding.prepare`, train split only): item vectors are learned
with skip-gram and negative sampling (SGNS) over a corpus of item sequences,

    loss = -log s(u_o . v_c) - sum_{k=1..neg} log s(-u_k . v_c),  u_k ~ unigram^0.75,

- ``skipgram``: the corpus is each user's time-ordered train behaviour sequence
  (:func:`ctrgraph.graphs.behaviour_sequences`, each user once); items are the words.
- ``node2vec``: the corpus is biased random walks (return ``p``, in-out ``q``) on the item
  co-occurrence graph of the same sequences (:func:`ctrgraph.graphs.cooccurrence_graph`, window
  ``graph_window``, no top-K, symmetric counts as edge weights).

Stage 2: the input vectors v replace the item-id table (shared by the history field), then the
CTR model trains as usual. The paper does not say whether the table is fine-tuned, so
``finetune=True`` (default) keeps training it; ``finetune=False`` freezes it.

Choices the paper leaves open (ours): window 5 (word2vec's default), 5 negatives, 5 epochs,
SparseAdam lr 0.01, batches of 4096 pairs; node2vec p = 0.5, q = 2 (local, BFS-like walks),
10 walks of length 20 per item with an edge. Items absent from the corpus keep the provider's
N(0, init_std) init; ``scale`` optionally rescales the pretrained rows to that RMS value.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.schema import FeatureSpec, Role
from ..errors import ConfigError
from .base import EmbeddingProvider


# ----- corpus -> (centre, context) pairs ---------------------------------------------------------
def window_pairs(values: np.ndarray, offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (centre, context) pair at distance 1..window inside one sequence, both directions.

    ``values[offsets[i]:offsets[i+1]]`` is sequence i; pairs of equal items are kept (as in word2vec).
    """
    values = np.asarray(values, dtype=np.int64)
    seq = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    cs, xs = [], []
    for d in range(1, window + 1):  # a loop over the window radius only
        ok = seq[:-d] == seq[d:] if values.size > d else np.zeros(0, dtype=bool)
        a, b = values[:-d][ok], values[d:][ok]
        cs += [a, b]
        xs += [b, a]
    if not cs:
        e = np.zeros(0, dtype=np.int64)
        return e, e
    return np.concatenate(cs), np.concatenate(xs)


def train_skipgram(values: np.ndarray, offsets: np.ndarray, n_items: int, dim: int, window: int = 5,
                   negatives: int = 5, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SGNS over a ragged corpus -> (input vectors [n_items, dim] float32, item counts [n_items]).

    Vectorised per batch of pairs (gather, dot, logsigmoid); ids 0 (padding) never occur.
    """
    c, x = window_pairs(values, offsets, window)
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_items).astype(np.float64)
    g = torch.Generator().manual_seed(int(seed))
    v_in = nn.Embedding(n_items, dim, sparse=True)
    v_out = nn.Embedding(n_items, dim, sparse=True)
    with torch.no_grad():
        v_in.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=g)
        v_out.weight.zero_()
    if c.size == 0:
        return v_in.weight.detach().numpy().copy(), counts
    noise = torch.from_numpy(counts ** 0.75)
    noise = noise / noise.sum()
    opt = torch.optim.SparseAdam(list(v_in.parameters()) + list(v_out.parameters()), lr=lr)
    ct, xt = torch.from_numpy(c), torch.from_numpy(x)
    for _ in range(epochs):
        perm = torch.randperm(ct.numel(), generator=g)
        for s in range(0, perm.numel(), batch_size):  # a loop over mini-batches of pairs
            idx = perm[s:s + batch_size]
            ctr, ctx = ct[idx], xt[idx]
            neg = torch.multinomial(noise, idx.numel() * negatives, replacement=True, generator=g)
            vc = v_in(ctr)
            pos = (vc * v_out(ctx)).sum(-1)
            ng = torch.bmm(v_out(neg.view(-1, negatives)), vc.unsqueeze(-1)).squeeze(-1)
            loss = -(nn.functional.logsigmoid(pos) + nn.functional.logsigmoid(-ng).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return v_in.weight.detach().numpy().copy(), counts


def train_eges(values: np.ndarray, offsets: np.ndarray, side: np.ndarray, side_sizes: list[int], dim: int,
               window: int = 5, negatives: int = 10, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """EGES (Wang et al., KDD 2018, Eqs. 4-8) over a ragged corpus of walks -> (H [n_items, dim], counts).

    ``side`` [n_items, S] int: column 0 the item id itself, columns 1.. its side information (e.g.
    its category id; 0 = none) in vocabularies of ``side_sizes``. H_v = Σ_s exp(a_v^s) W^s[side_s(v)]
    / Σ_s exp(a_v^s) (Eq. 5; a per-item attention vector, unused sides (id 0) masked), trained with
    a sampled softmax over ``negatives`` uniform items per pair (the reference implementation's
    candidate sampler) against context vectors U (Eq. 6)."""
    c, x = window_pairs(values, offsets, window)
    n_items = side.shape[0]
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_items).astype(np.float64)
    g = torch.Generator().manual_seed(int(seed))
    tables = nn.ModuleList(nn.Embedding(n, dim) for n in side_sizes)
    for t in tables:
        with torch.no_grad():
            t.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=g)
    att = nn.Embedding(n_items, side.shape[1])  # a_v: one weight per side per item
    ctx = nn.Embedding(n_items, dim)
    with torch.no_grad():
        att.weight.zero_()
        ctx.weight.zero_()
    sd = torch.from_numpy(np.asarray(side, dtype=np.int64))

    def H(ids: torch.Tensor) -> torch.Tensor:
        s = sd[ids]  # [n, S]
        e = torch.stack([t(s[:, j]) for j, t in enumerate(tables)], 1)  # [n, S, d]
        a = att(ids).masked_fill(s == 0, float("-inf")).softmax(-1)
        return (a.unsqueeze(-1) * e).sum(1)

    if c.size:
        opt = torch.optim.Adam(list(tables.parameters()) + list(att.parameters()) + list(ctx.parameters()), lr=lr)
        ct, xt = torch.from_numpy(c), torch.from_numpy(x)
        for _ in range(epochs):
            perm = torch.randperm(ct.numel(), generator=g)
            for s0 in range(0, perm.numel(), batch_size):  # a loop over mini-batches of pairs
                idx = perm[s0:s0 + batch_size]
                hv = H(ct[idx])
                pos_ids = xt[idx]
                neg = torch.randint(1, n_items, (negatives,), generator=g)
                pos = (hv * ctx(pos_ids)).sum(-1, keepdim=True)
                ng = (hv @ ctx(neg).T).masked_fill(neg.unsqueeze(0) == pos_ids.unsqueeze(1), float("-inf"))
                loss = (torch.logsumexp(torch.cat([pos, ng], 1), 1) - pos.squeeze(1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        out = torch.cat([H(torch.arange(s0, min(n_items, s0 + 65536))) for s0 in range(0, n_items, 65536)])
    return out.numpy().copy(), counts


def train_siamese(values: np.ndarray, offsets: np.ndarray, side: np.ndarray, side_sizes: list[int], dim: int,
                  window: int = 5, negatives: int = 5, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The "+sms" pretraining (Res-embedding Sec. 2 / Table 3: "an additional network and context
    information of the data to pre-train embedding vectors", a *siamese* auxiliary network) ->
    (t(v) for every item [n_items, dim] float32, item counts [n_items]).

    One tower, shared by both inputs of a pair (siamese): x_v = [e_0(side_0(v)) ‖ ... ‖ e_S(side_S(v))]
    [S·d] (column 0 of ``side`` [n_items, S] the item id, then its context: e.g. its category / first
    genre, 0 = none, vocabularies ``side_sizes``), t(v) = W_2 ReLU(W_1 x_v + b_1) + b_2 [d]. Pairs
    (a, b) within ``window`` of a train behaviour sequence are positives, (a, n) with n ~ unigram^0.75
    negatives: loss = -log s(t(a)·t(b)) - sum_k log s(-t(a)·t(n_k)). Adam, mini-batches of pairs."""
    c, x = window_pairs(values, offsets, window)
    n_items = side.shape[0]
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_items).astype(np.float64)
    g = torch.Generator().manual_seed(int(seed))
    tables = nn.ModuleList(nn.Embedding(n, dim) for n in side_sizes)
    tower = nn.Sequential(nn.Linear(len(side_sizes) * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
    with torch.no_grad():
        for t in tables:  # N(0, 0.1): the tower needs inputs above its bias to learn from the start
            t.weight.normal_(0.0, 0.1, generator=g)
        for m in tower:
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.zero_()
    sd = torch.from_numpy(np.asarray(side, dtype=np.int64))

    def t_of(ids: torch.Tensor) -> torch.Tensor:
        s = sd[ids]  # [n, S]
        return tower(torch.cat([t(s[:, j]) for j, t in enumerate(tables)], -1))

    if c.size:
        noise = torch.from_numpy(counts ** 0.75)
        noise = noise / noise.sum()
        opt = torch.optim.Adam(list(tables.parameters()) + list(tower.parameters()), lr=lr)
        ct, xt = torch.from_numpy(c), torch.from_numpy(x)
        for _ in range(epochs):
            perm = torch.randperm(ct.numel(), generator=g)
            for s0 in range(0, perm.numel(), batch_size):  # a loop over mini-batches of pairs
                idx = perm[s0:s0 + batch_size]
                neg = torch.multinomial(noise, idx.numel() * negatives, replacement=True, generator=g)
                ta = t_of(ct[idx])
                pos = (ta * t_of(xt[idx])).sum(-1)
                ng = torch.bmm(t_of(neg).view(idx.numel(), negatives, -1), ta.unsqueeze(-1)).squeeze(-1)
                loss = -(nn.functional.logsigmoid(pos) + nn.functional.logsigmoid(-ng).sum(-1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        out = torch.cat([t_of(torch.arange(s0, min(n_items, s0 + 65536))) for s0 in range(0, n_items, 65536)])
    return out.numpy().copy(), counts


def item_side_tables(spec: FeatureSpec, item_table: str, multi: bool = False) -> list[str]:
    """The item-attribute tables used as side information: categorical ones (and, with ``multi``,
    multi-valued ones by their first value), excluding the item table itself."""
    from ..data.schema import Kind

    kinds = (Kind.CATEGORICAL, Kind.MULTI_VALUED) if multi else (Kind.CATEGORICAL,)
    return list(dict.fromkeys(f.table for f in spec.schema.by_role(Role.ITEM_ATTR)
                              if f.kind in kinds and f.embed and f.table != item_table))


# ----- providers -----------------------------------------------------------------------------------
class PretrainedItemEmbedding(EmbeddingProvider):
    """Plain tables; the item table is initialised in :meth:`prepare` from SGNS vectors."""

    name = "pretrained"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, finetune: bool = True,
                 window: int = 5, negatives: int = 5, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
                 scale: float | None = None, seed: int | None = None, table: str | None = None):
        super().__init__(spec, dim, init_std=init_std)
        item = spec.schema.first(Role.ITEM)
        self.item_table = table or (item.table if item is not None else None)
        if self.item_table not in self.tables:
            raise ConfigError(f"{self.name} embedding: no embedded item table {self.item_table!r} in the schema")
        if window < 1 or negatives < 1 or epochs < 0 or batch_size < 1 or lr <= 0:
            raise ConfigError(f"{self.name} embedding: window, negatives, batch_size >= 1, epochs >= 0, lr > 0")
        self.finetune, self.window, self.negatives, self.epochs = finetune, window, negatives, epochs
        self.batch_size, self.lr, self.scale = batch_size, lr, scale
        self.seed = int(torch.initial_seed() % (2**31)) if seed is None else seed  # the run's seed by default
        self.tables[self.item_table].weight.requires_grad_(finetune)
        self.pretrained_rows: np.ndarray | None = None  # item ids that received a pretrained vector

    def corpus(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets) of the item sequences skip-gram is trained on."""
        raise NotImplementedError

    def prepare(self, data) -> None:
        values, offsets = self.corpus(data)
        h = self.spec.vocab_sizes[self.item_table]
        vecs, counts = train_skipgram(values, offsets, h, self.dim, self.window, self.negatives, self.epochs,
                                      self.batch_size, self.lr, self.seed)
        self.load_item_vectors(vecs, np.flatnonzero(counts > 0))

    @torch.no_grad()
    def load_item_vectors(self, vecs: np.ndarray, rows: np.ndarray) -> None:
        """Copy ``vecs[rows]`` into the item table (row 0, padding, stays zero)."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[rows > 0]
        v = torch.as_tensor(vecs[rows], dtype=torch.float32)
        if self.scale is not None and v.numel():
            v = v * (self.scale / v.pow(2).mean().sqrt().clamp_min(1e-12))
        w = self.tables[self.item_table].weight
        w[torch.from_numpy(rows)] = v.to(w.device)
        self.pretrained_rows = rows


class SkipGramEmbedding(PretrainedItemEmbedding):
    """"+Skip-gram": SGNS over each user's time-ordered train behaviour sequence."""

    name = "skipgram"

    def corpus(self, data):
        from ..graphs import behaviour_sequences

        return behaviour_sequences(data, "users")


class Node2VecEmbedding(PretrainedItemEmbedding):
    """"+node2vec": SGNS over p/q-biased walks on the train item co-occurrence graph."""

    name = "node2vec"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, p: float = 0.5, q: float = 2.0,
                 walk_length: int = 20, num_walks: int = 10, graph_window: int = 2, finetune: bool = True,
                 window: int = 5, negatives: int = 5, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
                 scale: float | None = None, seed: int | None = None, table: str | None = None):
        super().__init__(spec, dim, init_std, finetune, window, negatives, epochs, batch_size, lr, scale, seed, table)
        if p <= 0 or q <= 0 or walk_length < 2 or num_walks < 1 or graph_window < 1:
            raise ConfigError("node2vec embedding: p, q > 0, walk_length >= 2, num_walks, graph_window >= 1")
        self.p, self.q, self.walk_length, self.num_walks, self.graph_window = p, q, walk_length, num_walks, graph_window

    def corpus(self, data):
        from ..graphs import (
            behaviour_sequences,
            cooccurrence_graph,
            node2vec_walks,
            walks_to_ragged,
        )

        h = self.spec.vocab_sizes[self.item_table]
        z = cooccurrence_graph(behaviour_sequences(data, "users"), h, self.graph_window, top_k=None)
        nodes = np.flatnonzero(np.diff(z.indptr) > 0)
        starts = np.tile(nodes, self.num_walks)
        walks = node2vec_walks(z, starts, self.walk_length, self.p, self.q, seed=self.seed)
        return walks_to_ragged(walks)


class SiameseEmbedding(PretrainedItemEmbedding):
    """"+sms": a siamese auxiliary network over the item and its context (every categorical or
    multi-valued item attribute, the most frequent / first value in the train split) pretrained on
    co-occurrence pairs of each user's train behaviour sequence (:func:`train_siamese`); its tower
    outputs t(v) initialise the item table, then the CTR model trains as usual (``finetune``).
    Res-embedding cites it as [15] without detail; the tower, loss and pairs are our reading of its
    one sentence (docs/res-embedding.md)."""

    name = "sms"

    def prepare(self, data) -> None:
        from ..data.lookups import attribute_table
        from ..graphs import behaviour_sequences

        values, offsets = behaviour_sequences(data, "users")
        h = self.spec.vocab_sizes[self.item_table]
        tabs = item_side_tables(self.spec, self.item_table, multi=True)
        side = [np.arange(h)] + [attribute_table(data, self.item_table, t) for t in tabs]
        sizes = [h] + [self.spec.vocab_sizes[t] for t in tabs]
        vecs, counts = train_siamese(values, offsets, np.stack(side, 1), sizes, self.dim, self.window,
                                     self.negatives, self.epochs, self.batch_size, self.lr, self.seed)
        self.load_item_vectors(vecs, np.flatnonzero(counts > 0))


class EGESEmbedding(Node2VecEmbedding):
    """EGES (Wang et al., KDD 2018), the graph baseline of EGIN's Table 3: DeepWalk walks (p = q = 1)
    on the train item graph of consecutive behaviours (``graph_window`` 1), skip-gram with the item's
    side information merged by per-item attention (:func:`train_eges`); the merged vectors H_v
    initialise the item table. Side information: every categorical item-attribute table (e.g. the
    category), each item's most frequent value in the train split. Two-stage as EGIN ran it: the
    item table is frozen (``finetune=False``) unless asked otherwise."""

    name = "eges"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, p: float = 1.0, q: float = 1.0,
                 walk_length: int = 10, num_walks: int = 10, graph_window: int = 1, finetune: bool = False,
                 window: int = 5, negatives: int = 10, epochs: int = 5, batch_size: int = 4096, lr: float = 0.01,
                 scale: float | None = None, seed: int | None = None, table: str | None = None):
        super().__init__(spec, dim, init_std, p, q, walk_length, num_walks, graph_window, finetune, window,
                         negatives, epochs, batch_size, lr, scale, seed, table)
        from ..data.schema import Kind

        self.side_tables = [f.table for f in spec.schema.by_role(Role.ITEM_ATTR)
                            if f.kind == Kind.CATEGORICAL and f.embed and f.table != self.item_table]

    def prepare(self, data) -> None:
        from ..data.lookups import attribute_table

        values, offsets = self.corpus(data)
        h = self.spec.vocab_sizes[self.item_table]
        side = [np.arange(h)] + [attribute_table(data, self.item_table, t) for t in self.side_tables]
        sizes = [h] + [self.spec.vocab_sizes[t] for t in self.side_tables]
        vecs, counts = train_eges(values, offsets, np.stack(side, 1), sizes, self.dim, self.window, self.negatives,
                                  self.epochs, self.batch_size, self.lr, self.seed)
        self.load_item_vectors(vecs, np.flatnonzero(counts > 0))
