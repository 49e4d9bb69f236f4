"""Eval-time tables of the graph providers (``dg``, ``gcn``, ``kgat``, ``hgat``; DG-ENN §4.4): the
enhanced tables are computed once without edge drops, cached until ``train()`` or a state-dict load,
and copied into ``served_<table>`` buffers so that a loaded checkpoint serves them without graphs."""
from __future__ import annotations

import torch


def cached_eval_tables(p) -> dict[str, torch.Tensor]:
    """``p._cache`` (computed on first use); ``p`` has ``_cache``, ``_g``, ``_served``,
    ``served_ok``, ``served_<table>`` buffers and ``enhanced_tables()``."""
    if p._cache is None and p._g is None and bool(p.served_ok):
        p._cache = {t: getattr(p, f"served_{t}") for t in p._served}  # a loaded checkpoint
    if p._cache is None:
        with torch.no_grad():
            p._cache = {k: v.detach() for k, v in p.enhanced_tables().items()}
            for t in p._served:
                getattr(p, f"served_{t}").copy_(p._cache[t])
            p.served_ok.fill_(True)
    return p._cache


class ServedTables:
    """Mixin of the graph providers: the eval cache is dropped by ``train()`` and state-dict loads;
    :meth:`export_tables` gives every table as served (``ctrgraph export``)."""

    def init_served(self, tables: list[str], vocab_sizes: dict[str, int], dim: int) -> None:
        """The ``served_<table>`` buffers (saved with checkpoints, so a loaded run serves without the
        graphs), no graphs yet and an empty eval cache."""
        self._served = list(tables)
        for t in self._served:
            self.register_buffer(f"served_{t}", torch.zeros(vocab_sizes[t], dim))
        self.register_buffer("served_ok", torch.tensor(False))
        self._g = None
        self._device = torch.device("cpu")
        self._cache: dict[str, torch.Tensor] | None = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def export_tables(self) -> dict[str, torch.Tensor]:
        """Every embedding table as served: the enhanced tables and the plain ones, detached."""
        enh = self.enhanced_tables()
        return {t: enh.get(t, emb.weight).detach().clone() for t, emb in self.tables.items()}
