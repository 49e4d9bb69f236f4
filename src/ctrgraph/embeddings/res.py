"""Res-embedding (Zhou et al., "Res-embedding for Deep Learning Based Click-Through Rate
Prediction Modeling", 2019) as an embedding provider: any model becomes ``res-<model>``.

For the item table (and every field that shares it, e.g. ``hist_item_id``), by ``form``:

    form="res" (default):  E = W C_b + R                              (Eq. 4)
    form="prototype":      E = P C + R                                (Eq. 3, Sec. 3.4)
    form="plain":          E = R   (no central part: Table 3's "+R", the plain table with Res's own penalty)
    W = g(Z), Z = top-K window co-occurrence graph of Algorithm 1     (Eq. 5)
    g_AVG(Z) = avgnz(I(Z > 0))                                        (Eq. 6)
    g_GCN(Z) = D^-1/2 Z D^-1/2, D = row sums of the pruned Z          (Eq. 7)
    g_ATT(Z, C_b)(i, j) = softmax over {k: Z(i,k) > 0} of C_b(i)·C_b(j) (Eq. 8)
    loss = CE + lambda * L(R)                                          (Eq. 9)

Shapes: C_b, R [H, d]; W [H, H] (never built, see below); P [H, I] one-hot; C [I, d]; E [H, d].

Z is built in :meth:`ResEmbedding.prepare` from the **train split** behaviour sequences
(``ctrgraph.graphs.cooccurrence_from_dataset``: each user's sequence once by default,
``count_over="samples"``: every training sample's history, Algorithm 1 as written and the study's
``paper`` mode), window Delta = 2, K = 8. W is never
materialised as H x H: a ``[H, K]`` neighbour table (and static weights for AVG/GCN) is stored
as buffers, and each batch computes the central part only for its unique item ids; ATT's
weights use C_b on both sides, so gradients reach C_b through the query and the keys.

Eq. 3 (``form="prototype"``): the paper leaves P ("unknown and hard to obtain") open; ours: the
interest domain of item i is its ``domain`` attribute (default: the first multi-valued item
attribute, e.g. the first genre, else the first categorical one), the most frequent value over the
train split (``data.lookups.attribute_table``), stored as ``domain_of`` [H] (P(i, j) = 1 iff
domain_of[i] = j); C is its own [I, d] table ``domain_central`` (row 0, padding, is zero; items
absent from the train split get the OOV domain 1). The penalty is Eq. 9's lambda L(R).

Choices the paper leaves open (research notes §5.2):
- ``l2="batch"`` (default): L(R) = sum of ||R_i||^2 over the distinct items of the batch
  (mini-batch-aware, DIN's practice); ``l2="table"``: the whole R. Returned as the auxiliary loss
  ``res_l2`` already multiplied by lambda (the trainer's ``aux_weights.res_l2`` scales it further).
- Isolated items (no co-occurring neighbour, e.g. never in a training history):
  ``isolated="residual"`` (default): central part 0, E = R (the paper's formula as written);
  ``isolated="self"``: a self-loop of weight 1, E = C_b(i) + R(i).
- C_b, C and R share the provider's initialiser (N(0, init_std)); lambda sets R's scale.
- ``form="plain"`` makes Table 3's "+R" exactly Res's penalty at equal lambda: E = R and the same
  ``res_l2`` = lambda * sum of ||E_i||^2 over the batch's distinct item rows (C_b unused).
- Diagnostic (Fig. 8): ``diagnostics()`` returns ||R|| / ||W C_b|| over the whole table, logged by
  the trainer each epoch (the paper finds the best AUC near 1:10).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..data.schema import FeatureSpec, Role
from ..errors import ConfigError
from ..layers.lookup import embedding_rows as _rows  # emb(ids) with the cheaper backward
from ..layers.lookup import table_lookup
from .base import EmbeddingProvider, Step


def neighbour_table(w: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows with at most ``k`` entries -> (idx [H, k], weight [H, k]); empty slots are (0, 0)."""
    w = sp.csr_matrix(w)
    h = w.shape[0]
    counts = np.diff(w.indptr)
    if counts.size and counts.max() > k:
        raise ValueError(f"a row has {counts.max()} neighbours, more than K = {k}")
    rows = np.repeat(np.arange(h), counts)
    pos = np.arange(w.nnz) - np.repeat(w.indptr[:-1], counts)
    idx = np.zeros((h, k), dtype=np.int64)
    wt = np.zeros((h, k), dtype=np.float32)
    idx[rows, pos] = w.indices
    wt[rows, pos] = w.data
    return idx, wt


def g_avg(z: sp.csr_matrix) -> sp.csr_matrix:
    """Eq. 6: every non-zero of a row gets 1 / (number of non-zeros of the row)."""
    z = sp.csr_matrix(z, dtype=np.float32, copy=True)
    z.eliminate_zeros()
    n = np.diff(z.indptr)
    z.data = np.repeat(1.0 / np.maximum(n, 1), n).astype(np.float32)
    return z


