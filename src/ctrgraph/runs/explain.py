"""``ctrgraph explain``: per instance and layer, the feature interactions a trained model selected
and their weights (GraphFM Fig. 4), as a CSV table, a printed summary and a heat-map PNG.

Works for any model with an ``explain(batch)`` method returning, per layer, ``p`` ([B, n, n] edge
scores after selection), ``mask`` (selected edges) and ``weight`` ([B, H, n, n] weights on the
messages); GraphFM has one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.loader import BatchLoader
from ..errors import ConfigError
from ..plots import Panel, figure
from .assemble import dataset_for, load_run


def _rows_of(arrays: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    n = len(next(iter(arrays.values())))
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise ConfigError(f"rows {bad} are outside 0..{n - 1}")
    idx = np.asarray(rows, dtype=np.int64)
    return {k: np.asarray(v)[idx] for k, v in arrays.items()}


def explain_arrays(model, arrays: dict[str, np.ndarray], schema, row_ids: list[int]) -> pd.DataFrame:
    """Long table: one line per (instance, layer, field_i, field_j) with p, weight, selected."""
    if not callable(getattr(model, "explain", None)):
        raise ConfigError(f"model {getattr(model, 'name', type(model).__name__)!r} has no explain(); "
                          "explain works for graphfm")
    model.eval()
    batch = next(iter(BatchLoader(arrays, schema, len(row_ids), shuffle=False)))
    trace = model.explain(batch)
    logits = model(batch).logits.detach().double().numpy()
    names = np.asarray(model.fields())
    B, n = len(row_ids), len(names)
    label = np.asarray(arrays[schema.label], dtype=np.float64) if schema.label in arrays else np.full(B, np.nan)
    parts = []
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for k, t in enumerate(trace, start=1):
        p, mask, w = t["p"].numpy(), t["mask"].numpy(), t["weight"].mean(dim=1).numpy()
        parts.append(pd.DataFrame({
            "row": np.repeat(row_ids, n * n), "label": np.repeat(label, n * n),
            "pctr": np.repeat(1 / (1 + np.exp(-logits)), n * n), "layer": k,
            "field_i": np.tile(names[ii.ravel()], B), "field_j": np.tile(names[jj.ravel()], B),
            "p": p.reshape(-1), "weight": w.reshape(-1), "selected": mask.reshape(-1)}))
    return pd.concat(parts, ignore_index=True)


def heatmaps(table: pd.DataFrame, out: Path, value: str = "p") -> list[Path]:
    """One PNG per instance: a heat map of the selected edges' ``value`` for each layer (Fig. 4)."""
    paths = []
    fields = list(dict.fromkeys(table["field_i"]))
    n = len(fields)
    for row, g in table.groupby("row", sort=False):
        panels = []
        for k in sorted(g["layer"].unique()):
            gk = g[g["layer"] == k]
            m = np.where(gk["selected"].to_numpy(), gk[value].to_numpy(), np.nan).reshape(n, n)
            panels.append(Panel("heatmap", grid=m, row_labels=fields, col_labels=fields, annotate=False,
                                title=f"layer {k} (order {k + 1})"))
        first = g.iloc[0]
        paths.append(figure(out / f"explain_row{row}.png", panels, panel_size=(4.2, 4.0),
                            title=f"row {row}: label {first['label']:.0f}, pCTR {first['pctr']:.3f} "
                                  f"({value} of selected edges)"))
    return paths


def summary_lines(table: pd.DataFrame, top: int = 3) -> list[str]:
    """Per instance and layer, each field's ``top`` strongest selected neighbours."""
    sel = table[table["selected"]].sort_values(["row", "layer", "field_i", "weight"], ascending=[True, True, True, False])
    lines = []
    for (row, layer), g in sel.groupby(["row", "layer"], sort=False):
        first = g.iloc[0]
        lines.append(f"row {row} (label {first['label']:.0f}, pCTR {first['pctr']:.3f}) layer {layer}:")
        for fi, gi in g.groupby("field_i", sort=False):
            nb = ", ".join(f"{r.field_j} (p {r.p:.2f}, w {r.weight:.2f})" for r in gi.head(top).itertuples())
            lines.append(f"  {fi:<14s} {nb}")
    return lines


def explain_run(run: str | Path, out: str | Path, rows: list[int], split: str = "test",
                data_dir: str | None = None, which: str = "best") -> pd.DataFrame:
    cfg, model, schema, _ = load_run(run, which)
    if data_dir:
        cfg.data.data_dir = data_dir
    data = dataset_for(cfg)
    arrays = _rows_of(data.split(split), rows)
    table = explain_arrays(model, arrays, data.schema, rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "explain.csv", index=False)
    heatmaps(table, out)
    return table
