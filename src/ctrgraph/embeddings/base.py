"""The embedding-provider contract and the plain (lookup-table) provider.

A provider owns one table per vocabulary (``hist_item_id`` shares ``item_id``'s table), a vector
per numeric field (e_j = v_j * x_j), and maps a batch to an :class:`EmbeddedBatch`. It keeps **no
state between calls**: whatever one call computes for its lookups (a graph provider's enhanced
tables of this step, the rows Res-embedding's penalty covers) lives in the call's *step* (a dict
returned by :meth:`EmbeddingProvider.begin`), which the returned :class:`EmbeddedBatch` carries. A
model that embeds two views in one forward (DemiNet's self-supervised views) gets two embedded
batches with their own steps, and :meth:`ctrgraph.models.base.CTRModel.output` collects the
auxiliary losses of both. Subclasses may override:

- :meth:`begin` to compute the step from the whole batch (e.g. graph propagation with the batch's
  own positive edges removed),
- :meth:`lookup` to replace how ids of one table become vectors (e.g. Res-embedding's W C_b + R),
- :meth:`aux_losses` to return named auxiliary losses of a step (weighted by the trainer's config),
- :meth:`diagnostics` for per-epoch figures the trainer logs (e.g. Res-embedding's ||R|| / ||W C_b||),
- :meth:`prepare` to build data-derived state (graphs) from the train split once before training.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..data.schema import FeatureSpec, Field, Kind
from ..errors import ConfigError
from ..layers.lookup import LazyRows, embedding_rows, lazy_ok
from ..layers.native import field_lookups
from ..layers.native import kernel as native_kernel
from ..layers.pooling import pooled_field, pooled_rows, weighted_sum

Step = dict[str, Any]


class _FieldValues(dict):
    """The embedded fields by name; remembers the names read as they are (``values[name]``,
    ``get``, iteration), as opposed to only pooled by :meth:`EmbeddedBatch.vector`. A sequence field
    of the plain tables may be held as :class:`~ctrgraph.layers.lookup.LazyRows` until it is read."""

    def __init__(self, values: dict[str, torch.Tensor]):
        super().__init__(values)
        self.read: set[str] = set()

    def _rows(self, name: str) -> torch.Tensor:
        v = super().__getitem__(name)
        if isinstance(v, LazyRows):
            v = v.rows()
            super().__setitem__(name, v)
        return v

    def __getitem__(self, name: str) -> torch.Tensor:
        self.read.add(name)
        return self._rows(name)

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __iter__(self):
        for name in list(super().keys()):
            self[name]
        return super().__iter__()

    def values(self):
        for name in list(super().keys()):
            self[name]
        return super().values()

    def items(self):
        for name in list(super().keys()):
            self[name]
        return super().items()

    def copy(self):
        return dict(self.items())


class EmbeddedBatch:
    """Embedded fields of one batch: categorical/numeric -> [B, d]; multi-valued/sequence -> [B, L, d].

    Also the handle to the call that produced it: :meth:`lookup` embeds further ids in the same
    step (DIEN's sampled negatives, GIN's neighbour trees), :meth:`aux_losses` returns the step's
    auxiliary losses and :meth:`penalty` the sum of squares of the field vectors (the mini-batch
    aware embedding L2 of ``train.embedding_l2``)."""

    def __init__(self, spec: FeatureSpec, values: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 provider: EmbeddingProvider | None = None, step: Step | None = None, fuse_pooling: bool = True):
        self.spec = spec
        self.values = _FieldValues(values)
        self.masks = masks
        self.provider = provider
        self.step: Step = {} if step is None else step
        self.fuse_pooling = fuse_pooling
        self._pooled: dict[str, torch.Tensor] = {}  # masked sums taken by pooled_field, by field

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def sequence(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.values[name], self.masks[name]

    def lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of further ``ids`` (any shape) of ``table`` in this call's step -> ids.shape + (d,)."""
        return self.provider.lookup(table, ids.long(), self.step)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Named auxiliary losses of this call (e.g. Res-embedding's lambda * L(R) over the rows it used)."""
        return self.provider.aux_losses(self.step) if self.provider is not None else {}

    def penalty(self) -> torch.Tensor:
        """Sum of squares of the embedded field vectors of this batch (mini-batch-aware L2)."""
        if not self.values:
            return torch.zeros(())
        return sum(v.pow(2).sum() for v in self.values.values())

    def vector(self, name: str, pool: str = "mean") -> torch.Tensor:
        """One [B, d] vector per field; multi-valued and sequence fields are pooled over valid
        positions (``mean`` or ``sum``; an empty sequence gives the zero vector).

        A field whose rows were not read as they are before (``values[name]``, :meth:`sequence`)
        is pooled by :func:`~ctrgraph.layers.pooling.pooled_field` (the lookup table's gradient
        written directly), its masked sum kept for further calls (the gradients of several uses
        then meet on the [B, d] sum: with 0/1 mask weights the same numbers as on the rows); a field
        read already by :func:`weighted_sum`. Both give the values and gradients of the plain
        masked sum bit for bit, as long as the rows are not read as they are after pooling (no
        model does; the embedding L2 penalty does, so the trainer turns the fused pooling off,
        ``fuse_pooling``, when ``train.embedding_l2`` > 0)."""
        v = dict.__getitem__(self.values, name)
        if v.dim() == 2:
            self.values.read.add(name)  # a [B, d] field is its own vector: handed out as it is
            return v
        m = self.masks[name].to(v.handle.dtype if isinstance(v, LazyRows) else v.dtype)
        if name in self._pooled:
            s = self._pooled[name]
        elif isinstance(v, LazyRows):  # not read: fuse_pooling was on when it was left lazy
            s = self._pooled[name] = pooled_rows(m, v)
        elif self.fuse_pooling and name not in self.values.read:
            s = self._pooled[name] = pooled_field(m, v)
        else:
            s = weighted_sum(m, v)
        if pool == "sum":
            return s
        if pool == "mean":
            return s / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        raise ConfigError(f"unknown pooling {pool!r}; use mean or sum")

    def matrix(self, fields: list[Field] | None = None, seq_pool: str = "mean", multi_pool: str = "mean") -> torch.Tensor:
        """Stack fields into the field matrix E [B, F, d] (DG-ENN Eq. 2)."""
        fields = self.spec.features if fields is None else fields
        vecs = [self.vector(f.name, seq_pool if f.kind == Kind.SEQUENCE else multi_pool) for f in fields]
        return torch.stack(vecs, dim=1)


class EmbeddingProvider(nn.Module):
    """Plain lookup tables, N(0, init_std) initialised, row 0 (padding) fixed at zero."""

    name: ClassVar[str] = "plain"
    #: ask the trainer to start the model's output bias at the train log-odds (``train.prior_bias: auto``)
    prior_bias_default: ClassVar[bool] = False
    #: named parameter sets (``embedding.params.preset: paper``), as a model's ``presets``
    presets: ClassVar[dict[str, dict]] = {}
    #: hand every embedded row to the model's graph as it is, never pool a field by writing the table's
    #: gradient directly (:meth:`EmbeddedBatch.vector`): set by the trainer when a loss term (the
    #: embedding L2) reads the rows of pooled fields too, so that their gradients add up on the rows
    keep_rows: bool = False

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float = 1e-4, fields: list[Field] | None = None):
        super().__init__()
        self.spec = spec
        self.dim = dim
        self.fields = spec.features if fields is None else fields
        tables = {}
        for f in self.fields:
            if f.kind != Kind.NUMERIC and f.table not in tables:
                if f.table not in spec.vocab_sizes:
                    raise ConfigError(f"no vocabulary {f.table!r} for field {f.name!r}")
                emb = nn.Embedding(spec.vocab_sizes[f.table], dim, padding_idx=0)
                nn.init.normal_(emb.weight, std=init_std)
                with torch.no_grad():
                    emb.weight[0].zero_()
                tables[f.table] = emb
        self.tables = nn.ModuleDict(tables)
        self.numeric = nn.ParameterDict({
            f.name: nn.Parameter(torch.randn(dim) * init_std) for f in self.fields if f.kind == Kind.NUMERIC
        })
        # one-valued fields whose table feeds no other field: looked up together (_single_lookups)
        uses = [f.table for f in self.fields if f.kind != Kind.NUMERIC]
        self._own_table = [(f.name, f.table) for f in self.fields
                           if f.kind == Kind.CATEGORICAL and not f.is_sequence_like and uses.count(f.table) == 1]

    # ----- the contract graph-enhanced providers override ------------------------------------
    def prepare(self, data) -> None:
        """Called once before training with the encoded data set (use its train split only)."""

    def begin(self, batch: dict[str, torch.Tensor]) -> Step:
        """This call's step: state its lookups share (nothing for plain tables)."""
        return {}

    def lookup(self, table: str, ids: torch.Tensor, step: Step) -> torch.Tensor:
        """Vectors of ``ids`` (any shape) in ``table`` -> ids.shape + (dim,)."""
        return embedding_rows(self.tables[table], ids)

    def lookup_table(self, table: str, step: Step) -> tuple[torch.Tensor, int | None] | None:
        """The whole [vocab, dim] tensor (and its padding row) whose rows :meth:`lookup` returns for
        ``table`` in this step, so that a sequence field of it may stay lazy (pooled without the
        [B, L, d] gather); None where :meth:`lookup` does more than gather rows of one tensor. A
        subclass that overrides :meth:`lookup` returns None here unless it overrides this too."""
        if type(self).lookup is not EmbeddingProvider.lookup:
            return None
        emb = self.tables[table]
        return emb.weight, emb.padding_idx  # a sparse-gradient table's rows stay lazy too (LazyRows(sparse=True))

    def plain_lookup(self, table: str, step: Step) -> bool:
        """True where :meth:`lookup` of ``table`` in this step is the plain table's row gather
        (:meth:`EmbeddingProvider.lookup`), so that its one-valued fields may join the batched native
        lookups (:meth:`_single_lookups`). A subclass that overrides :meth:`lookup` overrides this
        too where some of its tables stay plain (a graph provider's non-graph fields)."""
        return type(self).lookup is EmbeddingProvider.lookup

    def aux_losses(self, step: Step) -> dict[str, torch.Tensor]:
        """Named auxiliary losses of one call (e.g. Res-embedding's L2 on R)."""
        return {}

    def diagnostics(self) -> dict[str, float]:
        """Figures the trainer logs once per epoch (none for plain tables)."""
        return {}

    # ----- forward -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> EmbeddedBatch:
        step = self.begin(batch)
        # sequence fields of a table that lookup only gathers from (plain tables, a graph provider's
        # tables of this step: lookup_table) may stay lazy (pooled without the [B, L, d] gather);
        # not when the rows must all be materialised
        lazy = not self.keep_rows and native_kernel() is not None
        single = self._single_lookups(batch, step)
        values: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for f in self.fields:
            x = batch[f.name]
            if f.name in single:
                v = single[f.name]
            elif f.kind == Kind.NUMERIC:
                v = x.to(self.numeric[f.name].dtype).unsqueeze(-1) * self.numeric[f.name]
            else:
                ids = x.long()
                src = self.lookup_table(f.table, step) if lazy and f.is_sequence_like else None
                if src is not None and lazy_ok(src[0], ids):
                    emb = self.tables[f.table] if f.table in self.tables else None
                    sparse = emb is not None and emb.sparse and emb.weight is src[0]
                    v = LazyRows(src[0], ids, src[1], sparse)  # gathered when read or pooled
                else:
                    v = self.lookup(f.table, ids, step)
                if f.is_sequence_like:
                    src = batch[f.group] if f.group else x
                    masks[f.name] = src != 0
            values[f.name] = v
        return EmbeddedBatch(self.spec, values, masks, self, step, fuse_pooling=not self.keep_rows)

    def _single_lookups(self, batch: dict[str, torch.Tensor], step: Step) -> dict[str, torch.Tensor]:
        """The rows of the one-valued fields whose table feeds no other field, all looked up by one
        native call (:func:`~ctrgraph.layers.native.field_lookups`: the values and table gradients of
        :meth:`lookup` for each, bit for bit, without an int64 copy of the ids and one autograd node
        per field), where :meth:`lookup` is the plain one (:meth:`plain_lookup`), while training on dense
        float32 CPU tables; {} otherwise (each field then takes :meth:`lookup`)."""
        if (len(self._own_table) < 2 or not torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting()
                or native_kernel() is None):
            return {}
        names, weights, ids, pads = [], [], [], []
        for name, table in self._own_table:
            if not self.plain_lookup(table, step):
                continue
            emb = self.tables[table]
            x = batch[name]
            w = emb.weight
            if (emb.sparse or not w.requires_grad or w.dtype != torch.float32 or w.device.type != "cpu"
                    or not w.is_contiguous() or x.dim() != 1 or x.dtype not in (torch.int32, torch.int64)
                    or x.device.type != "cpu"):
                continue
            names.append(name)
            weights.append(w)
            ids.append(x.contiguous())
            pads.append(-1 if emb.padding_idx is None else emb.padding_idx)
        if len(names) < 2:
            return {}
        return dict(zip(names, field_lookups(weights, ids, pads)))


def use_sparse_gradients(model: nn.Module) -> int:
    """Make the lookup tables of every plain provider inside ``model`` (its embedding, a first-order
    term's 1-d tables) produce sparse gradients (``embedding.sparse``; trained by SparseAdam, see
    :mod:`ctrgraph.train.optim`). Returns the number of tables switched.

    Graph-enhanced and pretrained providers read whole tables (propagation over every row, warm
    starts), which gives dense gradients: they are a :class:`ConfigError`."""
    n = 0
    for m in model.modules():
        if not isinstance(m, EmbeddingProvider):
            continue
        if type(m) is not EmbeddingProvider:
            raise ConfigError(f"embedding.sparse: the {m.name!r} embedding provider reads whole tables (dense "
                              f"gradients); sparse gradients work with the plain provider only")
        for emb in m.tables.values():
            emb.sparse = True
            n += 1
    return n
