"""GraphFM's analyses as commands: the ablation study (Sec. 5.3, Fig. 2) and the neighbourhood-size
sweep m_2 x m_3 with m_1 = n (Sec. 5.4, Fig. 3). Each writes a markdown + CSV table (and the sweep
a heat-map PNG) under ``out``; every run is reused when its directory already holds metrics.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..embeddings import FeatureSpec
from ..errors import ConfigError
from ..train.run import dataset_for
from .compare import run_variants, summarize

ABLATIONS = {  # label -> model params on top of the base ones (Sec. 5.3)
    "graphfm": {},
    "graphfm(-S)": {"selection": False},
    "graphfm(-I)": {"aggregate": "feature"},
    "graphfm(-M)": {"heads": 1},
    "graphfm(-K1)": {"readout": [1]},
    "graphfm(-K2)": {"readout": [2]},
    "graphfm(-K3)": {"readout": [3]},
}


def _model(cfg: RunConfig) -> tuple[str, dict]:
    """(model name, base params): graphfm or <provider>-graphfm with the config's model params."""
    if cfg.model.name != "graphfm" and not cfg.model.name.endswith("-graphfm"):
        raise ConfigError(f"graphfm-analysis runs graphfm (or <provider>-graphfm), not {cfg.model.name!r}")
    return cfg.model.name, cfg.model.params


def ablation(cfg: RunConfig, seeds: list[int], out: str | Path, log=print) -> list[dict]:
    """GraphFM and its variants -S, -I, -M, -K1..K3 -> ``out/ablation.{md,csv}``."""
    name, base = _model(cfg)
    layers = int(base.get("layers", 3))
    variants = {k: (name, {**base, **v}) for k, v in ABLATIONS.items()
                if not (k.startswith("graphfm(-K") and int(k[-2]) > layers)}
    out = Path(out)
    rows = run_variants(cfg, variants, seeds, out, base="graphfm", log=log)
    summ = summarize(rows, "graphfm")
    _write(out / "ablation", summ, ["model", "runs", "test_auc_mean", "test_auc_std", "test_logloss_mean",
                                     "relaimpr_pct"])
    return summ


def sweep(cfg: RunConfig, seeds: list[int], out: str | Path, m2: list[int], m3: list[int], log=print) -> list[dict]:
    """Three layers, m_1 = n, every (m_2, m_3) of the grid -> ``out/sweep.{md,csv,png}`` (Fig. 3)."""
    name, base = _model(cfg)
    data = dataset_for(cfg)
    n = len(FeatureSpec(data.schema, data.vocab_sizes).features)
    bad = [v for v in m2 + m3 if not 1 <= v <= n]
    if bad:
        raise ConfigError(f"sweep: neighbourhood sizes {bad} are outside 1..{n} (the data set has {n} fields)")
    variants = {f"m=[{n},{a},{b}]": (name, {**base, "layers": 3, "m": [n, a, b]}) for a in m2 for b in m3}
    out = Path(out)
    rows = run_variants(cfg, variants, seeds, out, log=log)
    summ = summarize(rows)
    for s in summ:
        s["m2"], s["m3"] = (int(x) for x in s["model"][3:-1].split(",")[1:])
    _write(out / "sweep", summ, ["model", "m2", "m3", "runs", "test_auc_mean", "test_auc_std", "test_logloss_mean"])
    grid = np.full((len(m2), len(m3)), np.nan)
    for s in summ:
        grid[m2.index(s["m2"]), m3.index(s["m3"])] = s["test_auc_mean"]
    _heatmap(grid, m2, m3, n, out / "sweep.png")
    return summ


def _write(stem: Path, summ: list[dict], cols: list[str]) -> None:
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(summ)
    def fmt(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(s.get(c, "")) for c in cols) + " |" for s in summ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _heatmap(grid: np.ndarray, m2: list[int], m3: list[int], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(m3), 1.0 + 0.7 * len(m2)))
    im = ax.imshow(grid, cmap="viridis")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.4f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(m3)), m3)
    ax.set_yticks(range(len(m2)), m2)
    ax.set_xlabel("m3")
    ax.set_ylabel("m2")
    ax.set_title(f"GraphFM test AUC, m1 = n = {n}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
