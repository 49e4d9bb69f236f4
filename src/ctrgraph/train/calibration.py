"""Probability calibration: expected calibration error, reliability tables and post-hoc scaling.

Ads and ranking systems bid on pCTR, so a score must be a probability, not only a ranking. A model
trained with early stopping on AUC is often over-confident (test logloss above a constant
prediction's). Post-hoc scaling fits a monotone map of the logit on the validation split, after
training, and leaves AUC unchanged:

- ``temperature``: p = σ(z / T), one parameter T > 0 (Guo et al., 2017);
- ``platt``: p = σ(a·z + b), a > 0 (Platt, 1999), which also corrects a shifted base rate.

Both are fitted by minimising validation logloss (L-BFGS in float64). :class:`Calibrator` is
stored in the run (``calibration.json``) and applied by ``evaluate``, ``predict`` and ``export``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

METHODS = ("none", "temperature", "platt")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of the predicted probability: count, mean prediction, observed rate."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    n = np.bincount(idx, minlength=bins).astype(np.float64)
    conf = np.bincount(idx, p, minlength=bins) / np.maximum(n, 1)
    rate = np.bincount(idx, y, minlength=bins) / np.maximum(n, 1)
    return {"lo": np.arange(bins) / bins, "hi": np.arange(1, bins + 1) / bins, "count": n,
            "mean_pred": conf, "rate": rate}


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: Σ_b (n_b / N) |rate_b − mean prediction_b| over equal-width bins."""
    r = reliability(labels, probs, bins)
    n = r["count"].sum()
    return float((r["count"] * np.abs(r["rate"] - r["mean_pred"])).sum() / n) if n else float("nan")


@dataclass
class Calibrator:
    """z → a·z + b on the logit (temperature: a = 1/T, b = 0; none: a = 1, b = 0)."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    fitted_on: str = ""
    rows: int = 0

    def apply(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        return z if self.method == "none" else self.a * z + self.b

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        c = cls(**{k: d[k] for k in ("method", "a", "b", "fitted_on", "rows") if k in d})
        if c.method not in METHODS or not (np.isfinite(c.a) and c.a > 0 and np.isfinite(c.b)):
            raise ValueError(f"invalid calibration {d!r}")
        return c

    @classmethod
    def fit(cls, method: str, logits: np.ndarray, labels: np.ndarray, split: str = "valid") -> Calibrator:
        """Minimise the logloss of σ(a·z + b) on (logits, labels); a = exp(s) > 0 keeps AUC."""
        if method not in METHODS:
            raise ValueError(f"calibration method {method!r}; known: {METHODS}")
        if method == "none":
            return cls()
        z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
        y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
        s = torch.zeros((), dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=method == "platt")
        opt = torch.optim.LBFGS([s, b] if method == "platt" else [s], lr=1.0, max_iter=200,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.exp(s) * z + b, y)
            loss.backward()
            return loss

        opt.step(closure)
        return cls(method, float(torch.exp(s.detach())), float(b.detach()) if method == "platt" else 0.0, split,
                   int(z.numel()))
