"""The one plot helper: every PNG ctrgraph writes (study figures, ``explain`` heat maps) is a list of
:class:`Panel` drawn by :func:`figure`, so all figures share one look and one caption rule (the
``note`` under each figure says on what machine and with what departures it was measured).

Panel kinds: ``line`` (series of x/y with optional error bars), ``bar`` (grouped bars, one group
per x label, one bar per series), ``scatter`` (one colour per series), ``heatmap`` (a grid with
row / column labels, NaN cells blank, values written in the cells when ``annotate``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class Series:
    label: str
    x: Sequence
    y: Sequence[float]
    yerr: Sequence[float] | None = None


@dataclass
class Panel:
    kind: str  # line | bar | scatter | heatmap
    series: list[Series] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    logx: bool = False
    legend: bool = True
    grid: np.ndarray | None = None  # heatmap values [rows, cols]
    row_labels: Sequence = ()
    col_labels: Sequence = ()
    annotate: bool = True
    hline: float | None = None
    point_labels: Sequence[str] | None = None  # line: a text at each point of the first series


KINDS = ("line", "bar", "scatter", "heatmap")


def _draw(ax, p: Panel, fig) -> None:
    if p.kind not in KINDS:
        raise ValueError(f"plot kind must be one of {KINDS}, got {p.kind!r}")
    if p.kind == "line":
        for s in p.series:
            ax.errorbar(list(s.x), list(s.y), yerr=None if s.yerr is None else list(s.yerr), marker="o",
                        capsize=3, label=s.label)
        if p.point_labels and p.series:
            for x, y, t in zip(p.series[0].x, p.series[0].y, p.point_labels):
                ax.annotate(t, (x, y), fontsize=7)
    elif p.kind == "bar":
        cats = list(dict.fromkeys(x for s in p.series for x in s.x))
        width = 0.8 / max(1, len(p.series))
        for k, s in enumerate(p.series):
            pos = {x: i for i, x in enumerate(cats)}
            xs = np.array([pos[x] for x in s.x], dtype=float) + (k - (len(p.series) - 1) / 2) * width
            ax.bar(xs, list(s.y), width, yerr=None if s.yerr is None else list(s.yerr), capsize=3, label=s.label)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30 if len(cats) > 4 else 0,
                      ha="right" if len(cats) > 4 else "center", fontsize=7)
        finite = [v for s in p.series for v in s.y if np.isfinite(v)]
        if finite and min(finite) > 0.4:  # AUC-like values: zoom in on the range that differs
            lo, hi = min(finite), max(finite)
            pad = max(0.002, 0.15 * (hi - lo))
            ax.set_ylim(lo - pad, hi + pad)
    elif p.kind == "scatter":
        for s in p.series:
            ax.scatter(list(s.x), list(s.y), s=6, label=s.label)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        g = np.asarray(p.grid, dtype=float)
        im = ax.imshow(np.ma.masked_invalid(g), cmap="viridis")
        if p.annotate and g.size <= 400:
            for (i, j), v in np.ndenumerate(g):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.4f}" if abs(v) < 10 else f"{v:.3g}", ha="center", va="center",
                            fontsize=7, color="w")
        ax.set_xticks(range(len(p.col_labels)), [str(c) for c in p.col_labels],
                      rotation=90 if len(p.col_labels) > 8 else 0, fontsize=7)
        ax.set_yticks(range(len(p.row_labels)), [str(r) for r in p.row_labels], fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if p.hline is not None:
        ax.axhline(p.hline, color="0.3", lw=0.8)
    if p.logx:
        ax.set_xscale("log")
    ax.set_title(p.title, fontsize=9)
    ax.set_xlabel(p.xlabel)
    ax.set_ylabel(p.ylabel)
    if p.legend and p.kind != "heatmap" and len(p.series) > 1:
        ax.legend(fontsize=7, markerscale=2 if p.kind == "scatter" else 1,
                  loc="center left" if p.kind == "scatter" else "best",
                  bbox_to_anchor=(1, 0.5) if p.kind == "scatter" else None)


def figure(path: str | Path, panels: list[Panel], title: str = "", note: str = "",
           panel_size: tuple[float, float] = (5.0, 3.8), dpi: int = 110) -> Path:
    """Draw ``panels`` side by side into ``path`` (PNG) with a title and a caption ``note``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]), squeeze=False)
    for ax, p in zip(axes[0], panels):
        _draw(ax, p, fig)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.4")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
