"""Analyses the study items compute from data sets and trained runs (pure numpy / torch, no loop
over rows, users or items):

- test-row buckets (DG-ENN Table 6 / Fig. 6): a row's train frequency in a field, its behaviour
  length, its user's number of train rows;
- data statistics (DG-ENN Fig. 1): feature-value frequencies and users' behaviour lengths;
- learned item embeddings (Res-embedding Fig. 7, its Proposition 1): exact t-SNE, within- vs
  across-category cosines, the most frequent items and their colours;
- planted click probabilities of the synthetic recipe (a label-noise-free yardstick).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import EncodedDataset
from ..data.schema import Kind, Role, Schema
from ..errors import ConfigError
from .stats import bucket_index, bucket_names

DEFAULT_EDGES = (1, 5, 10, 20, 50, 100)


# ----- test-row buckets ----------------------------------------------------------------------------
def categorical_fields(schema: Schema, names: list[str], what: str) -> list[str]:
    for n in names:
        if n not in schema:
            raise ConfigError(f"unknown field {n!r}; categorical fields: "
                              f"{[f.name for f in schema.fields if f.kind == Kind.CATEGORICAL and f.encoded]}")
        if schema[n].kind != Kind.CATEGORICAL or not schema[n].encoded:
            raise ConfigError(f"field {n!r} is {schema[n].kind.value}; {what} buckets categorical fields only")
    return names


def feature_frequencies(data: EncodedDataset, fields: list[str], split: str = "test") -> np.ndarray:
    """[rows of ``split``, fields]: train-split row count of each row's value in each field (one
    bincount over the fields' ids, offset per field)."""
    tr, te = data.split("train"), data.split(split)
    sizes = np.array([data.vocab_sizes[data.schema[f].table] for f in fields], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tr_ids = np.stack([np.asarray(tr[f], dtype=np.int64) for f in fields], 1) + off
    te_ids = np.stack([np.asarray(te[f], dtype=np.int64) for f in fields], 1) + off
    counts = np.bincount(tr_ids.ravel(), minlength=int(sizes.sum()))
    return counts[te_ids]


def behaviour_field(schema: Schema) -> str:
    """The behaviour sequence compared with the candidate item (``target`` = the item field)."""
    item = schema.first(Role.ITEM)
    for f in schema.by_role(Role.BEHAVIOR):
        if f.kind == Kind.SEQUENCE and item is not None and f.target == item.name:
            return f.name
    raise ConfigError("history buckets need a behaviour sequence whose target is the item field")


def history_lengths(data: EncodedDataset, by: str = "hist", split: str = "test") -> np.ndarray:
    """Per row of ``split``: ``hist`` = valid (non-padding) entries of its behaviour sequence (the
    paper's "length of user behavior sequence", capped at the field's ``max_len``); ``user_rows`` =
    the user's number of train rows (uncapped)."""
    te = data.split(split)
    if by == "hist":
        return (np.asarray(te[behaviour_field(data.schema)]) != 0).sum(1)
    if by == "user_rows":
        user = data.schema.first(Role.USER)
        if user is None:
            raise ConfigError("user_rows buckets need a user field")
        counts = np.bincount(np.asarray(data.split("train")[user.name], dtype=np.int64),
                             minlength=int(np.max(data.arrays[user.name])) + 1)
        return counts[np.asarray(te[user.name], dtype=np.int64)]
    raise ConfigError(f"history buckets: by must be 'hist' or 'user_rows'; got {by!r}")


# ----- data statistics (DG-ENN Fig. 1) -------------------------------------------------------------
def value_frequency_rows(data: EncodedDataset, fields: list[str], edges=DEFAULT_EDGES) -> list[dict]:
    """One row per (field, frequency bucket): seen values in the bucket and their share."""
    tr = data.split("train")
    rows = []
    for f in categorical_fields(data.schema, fields, "fig1"):  # a handful of fields
        counts = np.bincount(np.asarray(tr[f], dtype=np.int64), minlength=data.vocab_sizes[data.schema[f].table])
        seen = counts[counts > 0]
        per = np.bincount(bucket_index(seen, edges), minlength=len(edges) + 1)
        first = 1 if edges[0] <= 1 else 0  # the bucket below 1 is empty: unseen values are not counted
        for name, n in zip(bucket_names(edges)[first:], per[first:]):
            rows.append({"panel": "feature frequency", "field": f, "bucket": name, "count": int(n),
                         "share": float(n / max(1, seen.size))})
    return rows


def behaviour_lengths(data: EncodedDataset) -> np.ndarray:
    """Train behaviour-sequence length of every user with a train row (the time-ordered items of
    its train histories, as the item transition graph sees them; 0 without one)."""
    from ..graphs import user_sequences

    s, tr = data.schema, data.split("train")
    user = s.first(Role.USER)
    if user is None:
        raise ConfigError("fig1 needs a user field")
    hist = behaviour_field(s)
    ts = next((f for f in s.fields if f.group == hist and not f.embed), None)
    _, offs, uids = user_sequences(tr[user.name], tr[hist], tr[ts.name] if ts is not None else None)
    users = np.unique(np.asarray(tr[user.name], dtype=np.int64))
    length = np.zeros(int(max(users.max(initial=0), np.max(uids, initial=0))) + 1, dtype=np.int64)
    length[np.asarray(uids, dtype=np.int64)] = np.diff(offs)
    return length[users]


def behaviour_rows(data: EncodedDataset, edges=DEFAULT_EDGES) -> list[dict]:
    """One row per behaviour-length bucket: users in it and their share."""
    length = behaviour_lengths(data)
    per = np.bincount(bucket_index(length, edges), minlength=len(edges) + 1)
    return [{"panel": "behaviour length", "field": "users", "bucket": name, "count": int(n),
             "share": float(n / max(1, length.size))} for name, n in zip(bucket_names(edges), per)]


# ----- learned item embeddings (Res-embedding Fig. 7) ----------------------------------------------
def item_embedding_matrix(model) -> np.ndarray:
    """The item table of a trained model: its ``item_vectors()`` when it has one (EGIN: the graph
    embeddings), else its provider's (E = W C_b + R for ``res-*`` models)."""
    from ..embeddings.res import ResEmbedding

    own = model.item_vectors() if hasattr(model, "item_vectors") else None  # EGIN's graph table
    if own is not None:
        return own.detach().cpu().numpy()
    emb = model.embedding
    with torch.no_grad():
        if isinstance(emb, ResEmbedding):
            return emb.table_vectors().cpu().numpy()
        item = emb.spec.schema.first(Role.ITEM)
        return emb.tables[item.table].weight.detach().cpu().numpy()


def category_cosines(emb: np.ndarray, categories: np.ndarray, ids: np.ndarray | None = None,
                     max_items: int = 3000, seed: int = 0) -> dict[str, float]:
    """Mean pairwise cosine within categories vs across (over ``ids``, default all rows >= 2);
    Res-embedding's Proposition 1 predicts the gap grows with graph-combined central parts.
    Vectorised on at most ``max_items`` items (a random subset when more): one Gram matrix."""
    ids = np.arange(2, emb.shape[0]) if ids is None else np.asarray(ids)
    if ids.size > max_items:
        ids = np.random.default_rng(seed).choice(ids, max_items, replace=False)
    x = emb[ids].astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    c = np.asarray(categories)[ids]
    gram = x @ x.T
    same = c[:, None] == c[None, :]
    off = ~np.eye(ids.size, dtype=bool)
    intra = gram[same & off].mean()
    inter = gram[~same].mean()
    return {"intra": float(intra), "inter": float(inter), "margin": float(intra - inter), "items": int(ids.size)}


def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 30.0, iters: int = 1000, lr: float | None = None,
         exaggeration: float = 12.0, exaggeration_iters: int = 250, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton 2008) in torch, O(n^2) memory: for ~1,000 points.

    Gaussian affinities with a per-point bandwidth found by bisection on the entropy (all rows at
    once) to match ``perplexity``; P symmetrised; Student-t Q; gradient descent with momentum
    0.5 -> 0.8, delta-bar-delta gains and early exaggeration; ``lr`` default
    max(n / (4 * exaggeration), 10) (sklearn's "auto" rule with a floor of 10 instead of 50, which
    oscillated on 120 points).
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = x.shape[0]
    if n < 3 or perplexity >= n:
        raise ConfigError(f"t-SNE needs more than perplexity ({perplexity}) points, got {n}")
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    lo = torch.full((n, 1), 1e-20, dtype=x.dtype)
    hi = torch.full((n, 1), 1e20, dtype=x.dtype)
    beta = torch.ones(n, 1, dtype=x.dtype)
    target = np.log(perplexity)
    dmin = d2.min(1, keepdim=True).values
    for _ in range(100):  # bisection steps, every row at once
        p = torch.exp(-(d2 - dmin) * beta)
        sp_ = p.sum(1, keepdim=True)
        h = torch.log(sp_) + beta * ((d2 - dmin).nan_to_num(posinf=0) * p).sum(1, keepdim=True) / sp_
        big = h > target  # entropy too high -> increase beta
        lo = torch.where(big, beta, lo)
        hi = torch.where(big, hi, beta)
        beta = torch.where(hi < 1e19, (lo + hi) / 2, beta * 2)
    p = torch.exp(-(d2 - dmin) * beta)
    p = p / p.sum(1, keepdim=True)
    p = (p + p.T) / (2 * n)
    p = p.clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, dims, generator=g, dtype=x.dtype) * 1e-4
    vel = torch.zeros_like(y)
    gains = torch.ones_like(y)
    lr = lr or max(n / (4.0 * exaggeration), 10.0)
    for it in range(iters):  # gradient steps
        ex = exaggeration if it < exaggeration_iters else 1.0
        num = 1.0 / (1.0 + torch.cdist(y, y).pow(2))
        num.fill_diagonal_(0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        w = (ex * p - q) * num
        grad = 4.0 * (w.sum(1, keepdim=True) * y - w @ y)
        gains = torch.where(torch.sign(grad) != torch.sign(vel), gains + 0.2, gains * 0.8).clamp_min(0.01)
        mom = 0.5 if it < exaggeration_iters else 0.8
        vel = mom * vel - lr * gains * grad
        y = y + vel
        y = y - y.mean(0)
    return y.numpy()


def top_items(data: EncodedDataset, k: int = 1000) -> np.ndarray:
    """The ``k`` item ids most frequent as train targets (ids >= 2: no padding, no OOV)."""
    item = data.schema.first(Role.ITEM)
    cnt = np.bincount(np.asarray(data.split("train")[item.name], dtype=np.int64).ravel(),
                      minlength=data.vocab_sizes[item.table])
    cnt[:2] = 0
    order = np.argsort(-cnt, kind="stable")
    return order[: min(k, int((cnt > 0).sum()))]


def envelope_radii(x: np.ndarray, groups: np.ndarray, iters: int = 2000) -> np.ndarray:
    """Res-embedding's envelope radius (Sec. 3.1, Theorem 1) of every group of points:
    phi(V) = min_w max_{s in V} ||w - s||_2, the radius of the smallest ball enclosing V.

    ``x`` [n, d] points, ``groups`` [n] ints in 0..G-1 -> radii [G] (nan for an empty group). All
    groups at once by the Badoiu-Clarkson iteration c <- c + (p_far - c) / (t + 1) (p_far: the
    group's point farthest from c); the smallest max-distance seen is returned, an upper bound
    within a factor 1 + 1/sqrt(iters) of the exact radius."""
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    g_n = int(groups.max()) + 1 if groups.size else 0
    out = np.full(g_n, np.nan)
    if not groups.size:
        return out
    order = np.argsort(groups, kind="stable")
    xs, gs = x[order], groups[order]
    present, starts = np.unique(gs, return_index=True)
    gi = np.searchsorted(present, gs)  # dense group index of every sorted point
    c = xs[starts].copy()  # [G', d]: start at each group's first point
    best = np.full(present.size, np.inf)
    for t in range(1, iters + 1):  # a loop over iterations; every group at once
        dist = np.linalg.norm(xs - c[gi], axis=1)
        gmax = np.maximum.reduceat(dist, starts)
        best = np.minimum(best, gmax)
        hit = np.flatnonzero(dist == gmax[gi])
        _, first = np.unique(gi[hit], return_index=True)
        far = xs[hit[first]]
        c += (far - c) / (t + 1)
    out[present] = best
    return out


def envelope_summary(emb: np.ndarray, domains: np.ndarray, ids: np.ndarray, iters: int = 2000) -> dict:
    """Theorem 1's quantities for the items ``ids`` of the item matrix ``emb`` [H, d], interest
    domains = ``domains`` [H] (e.g. the first genre; domains with one item and ids < 2 left out):
    R_max = max over domains of phi(domain), their mean, phi of all the items together, and the two
    scale-free ratios R_max / phi(all), mean / phi(all)."""
    d = np.asarray(domains)[ids]
    keep = d >= 2
    ids, d = ids[keep], d[keep]
    _, inv, cnt = np.unique(d, return_inverse=True, return_counts=True)
    multi = cnt[inv] >= 2
    r = envelope_radii(emb[ids[multi]], np.unique(inv[multi], return_inverse=True)[1], iters)
    total = float(envelope_radii(emb[ids], np.zeros(ids.size, dtype=np.int64), iters)[0])
    rmax, rmean = float(np.nanmax(r)), float(np.nanmean(r))
    return {"items": int(ids.size), "domains": int(r.size), "r_max": rmax, "r_mean": rmean, "r_all": total,
            "r_max_ratio": rmax / total, "r_mean_ratio": rmean / total}


def item_colours(data: EncodedDataset, attr: str | None = None) -> tuple[np.ndarray, str]:
    """Per item id its (first) attribute id: ``attr`` table, or the first multi-valued item attribute
    (ml100k: genres), else the first categorical one."""
    from ..data.lookups import attribute_table

    item = data.schema.first(Role.ITEM)
    if attr is None:
        fs = [f for f in data.schema.by_role(Role.ITEM_ATTR) if f.encoded]
        f = next((f for f in fs if f.kind == Kind.MULTI_VALUED), None) or next(
            (f for f in fs if f.kind == Kind.CATEGORICAL), None)
        if f is None:
            raise ConfigError("tsne: the schema has no item attribute to colour by")
        attr = f.table
    return attribute_table(data, item.table, attr), attr


def value_label(vocab, i) -> str:
    """The raw value of id ``i`` in ``vocab`` ("pad" / "OOV" for the specials)."""
    try:
        return str(vocab.values[int(i) - 2]) if int(i) >= 2 else ("pad" if int(i) == 0 else "OOV")
    except (AttributeError, IndexError, TypeError, ValueError):  # a vocabulary without readable values: its id
        return str(int(i))


# ----- planted truth (synthetic recipe) ------------------------------------------------------------
def planted_test_probabilities(cfg, data: EncodedDataset) -> np.ndarray:
    """The synthetic recipe's planted click probability of every test row (regenerated from the
    run's data parameters; the encoded test rows are checked to be the generator's, in order)."""
    from ..data.recipes.synthetic import SyntheticParams, build, true_logit

    if cfg.data.name != "synthetic":
        raise ConfigError(f"planted probabilities exist for the synthetic recipe only, not {cfg.data.name!r}")
    raw = build(SyntheticParams(**dict(cfg.data.params, emit_true_prob=True)))
    te = raw.split == 2
    if not np.array_equal(np.asarray(data.split("test")[data.schema.label]), raw.columns["label"][te]):
        raise ConfigError("the synthetic generator's test rows do not align with the encoded test split")
    return 1.0 / (1.0 + np.exp(-true_logit(raw)[te].astype(np.float64)))