def g_gcn(z: sp.csr_matrix) -> sp.csr_matrix:
    """Eq. 7: D^-1/2 Z D^-1/2 with D the row sums of the (pruned, asymmetric) Z."""
    z = sp.csr_matrix(z, dtype=np.float32, copy=True)
    d = np.asarray(z.sum(axis=1)).ravel()
    inv = np.zeros_like(d)
    inv[d > 0] = d[d > 0] ** -0.5
    return sp.csr_matrix(sp.diags(inv) @ z @ sp.diags(inv), dtype=np.float32)


def _default_domain(spec: FeatureSpec) -> str:
    """Eq. 3's interest domains: the first multi-valued item attribute (its first value), else the
    first categorical one (the t-SNE colouring rule of ``experiments.analysis.item_colours``)."""
    from ..data.schema import Kind

    fs = [f for f in spec.schema.by_role(Role.ITEM_ATTR) if f.encoded and f.table in spec.vocab_sizes]
    f = next((f for f in fs if f.kind == Kind.MULTI_VALUED), None) or next(
        (f for f in fs if f.kind == Kind.CATEGORICAL), None)
    if f is None:
        raise ConfigError("res embedding: form=prototype needs an item attribute as the interest domain (domain=...)")
    return f.table


class ResEmbedding(EmbeddingProvider):
    """Plain tables for every vocabulary except the item table, which becomes W C_b + R."""

    name = "res"

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4,
                 g: Literal["avg", "gcn", "att"] = "gcn", window: int = 2, top_k: int = 8, lam: float = 0.006,
                 l2: Literal["batch", "table"] = "batch", count_over: Literal["users", "samples"] = "users",
                 isolated: Literal["residual", "self"] = "residual", residual: bool = True, graph: bool = True,
                 table: str | None = None, form: Literal["res", "prototype", "plain"] = "res",
                 domain: str | None = None):
        super().__init__(spec, dim, init_std=init_std)
        if g not in ("avg", "gcn", "att"):
            raise ConfigError(f"res embedding: g must be avg, gcn or att, got {g!r}")
        if form not in ("res", "prototype", "plain"):
            raise ConfigError(f"res embedding: form must be res, prototype or plain, got {form!r}")
        if form != "res" and not (graph and residual):
            raise ConfigError(f"res embedding: graph / residual switches belong to form=res, not {form!r}")
        if l2 not in ("batch", "table") or isolated not in ("residual", "self"):
            raise ConfigError("res embedding: l2 must be batch|table and isolated residual|self")
        item = spec.schema.first(Role.ITEM)
        self.item_table = table or (item.table if item is not None else None)
        if self.item_table not in self.tables:
            raise ConfigError(f"res embedding: no embedded item table {self.item_table!r} in the schema")
        self.g, self.window, self.top_k, self.lam, self.l2 = g, window, top_k, lam, l2
        self.count_over, self.isolated, self.use_residual, self.use_graph = count_over, isolated, residual, graph
        h = spec.vocab_sizes[self.item_table]
        self.residual = nn.Embedding(h, dim, padding_idx=0)
        nn.init.normal_(self.residual.weight, std=init_std)
        with torch.no_grad():
            self.residual.weight[0].zero_()
        self.register_buffer("nbr_idx", torch.zeros(h, top_k, dtype=torch.long))
        self.register_buffer("nbr_w", torch.zeros(h, top_k))
        self.form = form
        self.domain_table = None
        if form == "prototype":  # Eq. 3: C [I, d] and P as domain_of [H]
            self.domain_table = domain or _default_domain(spec)
            if self.domain_table not in spec.vocab_sizes:
                raise ConfigError(f"res embedding: no vocabulary {self.domain_table!r} for the interest domains")
            self.domain_central = nn.Embedding(spec.vocab_sizes[self.domain_table], dim, padding_idx=0)
            nn.init.normal_(self.domain_central.weight, std=init_std)
            with torch.no_grad():
                self.domain_central.weight[0].zero_()
            self.register_buffer("domain_of", torch.zeros(h, dtype=torch.long))

    # ----- graph (train split only) ----------------------------------------------------------
    def prepare(self, data) -> None:
        from ..graphs import cooccurrence_from_dataset

        if self.form == "plain":
            return
        if self.form == "prototype":
            from ..data.lookups import attribute_table

            self.set_domains(torch.from_numpy(attribute_table(data, self.item_table, self.domain_table)))
            return
        z = cooccurrence_from_dataset(data, window=self.window, top_k=self.top_k, count_over=self.count_over)
        w = g_avg(z) if self.g == "avg" else g_gcn(z) if self.g == "gcn" else (z > 0).astype(np.float32)
        idx, wt = neighbour_table(w, self.top_k)
        self.set_graph(torch.from_numpy(idx), torch.from_numpy(wt))

    def set_graph(self, idx: torch.Tensor, weight: torch.Tensor) -> None:
        """Install a neighbour table ([H, K] ids, [H, K] weights; for ATT only weight > 0 matters)."""
        self.nbr_idx.copy_(idx)
        self.nbr_w.copy_(weight)

    def set_domains(self, domain_of: torch.Tensor) -> None:
        """Install P of Eq. 3 as the domain id of every item ([H] ints; 0 = none)."""
        self.domain_of.copy_(domain_of.long())

    # ----- E = W C_b + R ---------------------------------------------------------------------
    def central(self, ids: torch.Tensor) -> torch.Tensor:
        """(W C_b)[ids] for a 1-D tensor of distinct ids -> [U, d]."""
        cb = self.tables[self.item_table]
        nb = self.nbr_idx[ids]
        w = self.nbr_w[ids]
        basis = _rows(cb, nb)  # [U, K, d]
        has = w > 0
        if self.g == "att":  # Eq. 8: softmax over the row's non-zeros of C_b(i)·C_b(j)
            q = _rows(cb, ids).unsqueeze(1)
            s = (q * basis).sum(-1).masked_fill(~has, float("-inf"))
            w = torch.nan_to_num(torch.softmax(s, dim=1), nan=0.0)
        out = (w.unsqueeze(-1) * basis).sum(1)
        if self.isolated == "self":
            lonely = ~has.any(1)
            out = torch.where(lonely.unsqueeze(-1), _rows(cb, ids), out)
        return out

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Final item embeddings E[ids] [U, d] for a 1-D tensor of distinct ids [U] (Eq. 4 / 3 / E = R)."""
        if self.form == "plain":
            return _rows(self.residual, ids)
        if self.form == "prototype":  # (P C)[ids] = C[domain_of[ids]]
            return _rows(self.domain_central, self.domain_of[ids]) + _rows(self.residual, ids)
        e = self.central(ids) if self.use_graph else _rows(self.tables[self.item_table], ids)
        if self.use_residual:
            e = e + _rows(self.residual, ids)
        return e

    def begin(self, batch) -> Step:
        """The step records the distinct item rows its lookups used (``rows``), for L(R)."""
        return {"rows": None}

    def lookup(self, table: str, ids: torch.Tensor, step: Step) -> torch.Tensor:
        if table != self.item_table:
            return super().lookup(table, ids, step)
        if torch.jit.is_tracing():  # export (inference): no L(R) bookkeeping, the same rows without unique
            return self.item_vectors(ids.reshape(-1)).view(*ids.shape, -1)
        n = self.nbr_idx.shape[0]
        if ids.numel() >= n:  # (a behaviour sequence) at least one id per item: compute every item's row
            # and gather, without sorting the ids: each row's value is the same, the gradient reaches
            # every parameter row in the same order (rows no id uses add exact zeros), and the distinct
            # ids come from a mask (sorted, as torch.unique gives them)
            seen = torch.zeros(n, dtype=torch.bool, device=ids.device)
            seen[ids.reshape(-1)] = True
            uniq = seen.nonzero().squeeze(1)
            out = table_lookup(self.item_vectors(torch.arange(n, device=ids.device)), ids)
        else:
            uniq, inv = torch.unique(ids, return_inverse=True)
            out = self.item_vectors(uniq)[inv]
        step["rows"] = uniq if step["rows"] is None else torch.unique(torch.cat([step["rows"], uniq]))
        return out

    def plain_lookup(self, table: str, step: Step) -> bool:
        """Every table but the item table (whose lookups record their rows for L(R)) is plain."""
        return table != self.item_table

    def lookup_table(self, table: str, step: Step) -> tuple[torch.Tensor, int | None] | None:
        """The plain table of every vocabulary but the item table (whose lookups record their rows
        for L(R)): sequence fields of those (``hist_genre``) stay lazy, as with the plain provider."""
        if table == self.item_table:
            return None
        emb = self.tables[table]
        return None if emb.sparse else (emb.weight, emb.padding_idx)

    def aux_losses(self, step: Step) -> dict[str, torch.Tensor]:
        """lambda * L(R) (Eq. 9) of one call: over the item rows it looked up (``l2="batch"``)."""
        if not self.use_residual or self.lam == 0:
            return {}
        if self.l2 == "table":
            return {"res_l2": self.lam * self.residual.weight.pow(2).sum()}
        if step.get("rows") is None:
            return {}
        return {"res_l2": self.lam * _rows(self.residual, step["rows"]).pow(2).sum()}

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """||R|| / ||W C_b|| (Eq. 3: ||R|| / ||P C||) over all items (Fig. 8's residual scale)."""
        if self.form == "plain":
            return {}
        h = self.nbr_idx.shape[0]
        ids = torch.arange(1, h, device=self.nbr_idx.device)
        c = (self.domain_central(self.domain_of[ids]) if self.form == "prototype" else self.central(ids)).norm()
        r = self.residual.weight[1:].norm()
        return {"res_ratio": float(r / c) if c > 0 else float("inf"), "res_central_norm": float(c),
                "res_residual_norm": float(r)}

    def table_vectors(self) -> torch.Tensor:
        """The whole item embedding matrix E (H x d), e.g. for analysis or export."""
        ids = torch.arange(self.nbr_idx.shape[0], device=self.nbr_idx.device)
        return self.item_vectors(ids)
