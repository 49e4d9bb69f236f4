"""Neighbour sampling for DG-ENN training steps (paper §4.4: "to scale up the model training,
neighbor sampling is necessary"); the whole-graph step is in :mod:`ctrgraph.embeddings.dg`.

With ``fanouts`` set, a training step computes Eq. 22 only for the user / item ids the batch looks
up: uv blocks sampled from those ids (Eqs. 19-21), the uu/vv stage (Eqs. 16-18) on blocks sampled
from the uv stage's input frontier (fan-outs ``cf_fanouts``, default ``fanouts``), the attribute
stage (§4.2) on the rows of the uu/vv frontier.
Degrees are the true degrees after the step's drops, the centre term is exact (never sampled), so a
fan-out >= the largest degree reproduces the whole-graph step; LightGCN's estimate is unbiased, GCN
/ NGCF's is not (activation of a sampled sum). Evaluation keeps the whole cached tables.
:class:`SampledSteps` is a mixin of :class:`~ctrgraph.embeddings.dg.DualGraphEmbedding`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..graphs.drop_sampling import SampledDropGraph, assemble_rows
from ..graphs.propagate import sparse_rows
from ..graphs.sampling import propagate_blocks, sample_blocks_with
from .base import Step


def parse_fanouts(fanouts, layers: int, name: str = "fanouts") -> list[int] | None:
    """``None`` / ``"none"`` / ``""`` -> None (whole-graph steps); ``[10, 5]``, ``"10,5"`` or ``"[10, 5]"``
    -> one fan-out per collaborative layer, ``fanouts[0]`` the hop at the looked-up nodes, each >= 1."""
    if fanouts is None:
        return None
    if isinstance(fanouts, str):
        txt = fanouts.strip().strip("[]").strip()
        if txt.lower() in ("", "none", "null"):
            return None
        try:
            vals = [int(t) for t in txt.split(",")]
        except ValueError:
            raise ConfigError(f"dg embedding: {name} must be integers like '10,5', got {fanouts!r}") from None
    elif isinstance(fanouts, (list, tuple)):
        vals = list(fanouts)
    else:
        vals = [fanouts]
    for v in vals:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"dg embedding: every fan-out of {name} must be an integer >= 1, got {fanouts!r}")
    if len(vals) != layers:
        raise ConfigError(f"dg embedding: {name} needs one value per collaborative layer (layers={layers}), "
                          f"got {len(vals)}: {fanouts!r}")
    return [int(v) for v in vals]


class SampledSteps:
    """The sampled training step of the ``dg`` provider (uses its graphs, tables and stages). The
    step dict carries this call's samplers (``samplers``), computed rows (``rows``: {table: (sorted
    ids, their Eq. 22 rows)}), the whole attribute stage where it is not row-wise (``z_full``) and
    the blocks drawn (``blocks``, for inspection)."""

    def _views(self) -> dict[str, SampledDropGraph]:
        st = self._g
        if "views" not in st:  # built on first use, shared by copies like the rest of the state
            st["views"] = {k: SampledDropGraph(st[k]) for k in ("cf1", "uv") if k in st}
        return st["views"]

    def _begin_sampled(self, batch: dict[str, torch.Tensor]) -> Step:
        """Eq. 22 rows of the user / item ids the batch looks up (its users, targets, behaviours)."""
        if self._g is None:
            raise ConfigError("dg embedding: graphs are not built; call prepare(data) with the training data")
        views = self._views()
        drop_uv, drop_vv = self.target_drops(batch)
        step: Step = {"samplers": {k: views[k].sampler(d) for k, d in (("uv", drop_uv), ("cf1", drop_vv)) if k in views},
                      "blocks": {"uv": [], "cf1": []}, "enh": {}, "z_full": None, "rows": {}}
        if "attr" in self.graphs and self.attr_mode != "linear":
            # field / mixed attribute graphs: the attribute stage stays whole (documented fallback);
            # its value tables (Eq. 15's z_A / z_B) are looked up from it
            out: dict[str, torch.Tensor] = {}
            step["z_full"] = self._attribute_stage(out)
            step["enh"] = out
        ut, it = self.user_field.table, self.item_field.table
        ids: dict[str, list[torch.Tensor]] = {ut: [], it: []}
        for f in self.fields:
            if f.table in ids and f.name in batch:
                ids[f.table].append(batch[f.name].reshape(-1).long())
        dev = self.tables[ut].weight.device
        users, items = (torch.unique(torch.cat(ids[t])) if ids[t] else torch.zeros(0, dtype=torch.long, device=dev)
                        for t in (ut, it))
        p_u, p_v = self._sampled_rows(users, items, step)
        step["rows"] = {ut: (users, p_u), it: (items, p_v)}
        return step

    def _lookup_rows(self, table: str, ids: torch.Tensor, step: Step) -> torch.Tensor:
        """Rows of this step's computed ids; ids the batch did not hold (e.g. DIEN's sampled negatives)
        are computed on demand by the same sampled procedure and added to the step."""
        keys, rows = step["rows"][table]
        flat = ids.reshape(-1)
        at = torch.searchsorted(keys, flat).clamp_max(max(keys.numel() - 1, 0))
        miss = keys[at] != flat if keys.numel() else torch.ones_like(flat, dtype=torch.bool)
        if bool(miss.any()):
            new = torch.unique(flat[miss])
            none = new[:0]
            is_user = table == self.user_field.table
            p_u, p_v = self._sampled_rows(new if is_user else none, none if is_user else new, step)
            keys, order = torch.sort(torch.cat([keys, new]))
            rows = torch.cat([rows, p_u if is_user else p_v])[order]
            step["rows"][table] = (keys, rows)
            at = torch.searchsorted(keys, flat)
        return nn.functional.embedding(at.view_as(ids), rows)

    def _z_rows(self, users: torch.Tensor, items: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """Attribute-stage rows z_u, z_v (§4.2) of the given ids: row-wise for ``attr_mode=linear``
        (W [e_id; mean value embedding per field] of those rows only), else rows of the whole stage."""
        if step["z_full"] is not None:
            return step["z_full"][0][users], step["z_full"][1][items]
        st = self._g
        out = []
        for side, ids, owner, fields in (("u", users, self.user_field.table, self.uattr),
                                         ("i", items, self.item_field.table, self.iattr)):
            e = nn.functional.embedding(ids, self.tables[owner].weight)
            rs = st["lin"].get(side, []) if "attr" in self.graphs else []
            if rs:
                means = [torch.sparse.mm(sparse_rows(r, ids), self.tables[f.table].weight) for r, f in zip(rs, fields)]
                e = self.attr_lin[side](torch.cat([e] + means, dim=1))
            out.append(e)
        return out[0], out[1]

    def _cf1_layer(self):
        """Per-row transform of the uu / vv stage for :func:`propagate_blocks` (each block's own module)."""
        if self.aggregator == "lightgcn":
            return None
        keys = self._g["cf1_keys"]
        mods = [self.cf_prop[k] for k in keys]
        if len(mods) == 1:
            return lambda l, agg, x, dst: mods[0].layer(l, agg, x)
        n_u = self._g["vv_offset"]

        def layer(l, agg, x, dst):
            m = dst < n_u
            iu, iv = torch.nonzero(m).squeeze(1), torch.nonzero(~m).squeeze(1)
            return assemble_rows([iu, iv], [mods[0].layer(l, agg[iu], x[iu]), mods[1].layer(l, agg[iv], x[iv])])

        return layer

    def _zh_rows(self, users: torch.Tensor, items: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 16-18 rows ẑ_u, ẑ_v of the given ids on blocks sampled from them in the block-diagonal
        uu/vv graph; the attribute stage is computed for the blocks' input frontier only."""
        st = self._g
        if "cf1" not in st:
            return self._z_rows(users, items, step)
        keys, off = st["cf1_keys"], st["vv_offset"]
        has_u, has_v = "uu" in keys, "vv" in keys
        seeds = torch.cat(([users] if has_u else []) + ([items + off] if has_v else []))
        blocks = sample_blocks_with(step["samplers"]["cf1"], seeds, self.cf_fanouts or self.fanouts)
        step["blocks"]["cf1"].append(blocks)
        src = blocks[0].src if blocks else seeds
        is_u = src < st["n"][0] if has_u and has_v else torch.full_like(src, has_u, dtype=torch.bool)
        iu, iv = torch.nonzero(is_u).squeeze(1), torch.nonzero(~is_u).squeeze(1)
        zu, zv = self._z_rows(src[iu], src[iv] - off, step)
        h = propagate_blocks(blocks, assemble_rows([iu, iv], [zu, zv]), self._cf1_layer(), self.combine)
        n_s = users.numel() if has_u else 0
        zh_u, zh_v = h[:n_s], h[n_s:]
        if not (has_u and has_v):  # the side without a graph keeps z (as the whole-graph stage)
            zu, zv = self._z_rows(users[:0] if has_u else users, items[:0] if has_v else items, step)
            zh_u, zh_v = (zh_u if has_u else zu), (zh_v if has_v else zv)
        return zh_u, zh_v

    def _sampled_rows(self, users: torch.Tensor, items: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 22 rows p̂_u, p̂_v of the given ids (§4.4): uv blocks sampled from them (Eqs. 19-21), whose
        input frontier takes ẑ from :meth:`_zh_rows` (organised) or z (parallel ``collab`` modes, then
        merged with ẑ of the ids themselves). Cost ~ ids x prod(fanouts), whatever the graph size."""
        st = self._g
        if "uv" not in self.graphs:
            return self._zh_rows(users, items, step)
        n_u = st["n"][0]
        organized = self.collab == "organized"
        seeds = torch.cat([users, items + n_u])
        blocks = sample_blocks_with(step["samplers"]["uv"], seeds, self.fanouts)
        step["blocks"]["uv"].append(blocks)
        src = blocks[0].src if blocks else seeds
        is_u = src < n_u
        iu, iv = torch.nonzero(is_u).squeeze(1), torch.nonzero(~is_u).squeeze(1)
        xu, xv = (self._zh_rows if organized else self._z_rows)(src[iu], src[iv] - n_u, step)
        mod = self.cf_prop["uv"]
        layer = None if self.aggregator == "lightgcn" else (lambda l, agg, x, dst: mod.layer(l, agg, x))
        q = propagate_blocks(blocks, assemble_rows([iu, iv], [xu, xv]), layer, self.combine)
        q_u, q_v = q[:users.numel()], q[users.numel():]
        if organized:
            return q_u, q_v
        zh_u, zh_v = self._zh_rows(users, items, step)
        return (self._merge("u", ([zh_u] if "uu" in self.graphs else []) + [q_u]),
                self._merge("i", ([zh_v] if "vv" in self.graphs else []) + [q_v]))
