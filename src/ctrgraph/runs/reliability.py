"""Reliability diagrams (``ctrgraph evaluate --reliability PNG``): observed click rate against the
mean predicted probability in 15 equal-width bins, per split and per score (the model's, and the
calibrated one when the run has a calibration), with each curve's ECE in its label; the same
numbers as CSV next to the PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.dataset import EncodedDataset
from ..plots import Panel, Series, figure
from ..train.calibration import ece, reliability, sigmoid


def reliability_figure(path: str | Path, data: EncodedDataset, curves: dict[str, list[tuple[str, np.ndarray]]],
                       title: str = "", bins: int = 15) -> Path:
    """One panel per split; ``curves[split]`` = [(label, logits), ...]."""
    path = Path(path)
    panels, rows = [], []
    for split, named in curves.items():
        y = np.asarray(data.split(split)[data.schema.label], dtype=np.float64)
        series = [Series("ideal", [0.0, 1.0], [0.0, 1.0])]
        for label, z in named:
            p = sigmoid(z)
            r = reliability(y, p, bins)
            keep = r["count"] > 0
            e = ece(y, p, bins)
            series.append(Series(f"{label} (ECE {e:.4f})", r["mean_pred"][keep], r["rate"][keep]))
            rows += [{"split": split, "score": label, "bin_lo": lo, "bin_hi": hi, "count": int(n),
                      "mean_pred": m, "rate": q, "ece": e}
                     for lo, hi, n, m, q in zip(r["lo"], r["hi"], r["count"], r["mean_pred"], r["rate"])]
        panels.append(Panel("line", series, title=split, xlabel="mean predicted probability",
                            ylabel="observed positive rate"))
    out = figure(path, panels, title=title, note=f"{bins} equal-width bins of the predicted probability")
    pd.DataFrame(rows).to_csv(path.with_suffix(".csv"), index=False)
    return out
